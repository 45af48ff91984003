/**
 * A workload process for the fault tests and the soak command: opens `count` Workload API
 * X509-context watches (SDK clients with reconnect backoff) and reports on stdout, one JSON
 * object per line:
 *   {"t":"update","i":<watch>,"wall":<ms>,"ids":[...],"serials":[...],"notAfter":[ms...],"bundle":<n certs>}
 *   {"t":"error","i":<watch>,"wall":<ms>,"code":<grpc code>,"message":"...","final":bool}
 * With `summary` as the fourth argument, updates are only counted and a line
 *   {"t":"summary","wall":<ms>,"updates":<n>,"errors":<n>,"withIdentity":<watches whose last update had an SVID>,"expired":<SVIDs already expired when received>}
 * is printed every second (errors and expired SVIDs are still printed as they happen).
 * Usage: node watcher.js <unix:///socket> <count> <backoffMs> [summary]. SIGTERM closes everything.
 */
import { X509Certificate } from 'node:crypto';
import { createWorkloadApiClient, type WorkloadApiClient } from '../../../spiffe/workloadapi/index.js';

const [address, countArg, backoffArg, mode] = process.argv.slice(2);
if (!address) {
  console.error('usage: watcher.js <address> <count> <backoffMs> [summary]');
  process.exit(2);
}
const count = Number(countArg ?? '1');
const backoffMs = Number(backoffArg ?? '200');
const summary = mode === 'summary';
const channelBackoff = Number(process.env['WATCHER_CHANNEL_BACKOFF_MS'] ?? '0');
/** Longest wait between retries (the SDK doubles from backoffMs up to this). */
const maxBackoff = Number(process.env['WATCHER_MAX_BACKOFF_MS'] ?? '0') || Math.max(backoffMs, 1000);
const out = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

let updates = 0;
let errors = 0;
let expired = 0;
const hasIdentity = new Array<boolean>(count).fill(false);
const clients: WorkloadApiClient[] = [];
for (let i = 0; i < count; i++) {
  const c = createWorkloadApiClient({ address, backoff: { initialMs: backoffMs, maxMs: Math.max(backoffMs, maxBackoff) },
    ...(channelBackoff > 0 ? { channelOptions: { 'grpc.initial_reconnect_backoff_ms': Math.min(100, channelBackoff), 'grpc.max_reconnect_backoff_ms': channelBackoff } } : {}),
  });
  clients.push(c);
  c.watchX509Context(
    (ctx) => {
      const wall = Date.now();
      updates++;
      hasIdentity[i] = ctx.svids.length > 0;
      const notAfter = ctx.svids.map((s) => Date.parse(new X509Certificate(s.certificates[0]!).validTo));
      const stale = notAfter.filter((n) => n <= wall).length;
      expired += stale;
      if (!summary || stale > 0) {
        out({
          t: 'update',
          i,
          wall,
          ids: ctx.svids.map((s) => s.id.toString()),
          serials: ctx.svids.map((s) => new X509Certificate(s.certificates[0]!).serialNumber),
          notAfter,
          bundle: ctx.bundles.bundles().reduce((n, b) => n + b.x509Authorities().length, 0),
        });
      }
    },
    (err, info) => {
      errors++;
      if (info.final) hasIdentity[i] = false;
      out({ t: 'error', i, wall: Date.now(), code: err.code, message: err.message, final: info.final });
    },
  );
}
// Also keeps the process alive when every watch has ended (a final error): it runs until SIGTERM.
const timer = setInterval(() => {
  if (summary) out({ t: 'summary', wall: Date.now(), updates, errors, withIdentity: hasIdentity.filter(Boolean).length, expired });
}, 1000);
process.on('SIGTERM', () => {
  clearInterval(timer);
  for (const c of clients) c.close();
  setTimeout(() => process.exit(0), 50).unref();
});
