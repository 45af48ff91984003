// server/errors.ts: the text for a failed agent API bind that the preflight probe did not catch
// (a real grpc-js bind on a port in use), and grpc-js's own log line routed into our logger.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import pino from 'pino';
import { routeGrpcLogs } from '../common/logging.js';
import { agentApiListenError } from './errors.js';

test('a grpc-js bind on a port in use: the agent API message, and grpc-js logs "No address added" to our logger at DEBUG, not to stderr', async () => {
  const squatter = createServer();
  await new Promise<void>((ok) => squatter.listen(0, '127.0.0.1', ok));
  const port = (squatter.address() as { port: number }).port;
  const records: Array<Record<string, unknown>> = [];
  routeGrpcLogs(pino({ level: 'debug' }, { write: (s: string) => records.push(JSON.parse(s) as Record<string, unknown>) }));
  const stderrWrites: string[] = [];
  const realWrite = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => (stderrWrites.push(String(chunk)), true)) as typeof process.stderr.write;
  const server = new Server();
  let err: Error | null;
  try {
    err = await new Promise<Error | null>((done) => server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (e) => done(e)));
  } finally {
    process.stderr.write = realWrite;
    server.forceShutdown();
    await new Promise<void>((ok) => squatter.close(() => ok()));
  }
  assert.ok(err, 'the bind should fail');
  assert.match(err.message, /No address added/);
  assert.equal(
    agentApiListenError(err, '127.0.0.1', port),
    `cannot listen on 127.0.0.1:${port} for the agent API: port ${port} is already in use by another process (is spindle-server already running?); stop it or choose another port with -serverPort / bind_port`,
  );
  const grpcLine = records.find((r) => r['subsystem'] === 'grpc' && /No address added/.test(String(r['msg'])));
  assert.ok(grpcLine, JSON.stringify(records));
  assert.equal(grpcLine['level'], 20);
  assert.deepEqual(stderrWrites.filter((w) => /No address added/.test(w)), []);
});
