/**
 * Test-only: a fake agent serving the SPIFFE Workload API (and grpc.health.v1) with real grpc-js
 * on a temp Unix socket, for the SDK and CLI suites. It checks the security header exactly as the
 * spec says (INVALID_ARGUMENT without `workload.spiffe.io: true`), records every call, serves
 * SVIDs made by test/support/testca.ts, pushes state changes to open streams, ends streams with a
 * chosen status, and can stop and start again on the same socket (an agent restart).
 *
 *   const trust = await createTestTrust();
 *   const agent = await FakeAgent.start({ identities: [trust.web], ...trust.material });
 *   const client = createWorkloadApiClient({ address: agent.address });
 */
import { Metadata, Server, ServerCredentials, status as Status, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData } from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Bundle, BundleSet } from '../bundle.js';
import { parseSpiffeId, parseTrustDomain, trustDomainId, trustDomainOf, type SpiffeId, type TrustDomain } from '../id.js';
import { mintJwtSvid, validateJwtSvid, type JwtSigner } from '../jwtsvid.js';
import { generateKeyPair } from '../keys.js';
import { TestCa, type TestSvid } from '../../test/support/testca.js';
import {
  HealthCheckResponse_ServingStatus,
  HealthService,
  type HealthCheckRequest,
  type HealthCheckResponse,
} from '../../proto/gen/grpc/health/v1/health.js';
import {
  SpiffeWorkloadAPIService,
  type JWTBundlesRequest,
  type JWTBundlesResponse,
  type JWTSVIDRequest,
  type JWTSVIDResponse,
  type ValidateJWTSVIDRequest,
  type ValidateJWTSVIDResponse,
  type X509BundlesRequest,
  type X509BundlesResponse,
  type X509SVIDRequest,
  type X509SVIDResponse,
} from '../../proto/gen/workload/workload.js';

export interface FakeIdentity {
  id: SpiffeId;
  /** Leaf first, then intermediates. */
  chain: Buffer[];
  keyPkcs8: Buffer;
  hint?: string;
}

export interface FakeAgentState {
  /** The caller's identities, default first. Empty: PERMISSION_DENIED "no identity issued". */
  identities: FakeIdentity[];
  /** X.509 authorities per trust domain (own and federated). */
  x509Authorities: Map<TrustDomain, Buffer[]>;
  /** JWT authorities per trust domain. */
  jwtBundles: BundleSet;
  /** Signs JWT-SVIDs (its public key must be in `jwtBundles` for validation to pass). */
  jwtSigner: JwtSigner;
}

export interface FakeStatus {
  code: number;
  details: string;
}

export type Rpc = 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTSVID' | 'FetchJWTBundles' | 'ValidateJWTSVID' | 'Health';

export interface RecordedCall {
  rpc: Rpc;
  /** Every value of the `workload.spiffe.io` header as received. */
  header: string[];
  request: unknown;
}

/** Trust material for the suites: example.org (own) and partner.org (federated), two workloads. */
export interface TestTrust {
  ca: TestCa;
  partner: TestCa;
  web: FakeIdentity;
  db: FakeIdentity;
  webSvid: TestSvid;
  signer: JwtSigner;
  partnerSigner: JwtSigner;
  /** State with both bundles (X.509 and JWT) and the signer; identities left to the test. */
  material: Omit<FakeAgentState, 'identities'>;
}

function identity(svid: TestSvid, hint?: string): FakeIdentity {
  return { id: svid.id, chain: svid.chain, keyPkcs8: svid.keyPkcs8, ...(hint === undefined ? {} : { hint }) };
}

export async function createTestTrust(): Promise<TestTrust> {
  const [ca, partner] = await Promise.all([TestCa.create({ trustDomain: 'example.org' }), TestCa.create({ trustDomain: 'partner.org' })]);
  const [webSvid, dbSvid, jwtKey, partnerKey] = await Promise.all([
    ca.issueSvid('spiffe://example.org/web'),
    ca.issueSvid('spiffe://example.org/db'),
    generateKeyPair('ec-p256'),
    generateKeyPair('ec-p256'),
  ]);
  const signer: JwtSigner = { kid: 'kid-example', privateKey: jwtKey.privateKey };
  const partnerSigner: JwtSigner = { kid: 'kid-partner', privateKey: partnerKey.privateKey };
  const jwtBundles = new BundleSet([
    new Bundle(ca.trustDomain, { jwtAuthorities: [[signer.kid, jwtKey.publicKey]] }),
    new Bundle(partner.trustDomain, { jwtAuthorities: [[partnerSigner.kid, partnerKey.publicKey]] }),
  ]);
  return {
    ca,
    partner,
    webSvid,
    web: identity(webSvid, 'web'),
    db: identity(dbSvid, 'db'),
    signer,
    partnerSigner,
    material: {
      x509Authorities: new Map([
        [ca.trustDomain, [ca.rootDer]],
        [partner.trustDomain, [partner.rootDer]],
      ]),
      jwtBundles,
      jwtSigner: signer,
    },
  };
}

type AnyStream = ServerWritableStream<unknown, unknown>;

/** `spiffe://td` -> concatenated DER, sorted, for the trust domains `include` accepts. */
function x509AuthoritiesMap(state: FakeAgentState, include: (td: TrustDomain) => boolean): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const [td, ders] of [...state.x509Authorities].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (include(td)) out.set(trustDomainId(td), Buffer.concat(ders));
  }
  return out;
}

/** The FetchX509SVID message a well-behaved agent sends for `state`. */
export function buildX509Response(state: Pick<FakeAgentState, 'identities' | 'x509Authorities'>): X509SVIDResponse {
  const own = new Set(state.identities.map((i) => trustDomainOf(i.id)));
  return {
    svids: state.identities.map((i) => ({
      spiffeId: i.id,
      x509Svid: Buffer.concat(i.chain),
      x509SvidKey: i.keyPkcs8,
      bundle: Buffer.concat(state.x509Authorities.get(trustDomainOf(i.id)) ?? []),
      hint: i.hint ?? '',
    })),
    crl: [],
    federatedBundles: x509AuthoritiesMap(state as FakeAgentState, (td) => !own.has(td)),
  };
}

export class FakeAgent {
  readonly socketPath: string;
  /** `unix:///...` (SPIFFE_ENDPOINT_SOCKET form). */
  readonly address: string;
  readonly calls: RecordedCall[] = [];
  state: FakeAgentState;
  /** When set, every Workload API call fails with this status (after the header check). */
  refuse: FakeStatus | undefined;
  /** When set, FetchX509SVID streams send this raw message instead of one built from the state. */
  rawX509: X509SVIDResponse | undefined;
  /** When true, calls are accepted but never answered (for deadline tests). */
  hang = false;
  /** The clock JWT-SVIDs are minted by (`iat`, `exp`); default real time. */
  jwtClock: (() => Date) | undefined;
  health: HealthCheckResponse_ServingStatus = HealthCheckResponse_ServingStatus.SERVING;
  readonly #dir: string | undefined;
  #server: Server | undefined;
  readonly #streams = new Map<Rpc, Set<AnyStream>>();

  private constructor(socketPath: string, dir: string | undefined, state: FakeAgentState) {
    this.socketPath = socketPath;
    this.address = `unix://${socketPath}`;
    this.#dir = dir;
    this.state = state;
  }

  /** Starts a fake agent on `socketPath` (default: a new temp dir's `agent.sock`). */
  static async start(state: FakeAgentState, opts: { socketPath?: string } = {}): Promise<FakeAgent> {
    const dir = opts.socketPath === undefined ? mkdtempSync(join(tmpdir(), 'spindle-wl-')) : undefined;
    const agent = new FakeAgent(opts.socketPath ?? join(dir!, 'agent.sock'), dir, state);
    await agent.listen();
    return agent;
  }

  /** Binds the socket (again, after stop()). */
  async listen(): Promise<void> {
    if (this.#server !== undefined) return;
    rmSync(this.socketPath, { force: true });
    const server = new Server();
    server.addService(SpiffeWorkloadAPIService, {
      fetchX509Svid: (call: ServerWritableStream<X509SVIDRequest, X509SVIDResponse>) => this.#stream('FetchX509SVID', call, () => this.x509Response()),
      fetchX509Bundles: (call: ServerWritableStream<X509BundlesRequest, X509BundlesResponse>) =>
        this.#stream('FetchX509Bundles', call, () => ({ crl: [], bundles: this.#x509Map(() => true) })),
      fetchJwtBundles: (call: ServerWritableStream<JWTBundlesRequest, JWTBundlesResponse>) =>
        this.#stream('FetchJWTBundles', call, () => ({ bundles: this.state.jwtBundles.jwtBundlesMap() })),
      fetchJwtsvid: (call: ServerUnaryCall<JWTSVIDRequest, JWTSVIDResponse>, cb: sendUnaryData<JWTSVIDResponse>) =>
        void this.#unary('FetchJWTSVID', call, cb, () => this.#fetchJwt(call.request)),
      validateJwtsvid: (call: ServerUnaryCall<ValidateJWTSVIDRequest, ValidateJWTSVIDResponse>, cb: sendUnaryData<ValidateJWTSVIDResponse>) =>
        void this.#unary('ValidateJWTSVID', call, cb, () => this.#validate(call.request)),
    });
    server.addService(HealthService, {
      check: (call: ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, cb: sendUnaryData<HealthCheckResponse>) => {
        this.#record('Health', call.metadata, call.request);
        cb(null, { status: this.health });
      },
      watch: (call: ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => call.emit('error', { code: Status.UNIMPLEMENTED, details: 'not served' }),
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(this.address, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    );
    this.#server = server;
  }

  /** Kills the server at once (open streams break, as when the agent process dies). */
  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.#streams.clear();
    server?.forceShutdown();
  }

  /** stop() and remove the temp dir. */
  async close(): Promise<void> {
    await this.stop();
    if (this.#dir !== undefined) rmSync(this.#dir, { recursive: true, force: true });
  }

  /** Number of open streams of `rpc`. */
  openStreams(rpc: Rpc): number {
    return this.#streams.get(rpc)?.size ?? 0;
  }

  /** Changes the state and pushes it to every open stream (X.509 streams end with PERMISSION_DENIED when no identity is left). */
  update(change: Partial<FakeAgentState>): void {
    this.state = { ...this.state, ...change };
    this.#pushX509();
    for (const s of this.#streams.get('FetchX509Bundles') ?? []) s.write({ crl: [], bundles: this.#x509Map(() => true) });
    for (const s of this.#streams.get('FetchJWTBundles') ?? []) s.write({ bundles: this.state.jwtBundles.jwtBundlesMap() });
  }

  /** Sends `raw` on every open FetchX509SVID stream (and to new ones while `rawX509` stays set). */
  pushRawX509(raw: X509SVIDResponse): void {
    this.rawX509 = raw;
    this.#pushX509();
  }

  /** Ends every open stream of `rpc` (all when undefined) with `code` (OK ends it normally). */
  endStreams(code: number, details = '', rpc?: Rpc): void {
    for (const [name, set] of this.#streams) {
      if (rpc !== undefined && name !== rpc) continue;
      for (const s of set) {
        if (code === Status.OK) s.end();
        else s.emit('error', { code, details });
      }
      set.clear();
    }
  }

  /** The FetchX509SVID message for the current state. */
  x509Response(): X509SVIDResponse {
    return this.rawX509 ?? buildX509Response(this.state);
  }

  #x509Map(include: (td: TrustDomain) => boolean): Map<string, Buffer> {
    return x509AuthoritiesMap(this.state, include);
  }

  #pushX509(): void {
    const streams = this.#streams.get('FetchX509SVID');
    if (streams === undefined) return;
    if (this.rawX509 === undefined && this.state.identities.length === 0) {
      this.endStreams(Status.PERMISSION_DENIED, 'no identity issued', 'FetchX509SVID');
      return;
    }
    const msg = this.x509Response();
    for (const s of streams) s.write(msg);
  }

  #record(rpc: Rpc, md: Metadata, request: unknown): void {
    this.calls.push({ rpc, header: md.get('workload.spiffe.io').map(String), request });
  }

  /** Header check, then the global refusal; returns the status to fail with, if any. */
  #gate(rpc: Rpc, md: Metadata, request: unknown): FakeStatus | undefined {
    this.#record(rpc, md, request);
    const header = md.get('workload.spiffe.io');
    if (header.length !== 1 || header[0] !== 'true') return { code: Status.INVALID_ARGUMENT, details: 'security header missing from request' };
    return this.refuse;
  }

  #stream(rpc: Rpc, call: AnyStream, first: () => unknown): void {
    const refused = this.#gate(rpc, call.metadata, call.request);
    if (refused !== undefined) {
      call.emit('error', refused);
      return;
    }
    if (!this.hang && rpc === 'FetchX509SVID' && this.rawX509 === undefined && this.state.identities.length === 0) {
      call.emit('error', { code: Status.PERMISSION_DENIED, details: 'no identity issued' });
      return;
    }
    let set = this.#streams.get(rpc);
    if (set === undefined) this.#streams.set(rpc, (set = new Set()));
    set.add(call);
    const drop = (): void => void this.#streams.get(rpc)?.delete(call);
    call.on('cancelled', drop);
    call.on('close', drop);
    call.on('error', drop);
    if (!this.hang) call.write(first());
  }

  async #unary<Res>(rpc: Rpc, call: ServerUnaryCall<unknown, Res>, cb: sendUnaryData<Res>, handle: () => Promise<Res | FakeStatus>): Promise<void> {
    const refused = this.#gate(rpc, call.metadata, call.request);
    if (refused !== undefined) {
      cb(refused);
      return;
    }
    if (this.hang) return;
    try {
      const r = await handle();
      if (typeof r === 'object' && r !== null && 'code' in r && 'details' in r) cb(r as FakeStatus);
      else cb(null, r as Res);
    } catch (err) {
      cb({ code: Status.INTERNAL, details: (err as Error).message });
    }
  }

  async #fetchJwt(req: JWTSVIDRequest): Promise<JWTSVIDResponse | FakeStatus> {
    if (req.audience.length === 0) return { code: Status.INVALID_ARGUMENT, details: 'audience must be specified' };
    let ids = this.state.identities.map((i) => i.id);
    if (ids.length === 0) return { code: Status.PERMISSION_DENIED, details: 'no identity issued' };
    if (req.spiffeId !== '') {
      if (!ids.includes(req.spiffeId as SpiffeId)) return { code: Status.PERMISSION_DENIED, details: `no identity issued for ${req.spiffeId}` };
      ids = [parseSpiffeId(req.spiffeId)];
    }
    const hints = new Map(this.state.identities.map((i) => [i.id, i.hint ?? '']));
    const svids = await Promise.all(
      ids.map(async (id) => ({
        spiffeId: id,
        svid: (await mintJwtSvid({ id, audience: req.audience, signer: this.state.jwtSigner, ...(this.jwtClock === undefined ? {} : { now: this.jwtClock() }) })).token,
        hint: hints.get(id) ?? '',
      })),
    );
    return { svids };
  }

  async #validate(req: ValidateJWTSVIDRequest): Promise<ValidateJWTSVIDResponse | FakeStatus> {
    if (req.audience === '') return { code: Status.INVALID_ARGUMENT, details: 'audience must be specified' };
    if (req.svid === '') return { code: Status.INVALID_ARGUMENT, details: 'svid must be specified' };
    try {
      const v = await validateJwtSvid(req.svid, { audience: req.audience, bundles: this.state.jwtBundles });
      return { spiffeId: v.id, claims: v.claims };
    } catch (err) {
      return { code: Status.INVALID_ARGUMENT, details: (err as Error).message };
    }
  }
}

/** `spiffe://td` -> TrustDomain, for tests. */
export const td = (s: string): TrustDomain => parseTrustDomain(s);
