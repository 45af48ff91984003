import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode, SpiffeError, isSpiffeError } from './errors.js';
import {
  certificatesToPem,
  parsePem,
  pemToCertificates,
  pemToDer,
  pemToDerList,
  pemToPrivateKey,
  privateKeyToPem,
  splitConcatenatedDer,
  toPem,
} from './pem.js';

let dir: string;
/** Three real self-signed certificates made by openssl (EC P-256, EC P-384, RSA 2048). */
const certs: Buffer[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'spindle-pem-test-'));
  const keyArgs = [
    ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'],
    ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'],
    ['-newkey', 'rsa:2048'],
  ];
  keyArgs.forEach((args, i) => {
    const out = join(dir, `ca${i}.der`);
    execFileSync('openssl', ['req', '-x509', ...args, '-nodes', '-keyout', join(dir, `ca${i}.key`), '-out', out, '-outform', 'DER',
      '-subj', `/CN=Spindle PEM test CA ${i}`, '-days', '1'], { stdio: 'pipe' });
    certs.push(readFileSync(out));
  });
});

after(() => rmSync(dir, { recursive: true, force: true }));

const pemErr = (reason: string) => (err: unknown) => isSpiffeError(err, 'ERR_PEM_INVALID') && err.reason === reason;
const derErr = (err: unknown) => isSpiffeError(err, 'ERR_X509_CERT_INVALID') && err.reason === 'der';

test('toPem / parsePem round trip for many sizes; lines are 64 chars', () => {
  for (const size of [1, 2, 3, 47, 48, 49, 64, 100, 1000]) {
    const der = randomBytes(size);
    const pem = toPem('CERTIFICATE', der);
    const lines = pem.trimEnd().split('\n');
    assert.equal(lines[0], '-----BEGIN CERTIFICATE-----');
    assert.equal(lines.at(-1), '-----END CERTIFICATE-----');
    const body = lines.slice(1, -1);
    body.slice(0, -1).forEach((l) => assert.equal(l.length, 64, `size ${size}`));
    assert.ok(body.at(-1)!.length >= 1 && body.at(-1)!.length <= 64);
    assert.ok(pem.endsWith('\n'));
    const blocks = parsePem(pem);
    assert.equal(blocks.length, 1);
    assert.equal(blocks[0]!.label, 'CERTIFICATE');
    assert.deepEqual(blocks[0]!.der, der);
  }
});

test('toPem accepts a Uint8Array view (offset respected)', () => {
  const buf = Buffer.from('xxhelloyy');
  const view = new Uint8Array(buf.buffer, buf.byteOffset + 2, 5);
  assert.deepEqual(pemToDer(toPem('PRIVATE KEY', view), 'PRIVATE KEY'), Buffer.from('hello'));
});

test('PEM from openssl parses to the same DER', () => {
  const pem = execFileSync('openssl', ['x509', '-inform', 'DER', '-in', join(dir, 'ca0.der'), '-outform', 'PEM']).toString();
  assert.deepEqual(pemToCertificates(pem), [certs[0]]);
  assert.equal(toPem('CERTIFICATE', certs[0]!), pem, 'our armour is byte-identical to openssl');
});

test('multiple blocks in order; text around blocks ignored; CRLF tolerated', () => {
  const text = `Bag Attributes: ignored\n${certificatesToPem(certs)}trailing words\n`;
  assert.deepEqual(pemToCertificates(text), certs);
  assert.deepEqual(pemToCertificates(text.replace(/\n/g, '\r\n')), certs);
  const mixed = toPem('CERTIFICATE', certs[0]!) + toPem('PRIVATE KEY', Buffer.from('k'));
  assert.deepEqual(parsePem(mixed).map((b) => b.label), ['CERTIFICATE', 'PRIVATE KEY']);
});

test('pemToDerList / pemToDer / pemToCertificates errors', () => {
  const table: Array<[string, () => unknown, string]> = [
    ['no block', () => pemToCertificates('hello'), 'empty'],
    ['empty text', () => pemToDerList('', 'CERTIFICATE'), 'empty'],
    ['other label', () => pemToCertificates(toPem('PRIVATE KEY', Buffer.from('k'))), 'label'],
    ['one bad label among good', () => pemToCertificates(certificatesToPem(certs) + toPem('PRIVATE KEY', Buffer.from('k'))), 'label'],
    ['two keys for pemToDer', () => pemToPrivateKey(privateKeyToPem(Buffer.from('a')) + privateKeyToPem(Buffer.from('b'))), 'count'],
    ['no key for pemToDer', () => pemToDer('', 'PRIVATE KEY'), 'empty'],
    ['label mismatch', () => parsePem('-----BEGIN CERTIFICATE-----\nQQ==\n-----END PRIVATE KEY-----\n'), 'label_mismatch'],
    ['bad base64 char', () => parsePem('-----BEGIN CERTIFICATE-----\nQ*==\n-----END CERTIFICATE-----\n'), 'base64'],
    ['bad base64 length', () => parsePem('-----BEGIN CERTIFICATE-----\nQQQ\n-----END CERTIFICATE-----\n'), 'base64'],
    ['padding in the middle', () => parsePem('-----BEGIN CERTIFICATE-----\nQQ==QQ==\n-----END CERTIFICATE-----\n'), 'base64'],
    ['base64url alphabet', () => parsePem('-----BEGIN CERTIFICATE-----\nQ-_A\n-----END CERTIFICATE-----\n'), 'base64'],
  ];
  for (const [name, fn, reason] of table) assert.throws(fn, pemErr(reason), name);
  assert.deepEqual(pemToPrivateKey(privateKeyToPem(Buffer.from('key'))), Buffer.from('key'));
});

test('splitConcatenatedDer on 1 and 3 real certificates', () => {
  assert.deepEqual(splitConcatenatedDer(certs[0]!), [certs[0]]);
  const three = splitConcatenatedDer(Buffer.concat(certs));
  assert.deepEqual(three, certs);
  for (const [i, der] of three.entries()) assert.equal(new X509Certificate(der).subject, `CN=Spindle PEM test CA ${i}`);
  // A view into a larger buffer.
  const padded = Buffer.concat([Buffer.from([9, 9]), ...certs]);
  assert.deepEqual(splitConcatenatedDer(new Uint8Array(padded.buffer, padded.byteOffset + 2, padded.length - 2)), certs);
  assert.deepEqual(splitConcatenatedDer(Buffer.alloc(0)), []);
});

test('splitConcatenatedDer rejects truncated and non-DER input', () => {
  const all = Buffer.concat(certs);
  const table: Array<[string, Buffer]> = [
    ['one byte short', all.subarray(0, all.length - 1)],
    ['cut in the second cert', all.subarray(0, certs[0]!.length + 10)],
    ['only a tag', Buffer.from([0x30])],
    ['cut inside the length', certs[0]!.subarray(0, 3)],
    ['trailing garbage', Buffer.concat([certs[0]!, Buffer.from([0x01])])],
    ['indefinite length', Buffer.from([0x30, 0x80, 0x00, 0x00])],
    ['PEM text instead of DER', Buffer.from(toPem('CERTIFICATE', certs[0]!))],
  ];
  for (const [name, bytes] of table) assert.throws(() => splitConcatenatedDer(bytes), derErr, name);
});

test('a truncated last PEM block (BEGIN without END) is an error, not silently dropped', () => {
  const pem = certificatesToPem(certs);
  const cut = pem.slice(0, pem.lastIndexOf('-----END'));
  assert.throws(() => pemToCertificates(cut), (e: unknown) => e instanceof SpiffeError && e.code === ErrorCode.PEM_INVALID && e.reason === 'truncated');
});

test('non-canonical base64 in a PEM block is refused', () => {
  assert.throws(
    () => parsePem('-----BEGIN CERTIFICATE-----\nQR==\n-----END CERTIFICATE-----\n'),
    (e: unknown) => e instanceof SpiffeError && e.reason === 'base64',
  );
  assert.equal(parsePem('-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n')[0]!.der.toString(), 'A');
});
