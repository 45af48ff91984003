/**
 * BundleService: this trust domain's bundle (from the CA) and federated bundles (datastore).
 * - Federated operations refuse our own trust domain (INVALID_ARGUMENT): the CA owns that one.
 * - Set parses each document (SPIFFE bundle JSON, or PEM CA certificates with `pem`) and stores
 *   the normalised document (marshalBundle). A PEM document carries no sequence: the stored one
 *   becomes the previous sequence + 1.
 * - Delete refuses (FAILED_PRECONDITION) while registration entries federate with the trust
 *   domain: SPIRE's default "restrict" mode.
 */
import { Bundle as SpiffeBundle, MAX_SEQUENCE, marshalBundle, parseBundle, parseX509BundlePem } from '../../../spiffe/bundle.js';
import type { TrustDomain } from '../../../spiffe/id.js';
import type { BundleResult, BundleServiceServer } from '../../../proto/gen/spindle/admin/v1/admin.js';
import type { Bundle } from '../../../proto/gen/spindle/types/v1/types.js';
import type { StoredBundle } from '../../datastore/types.js';
import { parseTrustDomainField } from '../convert.js';
import { ApiError, GrpcStatus, OK_STATUS, invalidArgument, notFound, statusOf, unary } from '../errors.js';
import { MAX_BATCH_SIZE } from './entry.js';
import type { AdminDeps, ApiLogger } from './types.js';

export function ownBundleToProto(b: SpiffeBundle): Bundle {
  return { trustDomain: b.trustDomain, document: Buffer.from(marshalBundle(b), 'utf8'), sequence: b.sequence };
}

function storedToProto(b: StoredBundle): Bundle {
  return { trustDomain: b.trustDomain, document: Buffer.from(b.document, 'utf8'), sequence: b.sequence };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function createBundleService(deps: AdminDeps, log: ApiLogger): BundleServiceServer {
  const { datastore: ds, trustDomain } = deps;
  const nowSeconds = (): number => Math.floor(deps.now().getTime() / 1000);

  function federatedTd(raw: string, field: string): TrustDomain {
    const td = parseTrustDomainField(raw, field);
    if (td === trustDomain) {
      throw invalidArgument(`invalid ${field} "${raw}": this is the server's own trust domain; its bundle is managed by the CA, not set or deleted here`);
    }
    return td;
  }

  async function setOne(b: Bundle, pem: boolean): Promise<TrustDomain> {
    const td = federatedTd(b.trustDomain, 'bundle.trust_domain');
    let parsed: SpiffeBundle;
    if (pem) {
      let text: string;
      try {
        text = utf8.decode(b.document);
      } catch (err) {
        throw invalidArgument('invalid bundle.document: PEM data is not UTF-8', err);
      }
      parsed = parseX509BundlePem(td, text);
      const previous = await ds.getBundle(td);
      const next = (previous?.sequence ?? 0n) + 1n;
      parsed.sequence = next > MAX_SEQUENCE ? MAX_SEQUENCE : next;
    } else {
      parsed = parseBundle(td, b.document);
    }
    await ds.setBundle({ trustDomain: td, document: marshalBundle(parsed), sequence: parsed.sequence }, nowSeconds());
    return td;
  }

  return {
    getBundle: unary(log, 'GetBundle', async () => ownBundleToProto(deps.ca.bundle())),

    listFederatedBundles: unary(log, 'ListFederatedBundles', async () => {
      const all = await ds.listBundles();
      return { bundles: all.filter((b) => b.trustDomain !== trustDomain).map(storedToProto) };
    }),

    getFederatedBundle: unary(log, 'GetFederatedBundle', async (req) => {
      const td = federatedTd(req.trustDomain, 'trust_domain');
      const b = await ds.getBundle(td);
      if (b === undefined) throw notFound(`no federated bundle for trust domain "${td}"`);
      return storedToProto(b);
    }),

    batchSetFederatedBundle: unary(log, 'BatchSetFederatedBundle', async (req) => {
      if (req.bundles.length > MAX_BATCH_SIZE) throw invalidArgument(`too many bundles in one request: at most ${MAX_BATCH_SIZE}`);
      const results: BundleResult[] = [];
      for (const b of req.bundles) {
        try {
          const td = await setOne(b, req.pem);
          log.info({ method: 'BatchSetFederatedBundle', trustDomain: td }, 'federated bundle set');
          results.push({ status: OK_STATUS, trustDomain: td });
        } catch (err) {
          results.push({ status: statusOf(err, log, { method: 'BatchSetFederatedBundle' }), trustDomain: b.trustDomain });
        }
      }
      return { results };
    }),

    batchDeleteFederatedBundle: unary(log, 'BatchDeleteFederatedBundle', async (req) => {
      if (req.trustDomains.length > MAX_BATCH_SIZE) throw invalidArgument(`too many trust domains in one request: at most ${MAX_BATCH_SIZE}`);
      const results: BundleResult[] = [];
      for (const raw of req.trustDomains) {
        try {
          const td = federatedTd(raw, 'trust_domain');
          const users = await ds.countEntries({ byFederatesWith: { trustDomains: [td], match: 'any' } });
          if (users > 0) {
            throw new ApiError(
              GrpcStatus.FAILED_PRECONDITION,
              `cannot delete the bundle of "${td}": ${users} registration ${users === 1 ? 'entry federates' : 'entries federate'} with it`,
            );
          }
          if (!(await ds.deleteBundle(td, nowSeconds()))) throw notFound(`no federated bundle for trust domain "${td}"`);
          log.info({ method: 'BatchDeleteFederatedBundle', trustDomain: td }, 'federated bundle deleted');
          results.push({ status: OK_STATUS, trustDomain: td });
        } catch (err) {
          results.push({ status: statusOf(err, log, { method: 'BatchDeleteFederatedBundle' }), trustDomain: raw });
        }
      }
      return { results };
    }),
  };
}
