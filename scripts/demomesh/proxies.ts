/**
 * The sidecars of `npm run demo:mesh -- --proxy` (scripts/demomesh.ts): a spindle-proxy per
 * service, `bin/spindle-proxy run -config <dir>/proxy/<service>.yaml`, started by the runner with
 * the service's identity (its uid, or its own node link), so the agent attests the proxy process
 * and gives it the service's SVID. The plain services (plainservice.ts) speak HTTP to 127.0.0.1
 * only:
 *
 *   frontend ─HTTP─▶ frontend proxy: outbound "payments" ══mTLS══▶ payments proxy: inbound "payments-in" ─HTTP─▶ payments
 *   payments ─HTTP─▶ payments proxy: outbound "database" ══mTLS══▶ database proxy: inbound "database-in" ─HTTP─▶ database
 *   frontend ─HTTP─▶ frontend proxy: outbound "database" ══mTLS══▶ database proxy: 403 by the access policy
 *
 * Inbound listeners are `http: true`: decided per request, the caller in x-forwarded-client-cert.
 * payments-in allows frontend (`allow:`); database-in uses the policy file
 * scripts/demomesh/database-policy.yaml. Outbound listeners expect the target's SPIFFE ID.
 * Here: the config each proxy gets, and reading its /metrics and access log for the summary.
 */
import { get } from 'node:http';
import { readFileSync } from 'node:fs';
import { ACCEPTS, CALLS, idOf, type ServiceName } from './mesh.js';

/** The access policy file of the database's inbound listener (in the checkout, read at start). */
export const DATABASE_POLICY = 'scripts/demomesh/database-policy.yaml';

/** Ports of one service's proxy (outbound: by target name). */
export interface ProxyPorts {
  admin: number;
  inbound?: number;
  outbound: Partial<Record<ServiceName, number>>;
}

export function inboundName(name: ServiceName): string {
  return `${name}-in`;
}

/**
 * The YAML config of `name`'s proxy: an inbound listener when the service has a server (to
 * `servicePort`), an outbound one per service it calls (to that service's inbound listener).
 */
export function proxyConfig(name: ServiceName, ports: Map<ServiceName, ProxyPorts>, servicePort: number | null, socketPath: string, policyFile: string): string {
  const mine = ports.get(name)!;
  const lines = [
    `# spindle-proxy of ${idOf(name)} (npm run demo:mesh -- --proxy)`,
    `socket_path: ${socketPath}`,
    `admin: 127.0.0.1:${mine.admin}`,
    'log_format: json',
    'listeners:',
  ];
  if (ACCEPTS[name].length > 0) {
    lines.push(`  - name: ${inboundName(name)}`, '    mode: inbound', `    listen: 127.0.0.1:${mine.inbound}`, `    forward: 127.0.0.1:${servicePort}`, '    http: true');
    if (name === 'database') lines.push(`    policy: ${policyFile}`);
    else lines.push(`    allow: [${ACCEPTS[name].map(idOf).join(', ')}]`);
  }
  for (const c of CALLS.filter((x) => x.from === name)) {
    lines.push(`  - name: ${c.to}`, '    mode: outbound', `    listen: 127.0.0.1:${mine.outbound[c.to]}`, `    connect: 127.0.0.1:${ports.get(c.to)!.inbound}`, `    expect: ${idOf(c.to)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** GET http://127.0.0.1:<port><path>: status and body (5 s timeout). */
export function adminGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 5 s')));
    req.on('error', reject);
  });
}

/** One sample of a Prometheus text exposition. */
export interface Sample {
  metric: string;
  labels: Record<string, string>;
  value: number;
  /** The line as scraped. */
  line: string;
}

export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ metric: m[1]!, labels, value: Number(m[3]), line });
  }
  return out;
}

/** The access log lines of a proxy's stdout file, parsed and as written (other lines are skipped). */
export function readAccessLog(file: string): { entry: Record<string, unknown>; line: string }[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const out: { entry: Record<string, unknown>; line: string }[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const o = JSON.parse(line) as Record<string, unknown>;
      if (o['log'] === 'access') out.push({ entry: o, line });
    } catch {
      // not an access log line
    }
  }
  return out;
}
