/**
 * The bare grpc-js baseline of the agent-side benchmarks: a grpc-js server in its own process,
 * bound to a Unix socket, with the Workload API's streaming method shape
 * (`/SpiffeWorkloadAPI/FetchX509SVID`, server streaming) answering every call at once with one
 * cached, pre-encoded message (default 1.5 KB) and then holding the stream open, as the agent
 * does. No attestation, no cache, no per-call work: what grpc-js itself costs (with channelz
 * off, as the agent runs it).
 *
 * Run as `fork(bench/baselines/grpc.js, [socketPath, bytes])`; it sends {op:'ready'} over IPC.
 */
import { Server, ServerCredentials, type MethodDefinition, type ServerWritableStream, type ServiceDefinition } from '@grpc/grpc-js';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const BARE_MESSAGE_BYTES = 1536;

const identity = (b: Buffer): Buffer => b;

/** A method whose messages are passed through as bytes (the bare baselines send cached ones). */
export function rawMethod(path: string, responseStream: boolean): MethodDefinition<Buffer, Buffer> {
  return {
    path,
    requestStream: false,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  };
}

const SERVICE: ServiceDefinition = { fetchX509Svid: rawMethod('/SpiffeWorkloadAPI/FetchX509SVID', true) };

export interface BareGrpcServer {
  pid: number;
  socketPath: string;
  stop(): Promise<void>;
}

/** Starts the bare server process on `socketPath`. */
export async function startBareGrpcServer(socketPath: string, bytes = BARE_MESSAGE_BYTES): Promise<BareGrpcServer> {
  const child = fork(fileURLToPath(import.meta.url), ['--bare-grpc', socketPath, String(bytes)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('bare grpc-js server did not start in 10 s')), 10_000);
      child.once('message', (m: { op: string; error?: string }) => {
        clearTimeout(timer);
        if (m.op === 'ready') resolve();
        else reject(new Error(`bare grpc-js server failed: ${m.error}`));
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`bare grpc-js server exited with ${code}`));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid!, socketPath, stop };
}

function main(socketPath: string, bytes: number): void {
  const message = Buffer.alloc(bytes, 0x2a);
  // channelz off, as on the agent's socket (agent/endpoints/workloadapi.ts): like for like.
  const server = new Server({ 'grpc.enable_channelz': 0 });
  const open = new Set<ServerWritableStream<Buffer, Buffer>>();
  server.addService(SERVICE, {
    fetchX509Svid: (call: ServerWritableStream<Buffer, Buffer>) => {
      open.add(call);
      call.once('cancelled', () => open.delete(call));
      call.write(message);
    },
  });
  server.bindAsync(`unix:${socketPath}`, ServerCredentials.createInsecure(), (err) => {
    process.send!(err ? { op: 'failed', error: err.message } : { op: 'ready' });
  });
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[2] === '--bare-grpc' && process.send !== undefined) main(process.argv[3]!, Number(process.argv[4]));
