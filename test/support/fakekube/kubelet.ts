/**
 * An in-process fake kubelet for tests: a node:https server answering `GET /pods` with a v1
 * PodList, authenticating callers the way a kubelet with webhook/x509 authn does: a client
 * certificate signed by the test CA, or a bearer token from the configured set (either one
 * suffices). Unauthenticated requests get 401 "Unauthorized" (plain text, as the kubelet
 * answers), unknown paths 404.
 *
 * Knobs: `setPods` (a list, or a function of the 1-based request number, for pods or
 * containers that appear over time), `addPodAfter` (a pod that shows up once N requests have
 * been answered), `failWith` (answer every /pods request with a status), `requests` (what
 * each request looked like: path and how it authenticated). `pod()` builds realistic Pod JSON.
 */
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface FakeKubeletTls {
  /** Verifies client certificates. */
  caCert: Buffer;
  serverCert: Buffer;
  serverKey: Buffer;
}

export interface FakeKubeletOptions {
  tls: FakeKubeletTls;
  /** Bearer tokens accepted. Default none. */
  tokens?: string[];
  /** Accept client certificates that chain to tls.caCert. Default true. */
  acceptClientCerts?: boolean;
  /** Serve unauthenticated requests (a kubelet with anonymous auth allowed). Default false. */
  allowAnonymous?: boolean;
  pods?: FakePods;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (any free port). */
  port?: number;
}

/**
 * Pod objects (v1 Pod JSON), or a function of the 1-based number of the /pods request, counted
 * from when these pods were set.
 */
export type FakePods = object[] | ((requestNumber: number) => object[]);

export interface FakeKubeletRequest {
  path: string;
  /** How the caller authenticated; 'rejected' got a 401. */
  auth: 'token' | 'client-cert' | 'anonymous' | 'rejected';
  /** CN of the verified client certificate, if any. */
  clientCn?: string;
}

export interface FakeKubelet {
  /** `https://127.0.0.1:<port>`. */
  readonly url: string;
  readonly port: number;
  /** Every request, in order. */
  readonly requests: readonly FakeKubeletRequest[];
  /** Number of /pods requests answered with a pod list. */
  readonly podListsServed: number;
  /** Replaces the pods (and drops those given to addPodAfter). */
  setPods(pods: FakePods): void;
  /** `pod` is listed (after the others) from the (n+1)th /pods request after this call on. */
  addPodAfter(n: number, pod: object): void;
  /** Answer /pods with this status and a Status body until called with undefined. */
  failWith(status: number | undefined): void;
  setTokens(tokens: string[]): void;
  close(): Promise<void>;
}

export async function startFakeKubelet(opts: FakeKubeletOptions): Promise<FakeKubelet> {
  let pods: FakePods = opts.pods ?? [];
  const late: { after: number; pod: object }[] = [];
  let tokens = new Set(opts.tokens ?? []);
  let failStatus: number | undefined;
  const acceptCerts = opts.acceptClientCerts ?? true;
  const requests: FakeKubeletRequest[] = [];
  let served = 0;
  let podRequests = 0;
  let podsSetAt = 0;
  const sockets = new Set<Socket>();

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'https://kubelet').pathname;
    const record: FakeKubeletRequest = { path, auth: 'rejected' };
    requests.push(record);
    const sock = req.socket as TLSSocket;
    const peer = sock.getPeerCertificate();
    const certOk = acceptCerts && sock.authorized && peer !== null && Object.keys(peer).length > 0;
    const authz = req.headers.authorization ?? '';
    const bearer = authz.startsWith('Bearer ') ? authz.slice('Bearer '.length) : undefined;
    if (certOk) {
      record.auth = 'client-cert';
      const cn = peer.subject?.CN;
      if (typeof cn === 'string') record.clientCn = cn;
    } else if (bearer !== undefined && tokens.has(bearer)) record.auth = 'token';
    else if (opts.allowAnonymous && bearer === undefined) record.auth = 'anonymous';
    if (record.auth === 'rejected') {
      res.writeHead(401, { 'Content-Type': 'text/plain; charset=utf-8' }).end('Unauthorized\n');
      return;
    }
    if (req.method !== 'GET' || path !== '/pods') {
      sendJson(res, 404, status(404, 'NotFound', `the server could not find the requested resource`));
      return;
    }
    podRequests++;
    if (failStatus !== undefined) {
      sendJson(res, failStatus, status(failStatus, 'InternalError', `fake kubelet failing with ${failStatus}`));
      return;
    }
    const n = podRequests;
    const items = [...(typeof pods === 'function' ? pods(n - podsSetAt) : pods), ...late.filter((l) => n > l.after).map((l) => l.pod)];
    served++;
    sendJson(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: {}, items });
  };

  const server: Server = createServer(
    { key: opts.tls.serverKey, cert: opts.tls.serverCert, ca: opts.tls.caCert, requestCert: true, rejectUnauthorized: false },
    handler,
  );
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const host = opts.host ?? '127.0.0.1';
  return {
    url: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    requests,
    get podListsServed() {
      return served;
    },
    setPods(p) {
      pods = p;
      podsSetAt = podRequests;
      late.length = 0;
    },
    addPodAfter(n, pod) {
      late.push({ after: podRequests + n, pod });
    },
    failWith(s) {
      failStatus = s;
    },
    setTokens(t) {
      tokens = new Set(t);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

function status(code: number, reason: string, message: string): object {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) }).end(text);
}

// ---------------------------------------------------------------------------------------------
// Pod JSON builders

export interface FakeContainer {
  name: string;
  image: string;
  /** Default `<image without tag>@sha256:<64 hex derived from name>`; "" for not pulled yet. */
  imageID?: string;
  /** Full `<runtime>://<id>`; "" (the default) for a container not created yet. */
  containerID?: string;
}

export interface FakePodSpec {
  uid: string;
  name: string;
  namespace?: string;
  serviceAccountName?: string;
  nodeName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: { kind: string; name: string; uid: string; apiVersion?: string; controller?: boolean }[];
  containers?: FakeContainer[];
  initContainers?: FakeContainer[];
  phase?: string;
}

function statusOf(c: FakeContainer, init: boolean): object {
  const running = c.containerID !== undefined && c.containerID !== '';
  const imageID = c.imageID ?? `${c.image.replace(/:[^:/]*$/, '')}@sha256:${hex64(c.name)}`;
  return {
    name: c.name,
    state: running ? (init ? { terminated: { exitCode: 0, reason: 'Completed' } } : { running: { startedAt: '2024-01-01T00:00:00Z' } }) : { waiting: { reason: 'ContainerCreating' } },
    ready: running && !init,
    restartCount: 0,
    image: c.image,
    imageID: running ? imageID : (c.imageID ?? ''),
    ...(running ? { containerID: c.containerID } : {}),
    started: running && !init,
  };
}

function hex64(seed: string): string {
  let out = '';
  let h = 2166136261;
  while (out.length < 64) {
    for (const ch of `${seed}${out.length}`) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
    out += h.toString(16).padStart(8, '0');
  }
  return out.slice(0, 64);
}

/** A v1 Pod as the kubelet's /pods returns it. */
export function pod(spec: FakePodSpec): object {
  const containers = spec.containers ?? [];
  const inits = spec.initContainers ?? [];
  return {
    metadata: {
      name: spec.name,
      namespace: spec.namespace ?? 'default',
      uid: spec.uid,
      resourceVersion: '1',
      creationTimestamp: '2024-01-01T00:00:00Z',
      ...(spec.labels ? { labels: spec.labels } : {}),
      ...(spec.annotations ? { annotations: spec.annotations } : {}),
      ...(spec.ownerReferences
        ? { ownerReferences: spec.ownerReferences.map((o) => ({ apiVersion: o.apiVersion ?? 'apps/v1', kind: o.kind, name: o.name, uid: o.uid, controller: o.controller ?? true, blockOwnerDeletion: true })) }
        : {}),
    },
    spec: {
      ...(inits.length ? { initContainers: inits.map((c) => ({ name: c.name, image: c.image, imagePullPolicy: 'IfNotPresent' })) } : {}),
      containers: containers.map((c) => ({ name: c.name, image: c.image, imagePullPolicy: 'IfNotPresent' })),
      restartPolicy: 'Always',
      serviceAccountName: spec.serviceAccountName ?? 'default',
      serviceAccount: spec.serviceAccountName ?? 'default',
      nodeName: spec.nodeName ?? 'node-1',
    },
    status: {
      phase: spec.phase ?? 'Running',
      hostIP: '10.0.0.1',
      podIP: '10.244.0.5',
      ...(inits.length ? { initContainerStatuses: inits.map((c) => statusOf(c, true)) } : {}),
      containerStatuses: containers.map((c) => statusOf(c, false)),
      qosClass: 'BestEffort',
    },
  };
}
