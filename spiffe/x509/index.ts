/**
 * Spindle's X.509 module: every certificate and CSR the project makes,
 * parses or validates goes through these intent-level functions. SHA-256 (SHA-384 for P-384
 * CAs) always explicit; never SHA-1 signatures.
 */
export { createIssuer, type Issuer } from './issuer.js';
export {
  BACKDATE_SECONDS,
  DEFAULT_CA_SUBJECT,
  createSelfSignedCa,
  issueIntermediateCa,
  issueX509Svid,
  issueX509SvidFromCsr,
  type CreateSelfSignedCaOptions,
  type IssueIntermediateCaOptions,
  type IssueX509SvidFromCsrOptions,
  type IssueX509SvidOptions,
  type IssuedCertificate,
} from './issue.js';
export { MAX_CSR_BYTES, createCsr, parseCsr, type CreateCsrOptions, type ParsedCsr } from './csr.js';
export {
  certificateMatchesKey,
  parseCertificate,
  type CertificateExtension,
  type CertificateInfo,
  type KeyUsage,
  type NameConstraints,
  type NameSubtree,
} from './parse.js';
export {
  MAX_CHAIN_CERTIFICATES,
  MAX_PATH_CERTIFICATES,
  MAX_SIGNATURE_CHECKS,
  checkX509SvidLeaf,
  parseX509Svid,
  verifyX509Svid,
  type VerifiedX509Svid,
  type VerifyX509SvidOptions,
  type X509Svid,
} from './verify.js';
export { MAX_DNS_NAME_LENGTH, dnsNameIssue, dnsNameProblem, type DnsNameIssue, type KeyUsageName } from './extensions.js';
export { type NameAttribute, type X509Subject } from './name.js';
export { inspectSpki, type SpkiInfo } from './spki.js';
