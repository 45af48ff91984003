/**
 * `npm run demo:library`: demonstrates the SPIFFE core library end
 * to end, the way the server and agent use it: a trust domain CA, an agent-side key and
 * CSR, a leaf X509-SVID signed from the CSR with the identity taken from a (pretend)
 * registration entry, validation against the trust bundle, and a JWT-SVID round trip.
 * Files land in ./.spindle/demo (key 0600).
 */
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { generateKeyPair, exportPrivateKeyPkcs8 } from '../spiffe/keys.js';
import { parseSpiffeId, parseTrustDomain } from '../spiffe/id.js';
import { certificatesToPem, privateKeyToPem } from '../spiffe/pem.js';
import { Bundle, BundleSet, marshalBundle } from '../spiffe/bundle.js';
import { createCsr, createIssuer, createSelfSignedCa, issueX509SvidFromCsr, verifyX509Svid } from '../spiffe/x509/index.js';
import { mintJwtSvid, validateJwtSvid } from '../spiffe/jwtsvid.js';

const td = parseTrustDomain('example.org');
const entry = { spiffeId: parseSpiffeId('spiffe://example.org/demo/web'), dnsNames: ['web.demo.local'] };
const out = resolve('.spindle', 'demo');
mkdirSync(out, { recursive: true, mode: 0o700 });

// Server side: the CA and the JWT signing key.
const caKeys = await generateKeyPair('ec-p256');
const caDer = createSelfSignedCa({ trustDomain: td, keyPair: caKeys, ttlSeconds: 24 * 3600 });
const issuer = createIssuer([caDer], caKeys.privateKey);
const jwtKeys = await generateKeyPair('ec-p256');
const bundle = new Bundle(td, { x509Authorities: [caDer], jwtAuthorities: new Map([['demo-jwt-key', jwtKeys.publicKey]]), sequence: 1n });
const bundles = new BundleSet([bundle]);

// Agent side: the workload key is made here and never leaves; only a CSR goes to the server.
const workloadKeys = await generateKeyPair('ec-p256');
const csr = createCsr(workloadKeys.privateKey);

// Server: the identity comes from the entry, only the public key from the CSR.
const svid = issueX509SvidFromCsr({ csr, id: entry.spiffeId, dnsNames: entry.dnsNames, ttlSeconds: 3600, issuer });
const verified = verifyX509Svid([svid.der], bundles);

const jwt = await mintJwtSvid({ id: entry.spiffeId, audience: ['demo-audience'], signer: { kid: 'demo-jwt-key', privateKey: jwtKeys.privateKey } });
const jwtValid = await validateJwtSvid(jwt.token, { audience: 'demo-audience', bundles });

writeFileSync(join(out, 'svid.pem'), certificatesToPem([svid.der]));
writeFileSync(join(out, 'svid.key'), privateKeyToPem(exportPrivateKeyPkcs8(workloadKeys.privateKey)), { mode: 0o600 });
chmodSync(join(out, 'svid.key'), 0o600);
writeFileSync(join(out, 'bundle.pem'), bundle.x509AuthoritiesPem());
writeFileSync(join(out, 'bundle.json'), `${marshalBundle(bundle)}\n`);

console.log(`Spindle core library demo (trust domain ${td})

X509-SVID   ${verified.id}
  serial    ${svid.serialHex}
  expires   ${svid.notAfter.toISOString()}
  verified  against the bundle of ${td} (chain of ${verified.chain.length})
JWT-SVID    sub=${jwtValid.id} aud=${jwtValid.audience.join(',')} expires ${jwtValid.expiresAt.toISOString()}

Files in ${out}:
  svid.pem svid.key bundle.pem bundle.json
Check independently:
  openssl verify -CAfile ${join(out, 'bundle.pem')} ${join(out, 'svid.pem')}
  openssl x509 -in ${join(out, 'svid.pem')} -noout -text

For the full system (server + agent + workload), run npm start.`);
