/**
 * The JWT keys the provider serves, and where they come from.
 *
 * - `jwksOf(bundle)`: the JWKS of a trust domain's JWT authorities: public keys only (built from
 *   SPKI by spiffe/keys.ts, so a private member can never appear), each with `kid`, `alg` from
 *   the key (EC P-256 ES256, P-384 ES384, P-521 ES512, RSA RS256: what the server signs with)
 *   and `use: "sig"` when set_key_use is on. X.509 authorities are never served.
 * - `KeySource`: holds the latest key set and its serialized JWKS; `serverApiSource` polls the
 *   server's admin socket (BundleService.GetBundle, every poll_interval) and `workloadApiSource`
 *   watches the agent's FetchJWTBundles stream (pushed on every change, reconnecting with
 *   backoff). A failed fetch keeps the last good key set.
 */
import { Metadata, credentials, type ServiceError } from '@grpc/grpc-js';
import type { KeyObject } from 'node:crypto';
import { dirname } from 'node:path';
import { checkSafeDirectory, UnsafeDirectoryError } from '../common/safedir.js';
import { BundleServiceClient } from '../proto/gen/spindle/admin/v1/admin.js';
import type { Bundle as BundleMessage } from '../proto/gen/spindle/types/v1/types.js';
import { parseBundle, type Bundle } from '../spiffe/bundle.js';
import { parseTrustDomain, type TrustDomain } from '../spiffe/id.js';
import { publicKeyToJwk, type PublicJwk } from '../spiffe/keys.js';
import { createWorkloadApiClient, type Watch } from '../spiffe/workloadapi/index.js';

export type ServedJwk = PublicJwk & { kid: string; alg?: string; use?: 'sig' };

/** The JWS alg a JWT-SVID signed by `key` carries, or undefined for a key type SPIFFE servers do not sign with. */
export function algOf(key: KeyObject): string | undefined {
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ec') {
    return { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' }[key.asymmetricKeyDetails?.namedCurve ?? ''];
  }
  return undefined;
}

/** The JWKS (`{"keys": [...]}`, sorted by kid) of `bundle`'s JWT authorities. */
export function jwksOf(bundle: Bundle, setKeyUse: boolean): { keys: ServedJwk[] } {
  const keys = [...bundle.jwtAuthorities()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([kid, key]) => {
      const jwk: ServedJwk = { ...publicKeyToJwk(key), kid };
      const alg = algOf(key);
      if (alg !== undefined) jwk.alg = alg;
      if (setKeyUse) jwk.use = 'sig';
      return jwk;
    });
  return { keys };
}

export interface KeySetState {
  /** The serialized JWKS, undefined until the first key set arrived. */
  body: string | undefined;
  kids: string[];
  updatedAt: Date | undefined;
  /** Last successful fetch or push. */
  lastSuccess: Date | undefined;
}

type Log = { info(o: object, m: string): void; warn(o: object, m: string): void; debug(o: object, m: string): void };

export class KeySource {
  readonly #setKeyUse: boolean;
  readonly #log: Log;
  #state: KeySetState = { body: undefined, kids: [], updatedAt: undefined, lastSuccess: undefined };
  #stop: (() => void) | undefined;

  constructor(setKeyUse: boolean, log: Log) {
    this.#setKeyUse = setKeyUse;
    this.#log = log;
  }

  get state(): KeySetState {
    return this.#state;
  }

  /** A new bundle of the trust domain: the JWKS is rebuilt when the kids or keys changed. */
  update(bundle: Bundle): void {
    const jwks = jwksOf(bundle, this.#setKeyUse);
    const body = `${JSON.stringify(jwks, null, 2)}\n`;
    const now = new Date();
    if (body !== this.#state.body) {
      const kids = jwks.keys.map((k) => k.kid);
      this.#log.info({ kids, trust_domain: bundle.trustDomain }, this.#state.body === undefined ? 'JWT keys loaded' : 'JWT keys changed');
      this.#state = { body, kids, updatedAt: now, lastSuccess: now };
    } else this.#state = { ...this.#state, lastSuccess: now };
  }

  failed(err: unknown, what: string): void {
    this.#log.warn({ err: err instanceof Error ? { message: err.message } : String(err) }, `${what} failed; serving the last keys`);
  }

  onStop(fn: () => void): void {
    this.#stop = fn;
  }

  close(): void {
    this.#stop?.();
    this.#stop = undefined;
  }
}

function getBundle(client: BundleServiceClient, timeoutMs: number): Promise<BundleMessage> {
  return new Promise((resolve, reject) => {
    client.getBundle({}, new Metadata(), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, res?: BundleMessage) => (err || !res ? reject(err ?? new Error('empty response')) : resolve(res)));
  });
}

/**
 * Polls the server's admin socket every `pollIntervalSeconds`; the first fetch is awaited (its
 * failure only logged). The socket's directory is checked first, as the admin CLI checks it
 * (common/safedir.ts): whoever could put their own server there could make the provider publish
 * their keys, and relying parties accept their tokens; an unsafe directory stops the start.
 */
export async function serverApiSource(source: KeySource, socketPath: string, pollIntervalSeconds: number): Promise<void> {
  try {
    checkSafeDirectory(dirname(socketPath), 'server_api admin socket directory');
  } catch (err) {
    if (err instanceof UnsafeDirectoryError) throw new Error(`refusing to read JWT keys from ${socketPath}: ${err.message}`);
    // An fs error (a directory we may not enter) shows up as a failed fetch below.
  }
  const client = new BundleServiceClient(`unix:${socketPath}`, credentials.createInsecure());
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const poll = async (): Promise<void> => {
    try {
      const res = await getBundle(client, Math.min(10_000, pollIntervalSeconds * 1000));
      const td: TrustDomain = parseTrustDomain(res.trustDomain);
      source.update(parseBundle(td, res.document));
    } catch (err) {
      source.failed(err, `fetching the bundle from the server at ${socketPath}`);
    }
    if (!stopped) timer = setTimeout(() => void poll(), pollIntervalSeconds * 1000);
  };
  source.onStop(() => {
    stopped = true;
    clearTimeout(timer);
    client.close();
  });
  await poll();
}

/** Watches FetchJWTBundles on the agent's socket; the first bundle is awaited for at most `firstWaitMs`. */
export async function workloadApiSource(source: KeySource, socketPath: string, trustDomain: TrustDomain, firstWaitMs = 10_000): Promise<void> {
  const client = createWorkloadApiClient({ address: `unix://${socketPath}`, backoff: { initialMs: 500, maxMs: 10_000 } });
  let first: () => void = () => undefined;
  const firstSeen = new Promise<void>((resolve) => (first = resolve));
  const watch: Watch = client.watchJwtBundles(
    (bundles) => {
      const bundle = bundles.get(trustDomain);
      if (bundle === undefined) source.failed(new Error(`the Workload API sent no bundle for trust domain ${trustDomain}`), 'FetchJWTBundles');
      else source.update(bundle);
      first();
    },
    (err, info) => {
      source.failed(err, info.final ? 'FetchJWTBundles (not retried)' : `FetchJWTBundles (retrying in ${info.retryInMs ?? 0} ms)`);
      first();
    },
    // Keep watching through every error: the agent may restart, or the entry be created later.
    { fatalCodes: [] },
  );
  source.onStop(() => {
    watch.close();
    client.close();
  });
  let t: NodeJS.Timeout | undefined;
  await Promise.race([firstSeen, new Promise<void>((r) => (t = setTimeout(r, firstWaitMs)))]);
  clearTimeout(t);
}
