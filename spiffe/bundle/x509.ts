/**
 * Bundles of X.509 authorities only, from PEM CERTIFICATE blocks (`-trustBundle bundle.pem`) or
 * from concatenated DER certificates (the Workload API encoding).
 */
import type { TrustDomain } from '../id.js';
import { pemToCertificates, splitConcatenatedDer } from '../pem.js';
import { bundleError } from './errors.js';
import { Bundle } from './model.js';

/** A bundle of X.509 authorities from PEM CERTIFICATE blocks (`-trustBundle bundle.pem`). */
export function parseX509BundlePem(td: TrustDomain, pem: string): Bundle {
  let ders: Buffer[];
  try {
    ders = pemToCertificates(pem);
  } catch (cause) {
    throw bundleError('pem', 'X.509 bundle must be one or more PEM CERTIFICATE blocks', cause);
  }
  // pem.ts skips a block that has no END line (a truncated file); a trust bundle must not
  // silently lose its last CA, so every BEGIN line has to have become a block.
  const begins = pem.match(/-----BEGIN /g)?.length ?? 0;
  if (begins !== ders.length) {
    throw bundleError('pem', `X.509 bundle has ${begins} PEM BEGIN lines but ${ders.length} complete CERTIFICATE blocks (truncated?)`);
  }
  return new Bundle(td, { x509Authorities: ders });
}

/** A bundle of X.509 authorities from concatenated DER certificates (Workload API encoding). */
export function parseX509BundleDer(td: TrustDomain, concatenatedDer: Uint8Array): Bundle {
  let ders: Buffer[];
  try {
    ders = splitConcatenatedDer(concatenatedDer);
  } catch (cause) {
    throw bundleError('der', 'X.509 bundle is not concatenated DER certificates', cause);
  }
  if (ders.length === 0) throw bundleError('der', 'X.509 bundle holds no certificate');
  return new Bundle(td, { x509Authorities: ders });
}
