/** Baselines measured with the openssl CLI in the same run as the figures they anchor. */
import { execFileSync } from 'node:child_process';

export interface OpensslEcdsaRate {
  signPerSecond: number;
  verifyPerSecond: number;
}

/** Single-core ECDSA P-256 sign and verify rates from `openssl speed -mr ecdsap256`. */
export function opensslEcdsaP256(seconds: number): OpensslEcdsaRate {
  const out = execFileSync('openssl', ['speed', '-seconds', String(seconds), '-mr', 'ecdsap256'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  // OpenSSL 3 machine-readable line: +F4:<index>:<bits>:<signs per second>:<verifies per second>
  const line = out.split('\n').find((l) => l.startsWith('+F4:') && l.split(':')[2] === '256');
  if (!line) throw new Error(`could not find the P-256 result in openssl speed output:\n${out}`);
  const [, , , sign, verify] = line.split(':');
  return { signPerSecond: Number(sign), verifyPerSecond: Number(verify) };
}
