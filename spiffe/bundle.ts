/**
 * SPIFFE trust bundles (JWKS documents) and the Workload API bundle encodings: the public entry
 * point. The code lives in spiffe/bundle/, one job per file:
 *   model.ts      `Bundle`: one trust domain's authorities, sequence and refresh hint
 *   authority.ts  admitting one authority (DER CA certificate or JWT key) and its public JWK
 *   document.ts   the SPIFFE bundle document and the JWKS: marshal and strict parse
 *   rawjson.ts    raw text of a top-level JSON member (`spiffe_sequence` with all its digits)
 *   x509.ts       X.509-only bundles from PEM blocks or concatenated DER
 *   set.ts        `BundleSet`: bundles keyed by trust domain, Workload API bundle maps
 *   errors.ts     `ERR_BUNDLE_INVALID` and its reasons
 *
 * Contract:
 * - A `Bundle` is the trust material of exactly ONE trust domain: X.509 authorities (DER CA
 *   certificates, insertion order kept, no duplicates) and JWT authorities (kid -> public key,
 *   kid unique). A bundle document does not name its trust domain, so the caller always supplies
 *   it; bundles of different trust domains are never merged (`BundleSet` keys by trust domain).
 * - `Bundle` is a plain value: adding or removing authorities does NOT bump `sequence`; the owner
 *   of the bundle (the server CA) does that.
 * - Only public keys are stored (a private KeyObject given to `addJwtAuthority` is reduced to its
 *   public half). Keys are EC P-256/P-384/P-521 or RSA: whatever `keys.ts` can express as a JWK,
 *   so marshalling never fails.
 * - `marshalBundle` output is deterministic: X.509 authorities in insertion order, then JWT
 *   authorities sorted by kid, members in a fixed order; `spiffe_sequence` is written with every
 *   digit of the 64-bit value.
 * - `parseBundle` is strict about structure and tolerant about extensions: keys with an unknown
 *   `use` or `kty` are ignored (spec), keys without `use` are rejected (SPIRE does too).
 *   `spiffe_sequence` is read from the raw text, so values above 2^53 keep every digit.
 *
 * Errors: `SpiffeError` code `ERR_BUNDLE_INVALID`, reasons:
 *   json          not UTF-8 / not JSON / not a JSON object
 *   keys          `keys` missing or not an array, or an entry that is not an object
 *   missing_use   a key without `use`
 *   jwk           a bad `use`/`kty` type, bad or private public-key parameters, unsupported key
 *   x5c           x509-svid key: `x5c` not exactly one standard-base64 string, not a certificate,
 *                 or a certificate whose key differs from the JWK parameters
 *   kid           jwt-svid key: `kid` missing, not a string or empty; also `addJwtAuthority`
 *   duplicate_kid two JWT authorities with one kid
 *   sequence      `spiffe_sequence` not an integer in [0, 2^64-1]
 *   refresh_hint  `spiffe_refresh_hint` not a non-negative integer (seconds)
 *   certificate   an X.509 authority that is not one DER certificate (PEM/DER/`addX509Authority`)
 *   pem           PEM bundle text without CERTIFICATE blocks or with other blocks
 *   der           concatenated DER that does not split into certificates, or is empty
 */
export type { BundleErrorReason } from './bundle/errors.js';
export { Bundle, MAX_SEQUENCE, type BundleInit } from './bundle/model.js';
export { USE_JWT_SVID, USE_X509_SVID, marshalBundle, marshalJwtBundle, parseBundle, parseJwtBundleJwks } from './bundle/document.js';
export { rawTopLevelMember } from './bundle/rawjson.js';
export { parseX509BundleDer, parseX509BundlePem } from './bundle/x509.js';
export { BundleSet } from './bundle/set.js';
