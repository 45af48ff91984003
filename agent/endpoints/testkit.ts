/**
 * Test support for the endpoint tests (not a test file): an in-memory IdentityCache over real
 * certificates from TestCa, Workload API clients on a Unix socket, and a raw HTTP/2 gRPC caller
 * for connections the test did not open itself.
 */
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { generateKeyPairSync } from 'node:crypto';
import { connect as http2Connect } from 'node:http2';
import type { Socket } from 'node:net';
import type { IdentityCache, JwtIdentity, WorkloadSubscription, WorkloadUpdate, X509Identity } from '../manager/types.js';
import type { Selector } from '../../common/selector.js';
import { Bundle, BundleSet } from '../../spiffe/bundle.js';
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import { mintJwtSvid, type JwtSigner } from '../../spiffe/jwtsvid.js';
import { TestCa } from '../../test/support/testca.js';
import { SpiffeWorkloadAPIClient, type X509SVIDResponse } from '../../proto/gen/workload/workload.js';
import type { EndpointLogger } from './types.js';

export const silentLogger: EndpointLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return silentLogger;
  },
};

/** A logger that records records (for "never logs secrets" checks) and prints nothing. */
export function recordingLogger(): EndpointLogger & { records: unknown[] } {
  const records: unknown[] = [];
  const make = (bindings: Record<string, unknown>): EndpointLogger => {
    const rec = (level: string) => (obj: object, msg?: string) => void records.push({ level, ...bindings, ...obj, msg });
    return { debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error'), child: (b) => make({ ...bindings, ...b }) };
  };
  return Object.assign(make({}), { records });
}

export const sel = (s: string): Selector => {
  const i = s.indexOf(':');
  return { type: s.slice(0, i), value: s.slice(i + 1) };
};

export interface FakeEntry {
  selectors: Selector[];
  identity: X509Identity;
}

/** A trust domain for tests: its CA, a JWT signing key and the Bundle holding both. */
export class TestTrustDomain {
  readonly ca: TestCa;
  readonly signer: JwtSigner;
  bundle: Bundle;
  private constructor(ca: TestCa, signer: JwtSigner) {
    this.ca = ca;
    this.signer = signer;
    this.bundle = new Bundle(ca.trustDomain, { x509Authorities: [ca.rootDer], jwtAuthorities: [[signer.kid, signer.privateKey]] });
  }
  static async create(td: string): Promise<TestTrustDomain> {
    const ca = await TestCa.create({ trustDomain: td });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    return new TestTrustDomain(ca, { kid: `kid-${td}`, privateKey });
  }
  get trustDomain(): TrustDomain {
    return this.ca.trustDomain;
  }
  /** An X509Identity with a freshly issued SVID. */
  async identity(id: string, opts: { hint?: string; federatesWith?: TrustDomain[]; entryId?: string } = {}): Promise<X509Identity> {
    const svid = await this.ca.issueSvid(id);
    return {
      entryId: opts.entryId ?? id,
      spiffeId: svid.id,
      hint: opts.hint ?? '',
      chain: svid.chain,
      privateKey: svid.privateKey,
      privateKeyPkcs8: svid.keyPkcs8,
      notAfter: new Date(Date.now() + 3600_000),
      federatesWith: opts.federatesWith ?? [],
    };
  }
}

/**
 * IdentityCache over a list of entries (an entry matches when all its selectors are among the
 * caller's). Tests change entries and bundles and every subscriber gets the new full state.
 *
 * Which identities a caller may have is the real cache's decision (agent/manager), tested there
 * and end to end; endpoint tests must not lean on this fake's matching for a refusal. `asked`
 * records the selectors (and requested SPIFFE ID) of every call, so a test asserts what the
 * endpoint asked for: the caller's attested selectors, nothing the caller said.
 */
export class FakeIdentityCache implements IdentityCache {
  readonly own: TestTrustDomain;
  entries: FakeEntry[] = [];
  federated = new Map<TrustDomain, Bundle>();
  /** When set, subscriptions' initial updates reject with it. */
  failInitial: Error | undefined;
  readonly #subs = new Set<{ selectors: readonly Selector[]; listener: (u: WorkloadUpdate) => void }>();
  readonly #bundleSubs = new Set<(b: BundleSet) => void>();
  fetchJwtCalls: Array<{ audience: readonly string[]; spiffeId: SpiffeId | undefined }> = [];
  /** Every call's selectors ("type:value", sorted) and, for fetchJwt, the requested ID. */
  readonly asked: Array<{ method: 'fetchX509' | 'subscribe' | 'fetchJwt'; selectors: string[]; spiffeId?: SpiffeId }> = [];

  constructor(own: TestTrustDomain) {
    this.own = own;
  }

  get trustDomain(): TrustDomain {
    return this.own.trustDomain;
  }

  get subscriberCount(): number {
    return this.#subs.size;
  }

  updateFor(selectors: readonly Selector[]): WorkloadUpdate {
    const have = new Set(selectors.map((s) => `${s.type}:${s.value}`));
    const identities = this.entries.filter((e) => e.selectors.every((s) => have.has(`${s.type}:${s.value}`))).map((e) => e.identity);
    const fed = new Map<TrustDomain, Bundle>();
    for (const id of identities) for (const td of id.federatesWith) {
      const b = this.federated.get(td);
      if (b !== undefined) fed.set(td, b);
    }
    return { identities, bundle: this.own.bundle, federatedBundles: [...fed.values()] };
  }

  #record(method: 'fetchX509' | 'subscribe' | 'fetchJwt', selectors: readonly Selector[], spiffeId?: SpiffeId): void {
    this.asked.push({ method, selectors: selectors.map((s) => `${s.type}:${s.value}`).sort(), ...(spiffeId === undefined ? {} : { spiffeId }) });
  }

  async fetchX509(selectors: readonly Selector[]): Promise<WorkloadUpdate> {
    this.#record('fetchX509', selectors);
    return this.updateFor(selectors);
  }

  subscribe(selectors: readonly Selector[], listener: (update: WorkloadUpdate) => void): WorkloadSubscription {
    this.#record('subscribe', selectors);
    const sub = { selectors, listener };
    this.#subs.add(sub);
    const initial = this.failInitial ? Promise.reject(this.failInitial) : Promise.resolve(this.updateFor(selectors));
    initial.catch(() => {});
    return { initial, close: () => void this.#subs.delete(sub) };
  }

  async fetchJwt(selectors: readonly Selector[], audience: readonly string[], spiffeId?: SpiffeId): Promise<JwtIdentity[]> {
    this.fetchJwtCalls.push({ audience, spiffeId });
    this.#record('fetchJwt', selectors, spiffeId);
    const ids = this.updateFor(selectors).identities.filter((i) => spiffeId === undefined || i.spiffeId === spiffeId);
    return Promise.all(
      ids.map(async (i) => {
        const m = await mintJwtSvid({ id: i.spiffeId, audience, signer: this.own.signer, ttlSeconds: 300 });
        return { spiffeId: i.spiffeId, token: m.token, hint: i.hint, expiresAt: m.expiresAt };
      }),
    );
  }

  bundles(): BundleSet {
    return new BundleSet([this.own.bundle, ...this.federated.values()]);
  }

  subscribeBundles(listener: (bundles: BundleSet) => void): () => void {
    this.#bundleSubs.add(listener);
    return () => void this.#bundleSubs.delete(listener);
  }

  /** Pushes the current state to every subscriber (what the real cache does on any change). */
  notify(): void {
    for (const s of [...this.#subs]) s.listener(this.updateFor(s.selectors));
    for (const l of [...this.#bundleSubs]) l(this.bundles());
  }
}

// ---------------------------------------------------------------------------------------------
// Clients

/** Metadata with the security header set to `value`; `null`: no header at all. */
export function headerMetadata(value: string | null = 'true'): Metadata {
  const md = new Metadata();
  if (value !== null) md.set('workload.spiffe.io', value);
  return md;
}

/** `p`, or a rejection naming `what` after `ms` (tests must fail, not hang). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export function workloadClient(socketPath: string): InstanceType<typeof SpiffeWorkloadAPIClient> {
  return new SpiffeWorkloadAPIClient(`unix:${socketPath}`, credentials.createInsecure());
}

/** Collects a server stream's messages; `next()` waits for the next one, `status` for the end. */
export function collect<T>(stream: NodeJS.EventEmitter & { cancel(): void }): { messages: T[]; next(timeoutMs?: number): Promise<T>; ended: Promise<ServiceError | null>; cancel(): void } {
  const messages: T[] = [];
  const waiters: Array<(m: T) => void> = [];
  let read = 0;
  stream.on('data', (m: T) => {
    messages.push(m);
    const w = waiters.shift();
    if (w) {
      read++;
      w(m);
    }
  });
  const ended = new Promise<ServiceError | null>((resolve) => {
    stream.on('error', (err: ServiceError) => resolve(err));
    stream.on('end', () => resolve(null));
  });
  return {
    messages,
    ended,
    cancel: () => stream.cancel(),
    next(timeoutMs = 5000) {
      if (read < messages.length) return Promise.resolve(messages[read++]!);
      return new Promise<T>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no stream message within ${timeoutMs} ms`)), timeoutMs);
        const settle = (m: T): void => {
          clearTimeout(t);
          resolve(m);
        };
        waiters.push(settle);
        void ended.then((err) => {
          if (waiters.includes(settle)) {
            clearTimeout(t);
            reject(err ?? new Error('stream ended'));
          }
        });
      });
    },
  };
}

/** The first X509SVIDResponse, or the error status. */
export function firstX509(socketPath: string, md: Metadata = headerMetadata()): Promise<X509SVIDResponse> {
  const client = workloadClient(socketPath);
  return new Promise<X509SVIDResponse>((resolve, reject) => {
    const stream = client.fetchX509Svid({}, md);
    stream.once('data', (m: X509SVIDResponse) => {
      resolve(m);
      stream.cancel();
    });
    stream.once('error', (err: ServiceError) => reject(err));
  }).finally(() => client.close());
}

/**
 * A unary gRPC call made by hand over an already connected socket (HTTP/2 + the 5-byte gRPC
 * framing): for sockets opened by another process and passed to us.
 */
export function rawUnaryCall(socket: Socket, path: string, request: Uint8Array, headers: Record<string, string>): Promise<{ grpcStatus: number; grpcMessage: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const session = http2Connect('http://localhost', { createConnection: () => socket });
    session.on('error', reject);
    const frame = Buffer.alloc(5 + request.length);
    frame.writeUInt32BE(request.length, 1);
    Buffer.from(request).copy(frame, 5);
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    const chunks: Buffer[] = [];
    let grpcStatus = -1;
    let grpcMessage = '';
    const take = (h: Record<string, unknown>): void => {
      if (h['grpc-status'] !== undefined) grpcStatus = Number(h['grpc-status']);
      if (h['grpc-message'] !== undefined) grpcMessage = decodeURIComponent(String(h['grpc-message']));
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', reject);
    req.on('end', () => {
      session.close();
      resolve({ grpcStatus, grpcMessage, body: Buffer.concat(chunks) });
    });
    req.end(frame);
  });
}
