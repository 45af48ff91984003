// The admin socket's filesystem protections and lifecycle, on real Unix sockets.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseTrustDomain } from '../../../spiffe/id.js';
import type { DataStore } from '../../datastore/types.js';
import { openTestDataStore } from '../../../test/support/datastore.js';
import { AdminClient } from '../../cli/client.js';
import { createAdminServices, type AdminServices } from './service.js';
import { startAdminServer } from './server.js';
import { createTestCaSigner, silentLogger } from './testkit.js';

let dir: string;
let datastore: DataStore;
let services: AdminServices;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spindle-sock-'));
  datastore = await openTestDataStore(join(dir, 'ds.sqlite3'));
  const trustDomain = parseTrustDomain('example.org');
  services = createAdminServices({ datastore, ca: await createTestCaSigner(trustDomain), trustDomain, now: () => new Date(), logger: silentLogger });
});

after(async () => {
  await datastore.close();
  rmSync(dir, { recursive: true, force: true });
});

async function healthy(socketPath: string): Promise<boolean> {
  const c = new AdminClient(socketPath, { timeoutMs: 5000 });
  try {
    await c.call(c.health.check, { service: '' });
    return true;
  } finally {
    c.close();
  }
}

test('socket 0770 and a created directory 0700 even with umask 0; close removes the socket', async () => {
  const socketPath = join(dir, 'umask0', 'private', 'api.sock');
  const old = process.umask(0);
  let server;
  try {
    server = await startAdminServer({ socketPath, services, logger: silentLogger });
  } finally {
    process.umask(old);
  }
  assert.equal(server.socketPath, socketPath);
  assert.ok(lstatSync(socketPath).isSocket());
  assert.equal(statSync(socketPath).mode & 0o777, 0o770);
  assert.equal(statSync(join(dir, 'umask0', 'private')).mode & 0o777, 0o700);
  assert.equal(statSync(join(dir, 'umask0')).mode & 0o777, 0o700, 'intermediate directories are private too');
  assert.deepEqual(readdirSync(join(dir, 'umask0', 'private')), ['api.sock'], 'the staging directory is gone');
  assert.ok(await healthy(socketPath));
  await server.close();
  assert.equal(existsSync(socketPath), false);
});

test('a stale socket from a crashed server is replaced', async () => {
  const socketPath = join(dir, 'stale', 'api.sock');
  mkdirSync(join(dir, 'stale'), { mode: 0o700 });
  // A process that bound the socket and died without cleaning up.
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`]);
  await new Promise<void>((ok) => child.stdout.once('data', () => ok()));
  child.kill('SIGKILL');
  await new Promise((ok) => child.once('exit', ok));
  assert.ok(lstatSync(socketPath).isSocket());
  const server = await startAdminServer({ socketPath, services, logger: silentLogger });
  try {
    assert.ok(await healthy(socketPath));
    assert.equal(statSync(socketPath).mode & 0o777, 0o770);
  } finally {
    await server.close();
  }
});

test('refuses to take over a live socket or to delete a non-socket file', async () => {
  const live = join(dir, 'live.sock');
  const other = createServer();
  await new Promise<void>((ok) => other.listen(live, ok));
  try {
    await assert.rejects(startAdminServer({ socketPath: live, services, logger: silentLogger }), /already serving/);
    assert.ok(lstatSync(live).isSocket());
  } finally {
    await new Promise((ok) => other.close(ok));
  }

  const file = join(dir, 'regular');
  writeFileSync(file, 'keep me');
  await assert.rejects(startAdminServer({ socketPath: file, services, logger: silentLogger }), /not a socket/);
  assert.equal(readFileSync(file, 'utf8'), 'keep me');
});

test('refuses a socket directory others may write without the sticky bit, naming it, its owner and mode; binds nothing', async () => {
  const open = join(dir, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  await assert.rejects(startAdminServer({ socketPath: join(open, 'api.sock'), services, logger: silentLogger }), (err: Error) => {
    assert.match(err.message, /admin socket directory .*open is not safe to use: .*open is writable by group or others without the sticky bit \(owner uid \d+, mode 0777\)/);
    return true;
  });
  assert.deepEqual(readdirSync(open), []);
});
