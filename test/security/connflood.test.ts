// Connection flood against a real spindle-agent: processes running as another uid (65534) open
// thousands of connections to the Workload API socket and send nothing, while a client running
// as root (this process) keeps connecting and calling. Asserts the per-process and per-uid
// connection limits close the flood's connections beyond them at accept (the flooder never holds
// more than its uid's share), the idle timeout closes the admitted ones, the canary's calls all
// succeed on fresh connections, and its open stream outlives the idle timeout.
import { credentials, Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { SpiffeWorkloadAPIClient } from '../../proto/gen/workload/workload.js';
import { generateJoinToken, startAgentProcess, type AgentProcess } from '../support/agentproc.js';
import { freePort, startServerProcess, type ServerProcess } from '../support/serverproc.js';
import { needsRoot } from '../support/otheruid.js';
import { scrapeMetrics } from '../support/metrics.js';

const NOBODY = 65534;
/** Python from the system, reachable by uid 65534 (not a per-user install under /root). */
const PYTHON = '/usr/bin/python3';
const FLOOD_PROCESSES = 4;
const CONNS_PER_PROCESS = 1000;
const MAX_CONNS = 3000;
const MAX_CONNS_PER_UID = 1000;
const MAX_CONNS_PER_PID = 400;
/** Long enough for all flood processes to connect before the first admitted ones time out. */
const IDLE_TIMEOUT_S = 20;
/**
 * How long the flooders wait for the idle timeout to close their admitted connections: grpc-js
 * closes an idle connection between one and two timeouts after its last activity (its timer
 * re-arms when it fires a little early).
 */
const IDLE_WAIT_S = 2 * IDLE_TIMEOUT_S + 20;

/**
 * The flooder: opens `n` connections (blocking connect: it waits in the accept queue rather than
 * failing), sends nothing, and classifies each: ADMITTED when the agent's HTTP/2 SETTINGS frame
 * arrives (the connection reached gRPC), REFUSED when it ends before any byte. Prints one JSON
 * line once every connection is classified, waits for the "go" line on stdin, then waits until the
 * admitted ones are closed (idle timeout) or `hold` seconds pass, prints a second line, and keeps
 * every socket open (it never closes one) until it is killed.
 */
const FLOODER = String.raw`
import json, select, socket, sys, time
path, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
socks, connect_errors = {}, 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        connect_errors += 1
        s.close()
        continue
    s.setblocking(False)
    socks[s.fileno()] = s
poller = select.poll()
for fd in socks:
    poller.register(fd, select.POLLIN)
got_bytes, closed = set(), {}
def pump(ms):
    for fd, _ in poller.poll(ms):
        try:
            data = socks[fd].recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            data = b''
        if data:
            got_bytes.add(fd)
        else:
            closed[fd] = time.monotonic()
            poller.unregister(fd)
deadline = time.monotonic() + 60
while time.monotonic() < deadline and any(fd not in got_bytes and fd not in closed for fd in socks):
    pump(200)
admitted = [fd for fd in socks if fd in got_bytes]
refused = [fd for fd in socks if fd in closed and fd not in got_bytes]
print(json.dumps({"admitted": len(admitted), "refused": len(refused), "unclassified": len(socks) - len(admitted) - len(refused), "connectErrors": connect_errors, "seconds": round(time.monotonic() - t0, 2)}), flush=True)
sys.stdin.readline()
start = time.monotonic()
while time.monotonic() - start < hold and any(fd not in closed for fd in admitted):
    pump(200)
idle = [closed[fd] - t0 for fd in admitted if fd in closed]
print(json.dumps({"stillOpen": sum(1 for fd in admitted if fd not in closed), "idleClosedAfter": [round(min(idle), 1), round(max(idle), 1)] if idle else []}), flush=True)
sys.stdin.readline()
`;

interface Classified {
  admitted: number;
  refused: number;
  unclassified: number;
  connectErrors: number;
  /** From the flooder's start until every connection was classified. */
  seconds: number;
}

interface Flooder {
  classified: Promise<Classified>;
  /** Lets the flooder go on to wait for the idle timeout; resolves with its connections still open at the end. */
  finish(): Promise<number>;
  kill(): void;
}

function startFlooder(socketPath: string): Flooder {
  const child = spawn(PYTHON, ['-c', FLOODER, socketPath, String(CONNS_PER_PROCESS), String(IDLE_WAIT_S)], {
    uid: NOBODY,
    gid: NOBODY,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async <T>(): Promise<T> => {
    const r = await lines.next();
    if (r.done) throw new Error(`flooder ended early: ${stderr}`);
    return JSON.parse(r.value) as T;
  };
  const classified = next<Classified>();
  return {
    classified,
    async finish() {
      child.stdin.write('go\n');
      const end = await next<{ stillOpen: number; idleClosedAfter: number[] }>();
      console.log(`# flooder: admitted connections closed ${JSON.stringify(end.idleClosedAfter)} s after it started`);
      return end.stillOpen;
    },
    kill: () => void child.kill('SIGKILL'),
  };
}

let server: ServerProcess;
let agent: AgentProcess;
let metricsPort: number;

before(async () => {
  needsRoot('flooding the socket as uid 65534');
  server = await startServerProcess();
  metricsPort = await freePort();
  const config = join(server.dir, 'agent-conns.yaml');
  writeFileSync(
    config,
    [
      'agent:',
      `  workload_api_max_conns: ${MAX_CONNS}`,
      `  workload_api_max_conns_per_uid: ${MAX_CONNS_PER_UID}`,
      `  workload_api_max_conns_per_pid: ${MAX_CONNS_PER_PID}`,
      `  workload_api_idle_timeout: ${IDLE_TIMEOUT_S}s`,
      'telemetry:',
      '  Prometheus:',
      '    host: 127.0.0.1',
      `    port: ${metricsPort}`,
      '',
    ].join('\n'),
  );
  const joinToken = generateJoinToken(server);
  // INFO: a debug line per accepted connection would only slow the agent down here.
  agent = await startAgentProcess({ server, joinToken, extraArgs: ['-config', config, '-logLevel', 'INFO'] });
  const agentId = `spiffe://${server.trustDomain}/spire/agent/join_token/${joinToken}`;
  const created = server.cli(['entry', 'create', '-parentID', agentId, '-spiffeID', `spiffe://${server.trustDomain}/canary`, '-selector', `unix:uid:${process.getuid!()}`]);
  assert.equal(created.status, 0, created.stderr);
});

after(async () => {
  await agent?.stop();
  await server?.stop();
  if (agent) rmSync(agent.dir, { recursive: true, force: true });
  if (server) rmSync(server.dir, { recursive: true, force: true });
});

const metrics = (): Promise<string> => scrapeMetrics(metricsPort);

function metric(text: string, name: string, labels: string[] = []): number {
  const line = text.split('\n').find((l) => l.startsWith(name) && labels.every((x) => l.includes(x)));
  assert.ok(line, `${name}{${labels.join(',')}} in /metrics`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

function headers(): Metadata {
  const md = new Metadata();
  md.set('workload.spiffe.io', 'true');
  return md;
}

/** A client on its own connection (grpc-js would otherwise share one subchannel among clients). */
function freshClient(): SpiffeWorkloadAPIClient {
  return new SpiffeWorkloadAPIClient(`unix:${agent.socketPath}`, credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
}

/** Root's well-behaved client: a new connection and a FetchJWTSVID every `intervalMs` until stopped. */
function startCanary(intervalMs = 100): { stop(): Promise<{ calls: number; errors: string[] }> } {
  let running = true;
  let calls = 0;
  const errors: string[] = [];
  const loop = (async () => {
    while (running) {
      const client = freshClient();
      const err = await new Promise<ServiceError | null>((resolve) =>
        client.fetchJwtsvid({ audience: ['canary'], spiffeId: '' }, headers(), { deadline: Date.now() + 10_000 }, (e) => resolve(e)),
      );
      client.close();
      calls++;
      if (err) errors.push(`${GrpcStatus[err.code]}: ${err.details}`);
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { calls, errors };
    },
  };
}

test('a uid flooding the socket with idle connections holds at most its share; they time out; a root canary keeps being served', async () => {
  // Root's long-lived stream: its connection is never idle, whatever the timeout.
  const streamClient = freshClient();
  const stream = streamClient.fetchX509Svid({}, headers());
  let streamMessages = 0;
  let streamEnded: string | undefined;
  stream.on('data', () => streamMessages++);
  stream.on('error', (e: ServiceError) => (streamEnded ??= `${GrpcStatus[e.code]}: ${e.details}`));
  stream.on('end', () => (streamEnded ??= 'end'));

  const canary = startCanary();
  const flooders: Flooder[] = [];
  try {
    // One flooder after the other, each holding its connections: the first ones meet the
    // per-process limit, the later ones the per-uid limit.
    const classified: Classified[] = [];
    for (let i = 0; i < FLOOD_PROCESSES; i++) {
      const f = startFlooder(agent.socketPath);
      flooders.push(f);
      classified.push(await f.classified);
    }
    const during = await metrics();
    console.log(`# flood: ${JSON.stringify(classified)}`);
    for (const c of classified) {
      assert.equal(c.connectErrors, 0, 'connects wait in the accept queue instead of failing');
      assert.equal(c.unclassified, 0, 'every flood connection was either served or closed at accept');
      assert.ok(c.admitted <= MAX_CONNS_PER_PID, `one process holds at most ${MAX_CONNS_PER_PID} connections, got ${c.admitted}`);
    }
    const admitted = classified.reduce((n, c) => n + c.admitted, 0);
    const refused = classified.reduce((n, c) => n + c.refused, 0);
    assert.equal(admitted, MAX_CONNS_PER_UID, 'the flooding uid holds exactly its share');
    assert.equal(refused, FLOOD_PROCESSES * CONNS_PER_PROCESS - MAX_CONNS_PER_UID);
    assert.equal(classified[0]!.admitted, MAX_CONNS_PER_PID, 'the first flooder meets the per-process limit');
    assert.equal(classified[FLOOD_PROCESSES - 1]!.admitted, 0, 'the last flooder finds its uid at its limit');
    const byScope = (scope: string): number => metric(during, 'spindle_agent_workload_api_refused_total{', ['api="socket"', 'reason="connections"', `scope="${scope}"`]);
    assert.ok(byScope('process') > 0 && byScope('uid') > 0, 'refusals by both limits are counted');
    assert.equal(byScope('process') + byScope('uid'), refused, 'every refused flood connection is counted');
    const open = metric(during, 'spindle_agent_workload_api_open_connections');
    assert.ok(open >= MAX_CONNS_PER_UID && open <= MAX_CONNS_PER_UID + 5, `open connections: the flood's share and the canary's, got ${open}`);

    // The admitted flood connections sent nothing: the idle timeout closes every one of them.
    const stillOpen = await Promise.all(flooders.map((f) => f.finish()));
    assert.deepEqual(stillOpen, stillOpen.map(() => 0), `flood connections still open ${IDLE_WAIT_S} s after the flood: ${stillOpen.join(', ')}`);
    // The flooders still hold their ends (they never close a socket): the agent must not wait for them.
    let afterIdle = Infinity;
    for (let i = 0; i < 100 && afterIdle > 5; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 100));
      afterIdle = metric(await metrics(), 'spindle_agent_workload_api_open_connections');
    }
    assert.ok(afterIdle <= 5, `after the idle timeout only the canary's connections are open, got ${afterIdle}`);
  } finally {
    for (const f of flooders) f.kill();
    const stats = await canary.stop();
    console.log(`# canary: ${stats.calls} calls, errors: ${JSON.stringify(stats.errors.slice(0, 5))}`);
    assert.deepEqual(stats.errors, [], 'every canary call on a fresh connection succeeded during the flood');
    assert.ok(stats.calls >= 20, `the canary made ${stats.calls} calls`);
    assert.equal(streamEnded, undefined, 'the canary stream survived the idle timeout');
    assert.ok(streamMessages >= 1, 'the canary stream got its SVID');
    stream.cancel();
    streamClient.close();
  }
});
