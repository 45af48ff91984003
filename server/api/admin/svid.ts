/**
 * SVIDService: admin minting (`x509 mint`, `jwt mint`).
 * - The SPIFFE ID must be a workload ID of this trust domain: non-root path, outside the
 *   reserved `/spire` namespace (an admin must not mint the server's or an agent's identity).
 * - X.509: the identity and DNS names come from the request fields, never from the CSR; the CA
 *   checks the CSR's own signature and uses only its public key. The key stays with the caller.
 * - TTL 0 means the CA's default; negative TTLs are refused. JWT audience is required.
 */
import type { SVIDServiceServer } from '../../../proto/gen/spindle/admin/v1/admin.js';
import { dnsNameProblem } from '../../../spiffe/x509/index.js';
import { parseWorkloadIdField } from '../convert.js';
import { invalidArgument, unary } from '../errors.js';
import type { AdminDeps, ApiLogger } from './types.js';

const MAX_DNS_NAMES = 256;
const MAX_AUDIENCES = 64;

function ttlOf(ttl: number): number | undefined {
  if (!Number.isInteger(ttl) || ttl < 0) throw invalidArgument(`invalid ttl ${ttl}: must be a positive number of seconds (0: server default)`);
  return ttl === 0 ? undefined : ttl;
}

export function createSvidService(deps: AdminDeps, log: ApiLogger): SVIDServiceServer {
  const { ca, trustDomain } = deps;
  return {
    mintX509Svid: unary(log, 'MintX509SVID', async (req) => {
      const id = parseWorkloadIdField(req.spiffeId, 'spiffe_id', trustDomain);
      if (req.csr.length === 0) throw invalidArgument('missing csr: a PKCS#10 certificate signing request is required');
      if (req.dnsNames.length > MAX_DNS_NAMES) throw invalidArgument(`too many dns_names: at most ${MAX_DNS_NAMES}`);
      req.dnsNames.forEach((name, i) => {
        const problem = dnsNameProblem(name);
        if (problem !== undefined) throw invalidArgument(`invalid dns_names[${i}] ${JSON.stringify(name)}: ${problem}`);
      });
      const ttlSeconds = ttlOf(req.ttl);
      const signed = ca.signX509Svid({ id, csr: req.csr, dnsNames: req.dnsNames, ...(ttlSeconds === undefined ? {} : { ttlSeconds }) });
      const expiresAt = Math.floor(signed.notAfter.getTime() / 1000);
      log.info({ method: 'MintX509SVID', spiffeId: id, serial: signed.serialHex, expiresAt }, 'X509-SVID minted');
      return {
        svid: { spiffeId: id, certChain: signed.chain, expiresAt: BigInt(expiresAt), serial: signed.serialHex },
        bundle: ca.bundle().x509Authorities(),
      };
    }),

    mintJwtsvid: unary(log, 'MintJWTSVID', async (req) => {
      const id = parseWorkloadIdField(req.spiffeId, 'spiffe_id', trustDomain);
      if (req.audience.length === 0) throw invalidArgument('missing audience: at least one audience is required');
      if (req.audience.length > MAX_AUDIENCES) throw invalidArgument(`too many audiences: at most ${MAX_AUDIENCES}`);
      req.audience.forEach((a, i) => {
        if (a === '') throw invalidArgument(`invalid audience[${i}]: must not be empty`);
      });
      const ttlSeconds = ttlOf(req.ttl);
      const signed = await ca.mintJwtSvid({ id, audience: req.audience, ...(ttlSeconds === undefined ? {} : { ttlSeconds }) });
      const expiresAt = Math.floor(signed.expiresAt.getTime() / 1000);
      log.info({ method: 'MintJWTSVID', spiffeId: id, audience: req.audience, expiresAt }, 'JWT-SVID minted');
      return {
        svid: {
          token: signed.token,
          spiffeId: id,
          expiresAt: BigInt(expiresAt),
          issuedAt: BigInt(Math.floor(signed.issuedAt.getTime() / 1000)),
        },
      };
    }),
  };
}
