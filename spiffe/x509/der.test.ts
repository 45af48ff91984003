import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as asn1js from 'asn1js';
import * as der from './der.js';

const hex = (b: Uint8Array | ArrayBuffer): string => Buffer.from(b instanceof ArrayBuffer ? new Uint8Array(b) : b).toString('hex');
const ber = (v: { toBER(): ArrayBuffer }): string => hex(v.toBER());

describe('der writer matches asn1js', () => {
  it('encodes lengths 0, 1, 127, 128, 255, 256, 65535, 65536 like asn1js', () => {
    for (const n of [0, 1, 127, 128, 255, 256, 65535, 65536]) {
      const bytes = Buffer.alloc(n, 0xab);
      assert.equal(hex(der.octetString(bytes)), ber(new asn1js.OctetString({ valueHex: bytes })), `length ${n}`);
    }
    assert.equal(hex(der.encodeLength(127)), '7f');
    assert.equal(hex(der.encodeLength(128)), '8180');
    assert.equal(hex(der.encodeLength(255)), '81ff');
    assert.equal(hex(der.encodeLength(256)), '820100');
    assert.equal(hex(der.encodeLength(65536)), '83010000');
    assert.throws(() => der.encodeLength(-1), RangeError);
  });

  it('encodes INTEGERs from unsigned bytes with sign padding', () => {
    const cases: [string, bigint][] = [
      ['', 0n],
      ['00', 0n],
      ['01', 1n],
      ['7f', 127n],
      ['80', 128n],
      ['ff', 255n],
      ['0100', 256n],
      ['000080', 128n],
      ['8000000000000000', 0x8000000000000000n],
      ['ffffffffffffffffffffffffffffffff', (1n << 128n) - 1n],
      ['40' + '11'.repeat(15), BigInt('0x40' + '11'.repeat(15))],
    ];
    for (const [input, value] of cases) {
      assert.equal(hex(der.integer(Buffer.from(input, 'hex'))), ber(asn1js.Integer.fromBigInt(value)), `integer ${input}`);
    }
    assert.equal(hex(der.integer(Buffer.from('80', 'hex'))), '02020080');
  });

  it('encodes small signed ints', () => {
    for (const n of [0, 1, 2, 127, 128, 255, 256, 65535, -1, -128, -129, -256, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
      assert.equal(hex(der.smallInt(n)), ber(asn1js.Integer.fromBigInt(BigInt(n))), `smallInt ${n}`);
    }
    assert.throws(() => der.smallInt(1.5), RangeError);
  });

  it('encodes OIDs (and caches them)', () => {
    for (const o of ['1.2.840.10045.4.3.2', '1.2.840.113549.1.1.11', '2.5.29.17', '1.3.6.1.5.5.7.3.2', '2.999.3', '0.9.2342.19200300.100.1.1', '1.3.132.0.34', '2.5.4.3']) {
      assert.equal(hex(der.oid(o)), ber(new asn1js.ObjectIdentifier({ value: o })), o);
      assert.equal(der.oid(o), der.oid(o), 'cached instance');
      assert.equal(der.decodeOid(der.oid(o).subarray(2)), o);
    }
    for (const bad of ['', '1', '3.1', '1.40', '1.2.a', '1..2', '1.02']) assert.throws(() => der.oid(bad), RangeError, bad);
  });

  it('encodes BIT STRINGs and named bit lists', () => {
    assert.equal(hex(der.bitString(Buffer.from('0102', 'hex'))), ber(new asn1js.BitString({ valueHex: Buffer.from('0102', 'hex') })));
    assert.equal(hex(der.bitString(Buffer.from('a0', 'hex'), 5)), ber(new asn1js.BitString({ valueHex: Buffer.from('a0', 'hex'), unusedBits: 5 })));
    assert.equal(hex(der.bitString(Buffer.alloc(0))), '030100');
    assert.throws(() => der.bitString(Buffer.from('00', 'hex'), 8), RangeError);
    // keyUsage encodings as Go/OpenSSL write them
    assert.equal(hex(der.namedBits([0])), '03020780'); // digitalSignature
    assert.equal(hex(der.namedBits([0, 4])), '03020388'); // digitalSignature, keyAgreement
    assert.equal(hex(der.namedBits([0, 2])), '030205a0'); // digitalSignature, keyEncipherment
    assert.equal(hex(der.namedBits([5, 6])), '03020106'); // keyCertSign, cRLSign
    assert.equal(hex(der.namedBits([0, 5, 6])), '03020186');
    assert.equal(hex(der.namedBits([8])), '0303070080'); // decipherOnly
    assert.equal(hex(der.namedBits([])), '030100');
  });

  it('encodes BOOLEAN, NULL, strings', () => {
    assert.equal(hex(der.boolean(true)), ber(new asn1js.Boolean({ value: true })));
    assert.equal(hex(der.boolean(false)), ber(new asn1js.Boolean({ value: false })));
    assert.equal(hex(der.nullValue()), ber(new asn1js.Null()));
    assert.equal(hex(der.ia5String('spiffe://example.org/w')), ber(new asn1js.IA5String({ value: 'spiffe://example.org/w' })));
    assert.equal(hex(der.utf8String('Spindle ✓')), ber(new asn1js.Utf8String({ value: 'Spindle ✓' })));
    assert.equal(hex(der.printableString('US')), ber(new asn1js.PrintableString({ value: 'US' })));
    assert.throws(() => der.ia5String('é'), RangeError);
    assert.throws(() => der.printableString('a@b'), RangeError);
    assert.throws(() => der.utf8String('\ud800'), RangeError);
  });

  it('encodes times per RFC 5280: UTCTime through 2049, GeneralizedTime from 2050', () => {
    const cases = [
      Date.UTC(1950, 0, 1, 0, 0, 0),
      Date.UTC(1999, 11, 31, 23, 59, 59),
      Date.UTC(2000, 0, 1, 0, 0, 0),
      Date.UTC(2026, 5, 7, 8, 9, 10),
      Date.UTC(2049, 11, 31, 23, 59, 59),
    ];
    for (const t of cases) {
      const d = new Date(t);
      assert.equal(hex(der.time(d)), ber(new asn1js.UTCTime({ valueDate: d })), d.toISOString());
      assert.equal(der.time(d)[0], 0x17);
    }
    for (const t of [Date.UTC(2050, 0, 1, 0, 0, 0), Date.UTC(9999, 11, 31, 23, 59, 59), Date.UTC(1949, 11, 31, 23, 59, 59)]) {
      const d = new Date(t);
      assert.equal(hex(der.time(d)), ber(new asn1js.GeneralizedTime({ valueDate: d })), d.toISOString());
      assert.equal(der.time(d)[0], 0x18);
    }
    assert.equal(der.time(new Date(Date.UTC(2050, 0, 1))).subarray(2).toString(), '20500101000000Z');
    assert.equal(der.time(new Date(Date.UTC(2049, 0, 1))).subarray(2).toString(), '490101000000Z');
    // fractions of a second are dropped, never encoded
    assert.equal(der.time(new Date(Date.UTC(2030, 0, 1, 0, 0, 0, 999))).subarray(2).toString(), '300101000000Z');
    assert.throws(() => der.utcTime(new Date(Date.UTC(2050, 0, 1))), RangeError);
    assert.throws(() => der.time(new Date(NaN)), RangeError);
  });

  it('encodes SEQUENCE, sorted SET OF, explicit and implicit context tags', () => {
    const a = der.smallInt(5);
    const b = der.smallInt(1);
    assert.equal(hex(der.sequence(a, b)), ber(new asn1js.Sequence({ value: [new asn1js.Integer({ value: 5 }), new asn1js.Integer({ value: 1 })] })));
    assert.equal(hex(der.sequence()), '3000');
    // DER SET OF: sorted by encoding
    assert.equal(hex(der.set(a, b)), ber(new asn1js.Set({ value: [new asn1js.Integer({ value: 1 }), new asn1js.Integer({ value: 5 })] })));
    // shorter encoding padded with zeros when comparing: 0400 (len 0) < 040100
    assert.equal(hex(der.set(der.octetString(Buffer.from([0])), der.octetString(Buffer.alloc(0)))), '310504000401' + '00');
    assert.equal(hex(der.explicit(3, der.sequence())), ber(new asn1js.Constructed({ idBlock: { tagClass: 3, tagNumber: 3 }, value: [new asn1js.Sequence()] })));
    assert.equal(hex(der.explicit(0, der.smallInt(2))), 'a003020102');
    assert.equal(hex(der.implicit(6, der.ia5String('abc'))), ber(new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: 6 }, valueHex: Buffer.from('abc') })));
    assert.equal(hex(der.implicit(0, der.sequence(a))), 'a003020105');
    assert.equal(hex(der.contextPrimitive(2, Buffer.from('x.org'))), '8205782e6f7267');
    assert.throws(() => der.explicit(31, a), RangeError);
    assert.equal(hex(der.concat(a, b)), '020105020101');
  });
});

describe('der reader', () => {
  it('reads nested values and offsets', () => {
    const buf = der.sequence(der.smallInt(7), der.octetString(Buffer.alloc(300, 1)));
    const root = der.readRoot(buf, der.Tag.SEQUENCE);
    const [i, o] = der.readChildren(buf, root);
    assert.equal(i!.tag, der.Tag.INTEGER);
    assert.deepEqual(Buffer.from(der.contentOf(buf, i!)), Buffer.from([7]));
    assert.equal(o!.end - o!.contentStart, 300);
    assert.equal(o!.contentStart - o!.start, 4);
  });

  it('rejects BER-only and malformed encodings', () => {
    const bad: [string, string][] = [
      ['3080020100' + '0000', 'indefinite length'],
      ['30810302 0100'.replace(' ', ''), 'non-minimal long form for < 128'],
      ['3082000302 0100'.replace(' ', ''), 'leading zero length byte'],
      ['300302010000', 'trailing byte'],
      ['30050201', 'truncated'],
      ['1f0100', 'high tag number'],
      ['30', 'too short'],
      ['3085ffffffffff', 'length of length too large'],
    ];
    for (const [h, why] of bad) {
      assert.throws(() => der.readRoot(Buffer.from(h, 'hex')), der.DerError, why);
    }
    // child overruns its parent
    assert.throws(() => der.readChildren(Buffer.from('3003020201', 'hex'), der.readTlv(Buffer.from('3003020201', 'hex'), 0, 5)), der.DerError);
    assert.throws(() => der.readRoot(Buffer.from('020101', 'hex'), der.Tag.SEQUENCE), /expected tag/);
  });

  it('decodes INTEGER magnitudes and BIT STRING contents strictly', () => {
    const buf = der.integer(Buffer.from('80', 'hex'));
    assert.deepEqual(Buffer.from(der.unsignedIntegerBytes(buf, der.readRoot(buf))), Buffer.from('80', 'hex'));
    for (const h of ['0201ff', '02020001', '0200']) {
      const b = Buffer.from(h, 'hex');
      assert.throws(() => der.unsignedIntegerBytes(b, der.readRoot(b)), der.DerError, h);
    }
    const bs = der.bitString(Buffer.from('a0', 'hex'), 5);
    assert.throws(() => der.bitStringBytes(bs, der.readRoot(bs)), der.DerError);
    assert.throws(() => der.decodeOid(Buffer.from('8001', 'hex')), der.DerError);
    assert.throws(() => der.decodeOid(Buffer.from('2a86', 'hex')), der.DerError);
  });
});
