/**
 * The raw Unix-socket fan-out floor: one node:net server process holding N accepted sockets
 * writes the same buffer (default 1.5 KB) to every one of them in a loop; the clients
 * (bench/clients, `raw` mode) note when the whole buffer has arrived. Nothing between the
 * event loop and the kernel: what pushing one update to N local connections costs at minimum.
 *
 * Run as `fork(bench/baselines/netfanout.js, [socketPath])`; IPC: {op:'ready'}; then
 * {op:'push', bytes} -> {op:'pushed', t0, writeMs, sockets} (t0: absolute ms before the first write).
 */
import { fork } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';

export interface NetFanoutServer {
  pid: number;
  /** Once `expect` sockets are accepted, writes `bytes` to every one; resolves with the absolute start time. */
  push(bytes: number, expect: number): Promise<{ t0: number; writeMs: number; sockets: number }>;
  stop(): Promise<void>;
}

export async function startNetFanoutServer(socketPath: string): Promise<NetFanoutServer> {
  const child = fork(fileURLToPath(import.meta.url), ['--net-fanout', socketPath], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    });
  const reply = <T>(op: string, timeoutMs: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`net fan-out server did not answer ${op} in ${timeoutMs} ms`)), timeoutMs);
      const onMsg = (m: { op: string; error?: string }): void => {
        if (m.op === op) done(undefined, m as T);
        else if (m.op === 'failed') done(new Error(`net fan-out server failed: ${m.error}`));
      };
      const onExit = (code: number | null): void => done(new Error(`net fan-out server exited with ${code}`));
      function done(err: Error | undefined, v?: T): void {
        clearTimeout(timer);
        child.off('message', onMsg);
        child.off('exit', onExit);
        if (err) reject(err);
        else resolve(v!);
      }
      child.on('message', onMsg);
      child.once('exit', onExit);
    });
  try {
    await reply('ready', 10_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    pid: child.pid!,
    async push(bytes, expect) {
      const r = reply<{ t0: number; writeMs: number; sockets: number }>('pushed', 30_000);
      child.send({ op: 'push', bytes, expect });
      const res = await r;
      if (res.sockets < expect) throw new Error(`net fan-out server holds ${res.sockets} of ${expect} connections`);
      return res;
    },
    stop,
  };
}

function main(socketPath: string): void {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => sockets.delete(s));
    s.on('close', () => sockets.delete(s));
  });
  server.on('error', (err) => process.send!({ op: 'failed', error: err.message }));
  server.listen(socketPath, () => process.send!({ op: 'ready' }));
  const push = (bytes: number): void => {
    const buf = Buffer.alloc(bytes, 0x2a);
    const start = performance.now();
    const t0 = performance.timeOrigin + start;
    for (const s of sockets) s.write(buf);
    process.send!({ op: 'pushed', t0, writeMs: performance.now() - start, sockets: sockets.size });
  };
  process.on('message', (m: { op: string; bytes: number; expect: number }) => {
    if (m.op !== 'push') return;
    // Connections the clients saw complete may still wait in the accept queue.
    const deadline = performance.now() + 10_000;
    const go = (): void => {
      if (sockets.size >= m.expect || performance.now() > deadline) push(m.bytes);
      else setTimeout(go, 5);
    };
    go();
  });
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[2] === '--net-fanout' && process.send !== undefined) main(process.argv[3]!);
