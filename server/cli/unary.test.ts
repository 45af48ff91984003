// The admin CLI's own unary gRPC client (unary.ts) against small HTTP/2 servers on real Unix
// sockets that answer the way a gRPC server (or something else) would, and the list of admin
// verbs bin/load.js sends to the admin bundle.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Http2Server, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HealthCheckRequest, HealthCheckResponse, HealthCheckResponse_ServingStatus, HealthService } from '../../proto/gen/grpc/health/v1/health.js';
import { ADMIN_COMMAND_NAMES } from './commands.js';
import { Code, MAX_RESPONSE_BYTES, UnaryCallError, UnaryChannel } from './unary.js';

type Handler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, body: Buffer) => void;

let dir: string;
let server: Http2Server;
let handler: Handler = () => {};
const socket = (): string => join(dir, 'api.sock');

function framed(msg: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + msg.length);
  out.writeUInt32BE(msg.length, 1);
  Buffer.from(msg).copy(out, 5);
  return out;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spindle-unary-'));
  server = createServer();
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => handler(stream, headers, Buffer.concat(chunks)));
  });
  await new Promise<void>((ok) => server.listen(socket(), ok));
});

after(async () => {
  await new Promise<void>((ok) => server.close(() => ok()));
  rmSync(dir, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<UnaryCallError> {
  const err = await p.then(
    () => assert.fail('the call succeeded'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof UnaryCallError, String(err));
  return err;
}

test('a call sends one framed request with gRPC headers and decodes the framed response', async () => {
  let seen: { headers: IncomingHttpHeaders; req: HealthCheckRequest } | undefined;
  handler = (stream, headers, body) => {
    assert.equal(body.readUInt8(0), 0);
    assert.equal(body.readUInt32BE(1), body.length - 5);
    seen = { headers, req: HealthCheckRequest.decode(body.subarray(5)) };
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(framed(HealthCheckResponse.encode({ status: HealthCheckResponse_ServingStatus.SERVING }).finish()));
  };
  const ch = new UnaryChannel(socket());
  try {
    const res = await ch.call(HealthService.check, { service: 'svc' }, 5000);
    assert.equal(res.status, HealthCheckResponse_ServingStatus.SERVING);
  } finally {
    ch.close();
  }
  assert.equal(seen?.req.service, 'svc');
  assert.equal(seen?.headers[':path'], '/grpc.health.v1.Health/Check');
  assert.equal(seen?.headers['content-type'], 'application/grpc');
  assert.equal(seen?.headers['te'], 'trailers');
  assert.equal(seen?.headers['grpc-timeout'], '5000m');
});

test('a status in a trailers-only response comes back with its percent-decoded message', async () => {
  handler = (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': 'entry%20%22x%22%20not%20found%0A100%25' }, { endStream: true });
  };
  const ch = new UnaryChannel(socket());
  try {
    const err = await failure(ch.call(HealthService.check, { service: '' }, 5000));
    assert.equal(err.code, 5);
    assert.equal(err.details, 'entry "x" not found\n100%');
  } finally {
    ch.close();
  }
});

test('a status in the trailers after headers is reported; a malformed message encoding is shown as sent', async () => {
  handler = (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '7', 'grpc-message': 'bad %zz' }));
    stream.end();
  };
  const ch = new UnaryChannel(socket());
  try {
    const err = await failure(ch.call(HealthService.check, { service: '' }, 5000));
    assert.equal(err.code, Code.PERMISSION_DENIED);
    assert.equal(err.details, 'bad %zz');
  } finally {
    ch.close();
  }
});

test('a server that never answers fails the call with DEADLINE_EXCEEDED after the timeout', async () => {
  handler = () => {};
  const ch = new UnaryChannel(socket());
  try {
    const err = await failure(ch.call(HealthService.check, { service: '' }, 300));
    assert.equal(err.code, Code.DEADLINE_EXCEEDED);
  } finally {
    ch.close();
  }
});

test('a non-gRPC HTTP answer maps its status like grpc-js (404 -> UNIMPLEMENTED)', async () => {
  handler = (stream) => {
    stream.respond({ ':status': 404 }, { endStream: true });
  };
  const ch = new UnaryChannel(socket());
  try {
    const err = await failure(ch.call(HealthService.check, { service: '' }, 5000));
    assert.equal(err.code, Code.UNIMPLEMENTED);
    assert.match(err.details, /HTTP status code 404/);
  } finally {
    ch.close();
  }
});

test('a response larger than the limit fails with RESOURCE_EXHAUSTED', async () => {
  handler = (stream) => {
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(framed(Buffer.alloc(MAX_RESPONSE_BYTES + 1)));
  };
  const ch = new UnaryChannel(socket());
  try {
    const err = await failure(ch.call(HealthService.check, { service: '' }, 10_000));
    assert.equal(err.code, Code.RESOURCE_EXHAUSTED);
  } finally {
    ch.close();
  }
});

test('a missing socket fails with UNAVAILABLE naming the connect error', async () => {
  const ch = new UnaryChannel(join(dir, 'missing.sock'));
  try {
    const err = await failure(ch.call(HealthService.check, { service: '' }, 5000));
    assert.equal(err.code, Code.UNAVAILABLE);
    assert.match(err.details, /connect ENOENT/);
  } finally {
    ch.close();
  }
});

test('bin/load.js sends exactly the admin commands to the admin bundle', async () => {
  const load = (await import(new URL('../../../bin/load.js', import.meta.url).href)) as { ADMIN_VERBS: string[] };
  assert.deepEqual([...load.ADMIN_VERBS].sort(), [...ADMIN_COMMAND_NAMES].sort());
  // These open the config or the datastore themselves: the admin bundle does not hold them.
  for (const local of ['run', 'validate', 'datastore']) assert.ok(!load.ADMIN_VERBS.includes(local), `${local} is not an admin command`);
});
