// Interop of the Node SDK's TLS helpers (spiffe/sdk/tlsconfig.ts) with TLS stacks we did not
// write, using X509-SVIDs from real spindle-server and spindle-agent processes: two workloads
// registered for this uid, written as PEM by `spindle-agent api fetch x509 -write` (the files a
// user would hand to other tools). Peers: OpenSSL's s_server and s_client, and Python's ssl
// module (test/interop/tls_peer.py), each in both directions: accepted and exchanging data when
// authorized, refused with the typed reason when not. Missing openssl or python3 is a failure,
// not a skip: CI installs them (.ci/run).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as tls from 'node:tls';
import { ErrorCode, isSpiffeError, type SpiffeError } from '../../spiffe/errors.js';
import { authorizeID, peerIdOf, tlsconfig, X509Source } from '../../spiffe/sdk/index.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { agentBin, freePort, repoRoot, startServerProcess, type ServerProcess } from '../support/serverproc.js';

const TD = 'example.org';
const ALIAS = `spiffe://${TD}/interop/tls-node`;
const MY_UID = process.getuid!();
const ID_A = `spiffe://${TD}/interop/tls-a`;
const ID_B = `spiffe://${TD}/interop/tls-b`;
const ID_OTHER = `spiffe://${TD}/interop/tls-other`;
const PEER = join(repoRoot, 'test', 'interop', 'tls_peer.py');
const CHILD_TIMEOUT_MS = 30_000;

let server: ServerProcess;
let agent: AgentProcess;
let work: string;
let svidDir: string;
/** PEM files per SPIFFE ID, as `api fetch x509 -write` named them. */
const files = new Map<string, { cert: string; key: string }>();
let bundleFile: string;
let srcA: X509Source;
let srcB: X509Source;
const closers: Array<() => void> = [];

// Child processes: every one bounded by a timer, and killed when the test process ends.
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

interface Child {
  proc: ChildProcess;
  out(): string;
  err(): string;
  /** Resolves with the first stdout match of `re` (rejects on exit or after `ms`). */
  waitFor(re: RegExp, ms?: number): Promise<RegExpMatchArray>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startChild(cmd: string, args: string[], input?: string): Child {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  proc.stdin!.on('error', () => {});
  if (input !== undefined) proc.stdin!.end(input);
  const timer = setTimeout(() => proc.kill('SIGKILL'), CHILD_TIMEOUT_MS);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('error', (e) => {
      err += String(e);
      clearTimeout(timer);
      children.delete(proc);
      resolve({ code: null, signal: null });
    });
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(proc);
      resolve({ code, signal });
    });
  });
  return {
    proc,
    out: () => out,
    err: () => err,
    exited,
    waitFor: (re, ms = 20_000) =>
      new Promise((resolve, reject) => {
        const check = (): boolean => {
          const m = re.exec(out);
          if (m) {
            clearInterval(poll);
            clearTimeout(t);
            resolve(m);
          }
          return m !== null;
        };
        const poll = setInterval(check, 20);
        const t = setTimeout(() => {
          clearInterval(poll);
          reject(new Error(`${cmd} ${args.join(' ')}: no ${re} on stdout within ${ms} ms\nstdout: ${out}\nstderr: ${err}`));
        }, ms);
        void exited.then(() => {
          if (!check()) {
            clearInterval(poll);
            clearTimeout(t);
            reject(new Error(`${cmd} exited before ${re}\nstdout: ${out}\nstderr: ${err}`));
          }
        });
      }),
  };
}

function ok(r: { status: number | null; stdout: string; stderr: string }, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

function assertTyped(err: unknown, code: string, reason: string): asserts err is SpiffeError {
  assert.ok(isSpiffeError(err), `expected a SpiffeError ${code} ${reason}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.equal(err.reason, reason, err.message);
}

/** The python3 that runs tls_peer.py (only the standard library's ssl is needed). */
function python(): string {
  for (const c of [process.env['SPINDLE_PYTHON'], '/usr/bin/python3', 'python3'].filter((x): x is string => !!x)) {
    if (spawnSync(c, ['-c', 'import ssl'], { timeout: 20_000 }).status === 0) return c;
  }
  assert.fail('no python3 with the ssl module (CI installs python3: .ci/run)');
}

/** Reads until the peer closes (bounded by the peer's own timeout and CHILD_TIMEOUT_MS). */
async function readAll(s: tls.TLSSocket): Promise<string> {
  let out = '';
  s.on('data', (d: Buffer) => (out += d.toString()));
  const t = setTimeout(() => s.destroy(new Error('readAll: no close within the bound')), CHILD_TIMEOUT_MS);
  try {
    await once(s, 'close');
  } finally {
    clearTimeout(t);
  }
  return out;
}

/** A library mTLS server (SVID A) accepting only `allowed`: greets with the peer ID, echoes one line, closes. */
async function libraryServer(allowed: string): Promise<{ port: number; received: string[]; rejected: unknown[] }> {
  const received: string[] = [];
  const rejected: unknown[] = [];
  const s = tlsconfig.createMtlsServer(srcA, srcA, authorizeID(allowed), (socket) => {
    socket.on('error', () => {});
    socket.write(`hello ${peerIdOf(socket)}\n`);
    socket.once('data', (d: Buffer) => {
      received.push(d.toString());
      socket.end(d);
    });
  });
  s.on('spiffeRejected', (err) => rejected.push(err));
  s.on('tlsClientError', () => {});
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  closers.push(() => s.close());
  return { port: (s.address() as AddressInfo).port, received, rejected };
}

before(async () => {
  server = await startServerProcess({ trustDomain: TD });
  const token = generateJoinToken(server, ALIAS);
  for (const id of [ID_A, ID_B]) ok(server.cli(['entry', 'create', '-parentID', ALIAS, '-spiffeID', id, '-selector', `unix:uid:${MY_UID}`]), `entry create ${id}`);
  agent = await startAgentProcess({ server, joinToken: token });

  // The PEM files, by the agent's own CLI, in a fresh directory it creates 0700 (keys 0600).
  work = mkdtempSync(join(tmpdir(), 'spindle-sdk-tls-'));
  svidDir = join(work, 'svids');
  let attempt = 0;
  for (; attempt < 20; attempt++) {
    rmSync(svidDir, { recursive: true, force: true });
    const r = spawnSync(agentBin, ['api', 'fetch', 'x509', '-socketPath', agent.socketPath, '-write', svidDir], { encoding: 'utf8', timeout: 20_000 });
    if (r.status === 0 && readdirSync(svidDir).filter((f) => /^svid\.\d+\.pem$/.test(f)).length === 2) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  for (const f of readdirSync(svidDir).filter((n) => /^svid\.\d+\.pem$/.test(n))) {
    const leaf = new X509Certificate(readFileSync(join(svidDir, f)));
    const uri = /URI:(\S+?)(,|$)/.exec(leaf.subjectAltName ?? '')?.[1];
    files.set(uri ?? f, { cert: join(svidDir, f), key: join(svidDir, f.replace(/\.pem$/, '.key')) });
  }
  bundleFile = join(svidDir, 'bundle.0.pem');
  console.log(`# api fetch x509 -write: ${files.size} SVIDs after ${attempt + 1} attempt(s), ${readFileSync(files.get(ID_A)?.cert ?? bundleFile, 'utf8').split('BEGIN CERTIFICATE').length - 1} certificate(s) in svid PEM`);

  const sourceFor = (id: string): Promise<X509Source> =>
    X509Source.create({
      socketPath: agent.socketPath,
      timeoutMs: 20_000,
      picker: (svids) => {
        const s = svids.find((v) => v.id === id);
        if (s === undefined) throw new Error(`the agent sent no SVID for ${id}`);
        return s;
      },
    });
  srcA = await sourceFor(ID_A);
  srcB = await sourceFor(ID_B);
});

after(async () => {
  for (const c of closers) c();
  for (const c of children) c.kill('SIGKILL');
  srcA?.close();
  srcB?.close();
  await agent?.stop();
  await server?.stop();
  if (!process.env['SPINDLE_E2E_KEEP']) for (const d of [work, agent?.dir, server?.dir]) if (d) rmSync(d, { recursive: true, force: true });
});

test('the agent wrote both SVIDs as PEM: keys 0600 in a 0700 directory; openssl verifies them against the bundle', () => {
  assert.deepEqual([...files.keys()].sort(), [ID_A, ID_B]);
  assert.equal(statSync(svidDir).mode & 0o777, 0o700);
  for (const [id, f] of files) {
    assert.equal(statSync(f.key).mode & 0o777, 0o600, `${id} key mode`);
    assert.match(ok(spawnSync('openssl', ['verify', '-CAfile', bundleFile, f.cert], { encoding: 'utf8', timeout: 20_000 }), 'openssl verify'), /: OK/);
  }
  assert.equal(srcA.getX509Svid().id, ID_A);
  assert.equal(srcB.getX509Svid().id, ID_B);
});

describe('OpenSSL', () => {
  test('s_server (mTLS, SVID A, -Verify against the bundle) <- library client: exchange when it expects A, typed id_mismatch when it expects another ID', async () => {
    const port = await freePort();
    const a = files.get(ID_A)!;
    const s = startChild('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', a.cert, '-key', a.key, '-CAfile', bundleFile, '-Verify', '1', '-verify_return_error', '-rev', '-naccept', '2']);
    await s.waitFor(/ACCEPT/);

    const sock = await tlsconfig.dialMtls({ host: '127.0.0.1', port }, srcB, srcB, authorizeID(ID_A), { timeoutMs: 20_000 });
    assert.equal(peerIdOf(sock), ID_A);
    sock.write('hello from node\n');
    const reply = await new Promise<string>((resolve, reject) => {
      let buf = '';
      sock.on('data', (d: Buffer) => {
        buf += d.toString();
        if (buf.includes('\n')) resolve(buf);
      });
      sock.once('error', reject);
      sock.once('close', () => reject(new Error(`closed after ${JSON.stringify(buf)}; s_server: ${s.out()} ${s.err()}`)));
    });
    assert.equal(reply.trim(), 'edon morf olleh', 's_server accepted our SVID B and echoed (reversed)');
    sock.destroy();

    await assert.rejects(tlsconfig.dialMtls({ host: '127.0.0.1', port }, srcB, srcB, authorizeID(ID_OTHER), { timeoutMs: 20_000 }), (err) => {
      assertTyped(err, ErrorCode.UNAUTHORIZED, 'id_mismatch');
      assert.match(err.message, /tls-a/);
      return true;
    });
    const { code } = await s.exited;
    assert.equal(code, 0, `s_server ended after its two connections:\n${s.out()}\n${s.err()}`);
    assert.doesNotMatch(s.out() + s.err(), /verify error/i);
  });

  test('s_client (SVID B, -CAfile bundle) -> library mTLS server: accepted and echoed when authorized; refused (spiffeRejected id_mismatch) when not', async () => {
    const lib = await libraryServer(ID_B);
    const b = files.get(ID_B)!;
    const c = startChild('openssl', ['s_client', '-connect', `127.0.0.1:${lib.port}`, '-cert', b.cert, '-key', b.key, '-CAfile', bundleFile, '-verify_return_error', '-brief', '-ign_eof'], 'ping\n');
    await c.exited;
    assert.equal(c.out(), `hello ${ID_B}\nping\n`, `s_client stderr:\n${c.err()}`);
    assert.match(c.err(), /Verification: OK/, 's_client verified the library server\'s SVID against the bundle');
    assert.deepEqual(lib.received, ['ping\n']);

    const a = files.get(ID_A)!;
    const refused = startChild('openssl', ['s_client', '-connect', `127.0.0.1:${lib.port}`, '-cert', a.cert, '-key', a.key, '-CAfile', bundleFile, '-verify_return_error', '-brief', '-ign_eof'], 'secret\n');
    await refused.exited;
    assert.equal(refused.out(), '', 'the refused client got nothing');
    assert.equal(lib.rejected.length, 1);
    assertTyped(lib.rejected[0], ErrorCode.UNAUTHORIZED, 'id_mismatch');
    assert.deepEqual(lib.received, ['ping\n'], 'the handler never saw the refused client');
  });
});

describe('Python ssl (tls_peer.py)', () => {
  test('python server (SVID A, CERT_REQUIRED) <- library client: exchange when it expects A, typed id_mismatch when it expects another ID', async () => {
    const a = files.get(ID_A)!;
    const py = startChild(python(), [PEER, 'server', '--cert', a.cert, '--key', a.key, '--ca', bundleFile, '--expect-id', ID_B, '--accept', '2', '--timeout', '20']);
    const port = Number((await py.waitFor(/\{"port": (\d+)\}/))[1]);

    const sock = await tlsconfig.dialMtls(`127.0.0.1:${port}`, srcB, srcB, authorizeID(ID_A), { timeoutMs: 20_000 });
    assert.equal(peerIdOf(sock), ID_A);
    sock.write('hello from node\n');
    assert.equal(await readAll(sock), `python ${ID_B} hello from node\n`);

    await assert.rejects(tlsconfig.dialMtls(`127.0.0.1:${port}`, srcB, srcB, authorizeID(ID_OTHER), { timeoutMs: 20_000 }), (err) => (assertTyped(err, ErrorCode.UNAUTHORIZED, 'id_mismatch'), true));
    const { code } = await py.exited;
    assert.equal(code, 0, py.err());
    const conns = py.out().trim().split('\n').slice(1).map((l) => JSON.parse(l) as { peer: string | null; received: string; error: string | null });
    assert.equal(conns.length, 2, py.out());
    assert.deepEqual(conns[0], { peer: ID_B, received: 'hello from node\n', error: null }, 'Python verified our SVID B and got the line');
    assert.equal(conns[1]!.received, '', 'the refused Python server received no application data');
  });

  test('python client (SVID B) -> library mTLS server: accepted and echoed when authorized; refused (spiffeRejected id_mismatch) when not', async () => {
    const lib = await libraryServer(ID_B);
    const b = files.get(ID_B)!;
    const c = startChild(python(), [PEER, 'client', '--cert', b.cert, '--key', b.key, '--ca', bundleFile, '--port', String(lib.port), '--expect-id', ID_A, '--send', 'ping', '--timeout', '20']);
    await c.exited;
    assert.deepEqual(JSON.parse(c.out().trim()), { peer: ID_A, received: `hello ${ID_B}\nping\n`, error: null }, c.err());
    assert.deepEqual(lib.received, ['ping\n']);

    const a = files.get(ID_A)!;
    const refused = startChild(python(), [PEER, 'client', '--cert', a.cert, '--key', a.key, '--ca', bundleFile, '--port', String(lib.port), '--expect-id', ID_A, '--send', 'secret', '--timeout', '20']);
    await refused.exited;
    const r = JSON.parse(refused.out().trim()) as { peer: string | null; received: string };
    assert.equal(r.received, '', `the refused Python client got nothing: ${refused.out()} ${refused.err()}`);
    assert.equal(lib.rejected.length, 1);
    assertTyped(lib.rejected[0], ErrorCode.UNAUTHORIZED, 'id_mismatch');
    assert.deepEqual(lib.received, ['ping\n'], 'the handler never saw the refused client');
  });
});
