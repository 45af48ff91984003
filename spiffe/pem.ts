/** PEM armour (RFC 7468) for certificates, CSRs and PKCS#8 keys. */
import { ErrorCode, SpiffeError } from './errors.js';

export interface PemBlock {
  label: string;
  der: Buffer;
}

export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

const PEM_RE = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;

/** Every PEM block in a text, in order. Text outside blocks is ignored (as openssl does). */
export function parsePem(text: string): PemBlock[] {
  const blocks: PemBlock[] = [];
  for (const m of text.matchAll(PEM_RE)) {
    const [, begin, body = '', end] = m;
    if (begin !== end) {
      throw new SpiffeError(ErrorCode.PEM_INVALID, 'label_mismatch', `PEM block BEGIN ${begin} ends with END ${end}`);
    }
    const compact = body.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0) {
      throw new SpiffeError(ErrorCode.PEM_INVALID, 'base64', `PEM block ${begin} is not valid base64`);
    }
    const der = Buffer.from(compact, 'base64');
    if (der.toString('base64') !== compact) {
      throw new SpiffeError(ErrorCode.PEM_INVALID, 'base64', `PEM block ${begin} is not canonical base64`);
    }
    blocks.push({ label: begin ?? '', der });
  }
  const begins = text.match(/-----BEGIN /g)?.length ?? 0;
  if (begins !== blocks.length) {
    throw new SpiffeError(ErrorCode.PEM_INVALID, 'truncated', `PEM text has ${begins} BEGIN lines but ${blocks.length} complete blocks (truncated file?)`);
  }
  return blocks;
}

/** DER of every block with the given label; throws if there is none or another label appears. */
export function pemToDerList(text: string, label: string): Buffer[] {
  const blocks = parsePem(text);
  if (blocks.length === 0) throw new SpiffeError(ErrorCode.PEM_INVALID, 'empty', `no PEM ${label} block found`);
  for (const b of blocks) {
    if (b.label !== label) {
      throw new SpiffeError(ErrorCode.PEM_INVALID, 'label', `unexpected PEM block ${b.label}, expected ${label}`);
    }
  }
  return blocks.map((b) => b.der);
}

/** The single block with the given label. */
export function pemToDer(text: string, label: string): Buffer {
  const list = pemToDerList(text, label);
  if (list.length !== 1) throw new SpiffeError(ErrorCode.PEM_INVALID, 'count', `expected one PEM ${label} block, found ${list.length}`);
  return list[0]!;
}

export const certificatesToPem = (ders: readonly Uint8Array[]): string => ders.map((d) => toPem('CERTIFICATE', d)).join('');
export const pemToCertificates = (text: string): Buffer[] => pemToDerList(text, 'CERTIFICATE');
export const privateKeyToPem = (pkcs8: Uint8Array): string => toPem('PRIVATE KEY', pkcs8);
export const pemToPrivateKey = (text: string): Buffer => pemToDer(text, 'PRIVATE KEY');

/** Split concatenated DER certificates (Workload API `x509_svid` / bundle encoding) into single DERs. */
export function splitConcatenatedDer(bytes: Uint8Array): Buffer[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Buffer[] = [];
  let i = 0;
  while (i < buf.length) {
    if (buf[i] !== 0x30) throw new SpiffeError(ErrorCode.X509_CERT_INVALID, 'der', `expected a DER SEQUENCE at offset ${i}`);
    const first = buf[i + 1];
    if (first === undefined) throw new SpiffeError(ErrorCode.X509_CERT_INVALID, 'der', 'truncated DER length');
    let len: number;
    let header: number;
    if (first < 0x80) {
      len = first;
      header = 2;
    } else {
      const n = first & 0x7f;
      if (n === 0 || n > 4 || i + 2 + n > buf.length) throw new SpiffeError(ErrorCode.X509_CERT_INVALID, 'der', `bad DER length at offset ${i}`);
      len = 0;
      for (let k = 0; k < n; k++) len = len * 256 + buf[i + 2 + k]!;
      header = 2 + n;
    }
    const end = i + header + len;
    if (end > buf.length) throw new SpiffeError(ErrorCode.X509_CERT_INVALID, 'der', 'truncated DER certificate');
    out.push(buf.subarray(i, end));
    i = end;
  }
  return out;
}
