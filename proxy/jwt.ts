/**
 * Bearer JWT-SVIDs on HTTP listeners. When a listener's decider asks for JWTs
 * (`jwtAudiences(listener)` non-empty), the request's `Authorization: Bearer <token>` is
 * validated against the JWT bundles from the Workload API (signature by an authority of the
 * subject's trust domain, expiry, one of the listener's audiences, and `iss` when the decider
 * names one), and the result goes into the request's facts: `jwt` when it validated, `jwtError`
 * (a short reason) when a token was there but did not validate; neither without a token. The
 * token is forwarded to the service unchanged.
 *
 * The JWT bundles are watched (FetchJWTBundles) from the first request that needs them; until the
 * first bundles arrive, a token is reported as not validated ("no JWT bundles yet").
 */
import type { BundleSet } from '../spiffe/bundle.js';
import { validateJwtSvid, type ValidatedJwtSvid } from '../spiffe/jwtsvid.js';
import { createWorkloadApiClient, type Watch, type WorkloadApiClient } from '../spiffe/workloadapi/client.js';
import type { RequestFacts } from './decision.js';

/** The JWT bundles, watched on first use. */
export class JwtBundleWatch {
  #bundles: BundleSet | undefined;
  #client: WorkloadApiClient | undefined;
  #watch: Watch | undefined;
  #closed = false;

  constructor(
    readonly socketPath: string,
    readonly log: { warn(o: object, m: string): void; info(o: object, m: string): void },
  ) {}

  /** The current bundles (starting the watch on the first call); undefined until they arrive. */
  bundles(): BundleSet | undefined {
    if (this.#watch === undefined && !this.#closed) {
      const address = this.socketPath.startsWith('/') ? `unix://${this.socketPath}` : this.socketPath;
      this.#client = createWorkloadApiClient({ address });
      this.#watch = this.#client.watchJwtBundles(
        (b) => {
          if (this.#bundles === undefined) this.log.info({}, 'JWT bundles received');
          this.#bundles = b;
        },
        (err) => this.log.warn({ err: err.message }, 'JWT bundle watch error (retrying)'),
      );
    }
    return this.#bundles;
  }

  close(): void {
    this.#closed = true;
    this.#watch?.close();
    this.#client?.close();
  }
}

/** The bearer token of an Authorization header, if it has one. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer[ ]+([^ ]+)[ ]*$/i.exec(header);
  return m === null ? undefined : m[1];
}

/**
 * The JWT facts of a request: validates `token` for the first of `audiences` it carries (each
 * audience tried in turn), then checks `issuer` when given.
 */
export async function jwtFacts(
  token: string | undefined,
  audiences: readonly string[],
  issuer: string | undefined,
  bundles: BundleSet | undefined,
): Promise<Pick<RequestFacts, 'jwt' | 'jwtError'>> {
  if (token === undefined || audiences.length === 0) return {};
  if (bundles === undefined) return { jwtError: 'no JWT bundles yet' };
  let v: ValidatedJwtSvid | undefined;
  let why = 'audience mismatch';
  for (const audience of audiences) {
    try {
      v = await validateJwtSvid(token, { audience, bundles });
      break;
    } catch (err) {
      const reason = (err as { reason?: string }).reason;
      // An audience miss is tried against the next audience; anything else is final.
      if (reason === 'audience') continue;
      why = `${reason ?? 'invalid'}: ${(err as Error).message}`;
      return { jwtError: why };
    }
  }
  if (v === undefined) return { jwtError: `${why}: the token is for none of ${audiences.join(', ')}` };
  if (issuer !== undefined && v.claims['iss'] !== issuer) {
    return { jwtError: `issuer mismatch: iss ${JSON.stringify(v.claims['iss'] ?? null)} is not ${JSON.stringify(issuer)}` };
  }
  return { jwt: { subject: v.id, audience: v.audience, claims: v.claims } };
}
