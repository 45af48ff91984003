/**
 * Bearer JWT-SVIDs on HTTP listeners. When a listener's decider asks for JWTs
 * (`jwtAudiences(listener)` non-empty), the request's `Authorization: Bearer <token>` is
 * validated against the JWT bundles from the Workload API (signature by an authority of the
 * subject's trust domain, expiry, one of the listener's audiences, and `iss` when the decider
 * names one), and the result goes into the request's facts: `jwt` when it validated, `jwtError`
 * (a short reason) when a token was there but did not validate; neither without a token. The
 * token is forwarded to the service unchanged.
 *
 * The bundles come from the SDK's BundleSource, started by the first request that needs them;
 * until they arrive, a token is reported as not validated ("no JWT bundles yet").
 */
import { isSpiffeError, type SpiffeError } from '../spiffe/errors.js';
import { validateJwtSvid, type ValidatedJwtSvid } from '../spiffe/jwtsvid.js';
import { bearerTokenOf, type RequestWithHeaders } from '../spiffe/sdk/jwthttp.js';
import { BundleSource } from '../spiffe/sdk/bundlesource.js';
import type { JwtBundleSource } from '../spiffe/source.js';
import type { RequestFacts } from './decision.js';

/** The JWT bundles (the SDK's BundleSource), started on first use. */
export class JwtBundleWatch {
  #source: BundleSource | undefined;
  #starting = false;
  #closed = false;

  constructor(
    readonly socketPath: string,
    readonly log: { warn(o: object, m: string): void; info(o: object, m: string): void },
  ) {}

  /** The bundles (starting the BundleSource on the first call); undefined until they arrive. */
  bundles(): JwtBundleSource | undefined {
    if (this.#source === undefined && !this.#starting && !this.#closed) {
      this.#starting = true;
      BundleSource.create({ socketPath: this.socketPath }).then(
        (source) => {
          this.#starting = false;
          if (this.#closed) {
            source.close();
            return;
          }
          source.on('error', (err: Error) => this.log.warn({ err: err.message }, 'bundle watch error (retrying)'));
          this.#source = source;
          this.log.info({}, 'JWT bundles received');
        },
        (err: Error) => {
          // Tried again by the next request that needs them.
          this.#starting = false;
          this.log.warn({ err: err.message }, 'no JWT bundles from the Workload API yet');
        },
      );
    }
    return this.#source;
  }

  close(): void {
    this.#closed = true;
    this.#source?.close();
  }
}

/**
 * The request's bearer token, read by the SDK's parser (RFC 6750 token syntax, bounded to a
 * JWT-SVID's size): undefined when the request has no Bearer credentials, the parser's error when
 * the header holds a malformed or oversized one.
 */
export function bearerToken(req: RequestWithHeaders): string | SpiffeError | undefined {
  try {
    return bearerTokenOf(req);
  } catch (err) {
    if (!isSpiffeError(err)) throw err;
    return err.reason === 'missing_token' || err.reason === 'not_bearer' ? undefined : err;
  }
}

/**
 * The JWT facts of a request: a malformed bearer header is a `jwtError`; otherwise validates `token` for the first of `audiences` it carries (each
 * audience tried in turn), then checks `issuer` when given.
 */
export async function jwtFacts(
  token: string | SpiffeError | undefined,
  audiences: readonly string[],
  issuer: string | undefined,
  bundles: JwtBundleSource | undefined,
): Promise<Pick<RequestFacts, 'jwt' | 'jwtError'>> {
  if (token === undefined || audiences.length === 0) return {};
  if (typeof token !== 'string') return { jwtError: `${token.reason}: ${token.message}` };
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
