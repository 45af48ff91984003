/**
 * The "bare grpc-js" baselines for the agent API: a grpc-js server over mutual TLS (P-256
 * certificates, as the agent API) answering every call with a cached payload, run as its own
 * process (`node dist/bench/server/bare.js <payloadBytes>` prints its port), and a client
 * measuring calls per second with a number of calls in flight. The same server answers
 * SyncAuthorized (at the agent API's path) with a cached message after reading the peer
 * certificate as the agent API does: the reconnect storm's floor.
 */
import { ChannelCredentials, credentials, makeGenericClientConstructor, Metadata, Server, ServerCredentials, type ServiceDefinition } from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { generateKeyPair } from '../../spiffe/keys.js';
import { parseSpiffeId, parseTrustDomain } from '../../spiffe/id.js';
import { toPem } from '../../spiffe/pem.js';
import { createIssuer, createSelfSignedCa, issueX509Svid } from '../../spiffe/x509/index.js';
import { rawMethod } from '../baselines/grpc.js';

const SERVICE: ServiceDefinition = {
  sync: rawMethod('/spindle.agent.v1.AgentAPI/SyncAuthorized', true),
  echo: rawMethod('/bench.Bare/Echo', false),
};

export interface BareTls {
  /** The bare CA (clients verify the server with it); the server verifies clients with it too. */
  caPem: string;
  /** More authorities the server accepts client certificates from (e.g. a Spindle bundle). */
  clientCaPem?: string;
  server: { certPem: string; keyPem: string };
  client: { certPem: string; keyPem: string };
}

/** A throwaway CA with a server and a client leaf (P-256). */
export async function bareTls(): Promise<BareTls> {
  const td = parseTrustDomain('bare.example');
  const ca = await generateKeyPair('ec-p256');
  const caDer = createSelfSignedCa({ trustDomain: td, keyPair: ca, ttlSeconds: 3600 });
  const issuer = createIssuer([caDer], ca.privateKey);
  const leaf = async (path: string): Promise<{ certPem: string; keyPem: string }> => {
    const kp = await generateKeyPair('ec-p256');
    const svid = issueX509Svid({ id: parseSpiffeId(`spiffe://bare.example/${path}`), publicKey: kp.publicKey, ttlSeconds: 3600, issuer });
    return { certPem: toPem('CERTIFICATE', svid.der), keyPem: kp.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
  };
  return { caPem: toPem('CERTIFICATE', caDer), server: await leaf('server'), client: await leaf('client') };
}

/**
 * Starts the bare server process; resolves with its port and a stop function. `syncMessage`:
 * what SyncAuthorized answers (encoded SyncAuthorizedResponse; default empty).
 */
export async function startBareServer(tls: BareTls, payloadBytes: number, syncMessage: Uint8Array = new Uint8Array()): Promise<{ port: number; pid: number; stop(): void }> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), String(payloadBytes)], { stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdin!.end(JSON.stringify({ tls, sync: Buffer.from(syncMessage).toString('base64') } satisfies BareInput));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^port (\d+)$/m.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`bare grpc server exited with ${code}`)));
  });
  return { port, pid: child.pid!, stop: () => void child.kill('SIGKILL') };
}

/** Unary calls per second against the bare server with `inFlight` calls outstanding. */
export async function bareUnaryRate(tls: BareTls, port: number, inFlight: number, seconds: number): Promise<number> {
  const Client = makeGenericClientConstructor(SERVICE, 'Bare');
  const creds: ChannelCredentials = credentials.createSsl(Buffer.from(tls.caPem), Buffer.from(tls.client.keyPem), Buffer.from(tls.client.certPem), {
    checkServerIdentity: () => undefined,
  });
  const client = new Client(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': 'bare', 'grpc.default_authority': 'bare' });
  const req = Buffer.alloc(64, 1);
  const call = (): Promise<void> =>
    new Promise((ok, fail) => (client as unknown as { echo: (r: Buffer, m: Metadata, cb: (e: Error | null) => void) => void }).echo(req, new Metadata(), (e) => (e ? fail(e) : ok())));
  try {
    const run = async (ms: number): Promise<number> => {
      let n = 0;
      const end = performance.now() + ms;
      const start = performance.now();
      await Promise.all(
        Array.from({ length: inFlight }, async () => {
          while (performance.now() < end) {
            await call();
            n++;
          }
        }),
      );
      return (n * 1000) / (performance.now() - start);
    };
    await run(500);
    return await run(seconds * 1000);
  } finally {
    client.close();
  }
}

interface BareInput {
  tls: BareTls;
  /** base64 of the SyncAuthorized answer. */
  sync: string;
}

async function main(): Promise<void> {
  const payload = Buffer.alloc(Number(process.argv[2] ?? 600), 7);
  let input = '';
  for await (const chunk of process.stdin) input += (chunk as Buffer).toString();
  const { tls, sync } = JSON.parse(input) as BareInput;
  const syncMessage = Buffer.from(sync, 'base64');
  const server = new Server({ 'grpc.enable_channelz': 0 });
  server.addService(SERVICE, {
    echo: (_call: unknown, cb: (e: null, r: Buffer) => void) => cb(null, payload),
    sync: (call: { getAuthContext(): unknown; write(b: Buffer): boolean }) => {
      call.getAuthContext();
      call.write(syncMessage);
    },
  });
  const creds = ServerCredentials.createSsl(Buffer.from(tls.caPem + (tls.clientCaPem ?? '')), [{ cert_chain: Buffer.from(tls.server.certPem), private_key: Buffer.from(tls.server.keyPem) }], true);
  server.bindAsync('127.0.0.1:0', creds, (err, port) => {
    if (err) throw err;
    process.stdout.write(`port ${port}\n`);
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) void main();
