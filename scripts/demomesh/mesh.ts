/**
 * The mesh of `npm run demo:mesh` (scripts/demomesh.ts), shared by the runner and the services
 * (scripts/demomesh/service.ts): three services, who may call whom, and the messages the
 * services send their runner over the IPC channel.
 *
 *   frontend --> payments --> database
 *   frontend -----------X---> database   (refused by the database)
 */
export const TRUST_DOMAIN = 'example.org';

/** In start order: a service starts after the ones it calls. */
export const SERVICES = ['database', 'payments', 'frontend'] as const;
export type ServiceName = (typeof SERVICES)[number];

export function idOf(name: ServiceName): string {
  return `spiffe://${TRUST_DOMAIN}/${name}`;
}

/** The callers a service's server accepts (none: it runs no server). */
export const ACCEPTS: Record<ServiceName, readonly ServiceName[]> = {
  database: ['payments'],
  payments: ['frontend'],
  frontend: [],
};

/** Every call the mesh makes: `allowed` ones must all succeed, the others must all be refused. */
export const CALLS: readonly { from: ServiceName; to: ServiceName; allowed: boolean }[] = [
  { from: 'frontend', to: 'payments', allowed: true },
  { from: 'payments', to: 'database', allowed: true },
  { from: 'frontend', to: 'database', allowed: false },
];

/** What a caller counted for one target. */
export interface CallStats {
  ok: number;
  /** Anything else than the expected outcome (with `--proxy`: anything but 200 and the policy's 403). */
  failed: number;
  /** `--proxy` only: answered 403 by the target's proxy (its access policy refused the request). */
  forbidden?: number;
}

/** What a service reports when it stops. */
export interface ServiceStats {
  /** Outgoing calls by target name: `ok` = answered 200, `failed` = anything else. */
  calls: Record<string, CallStats>;
  /** Requests served, by caller SPIFFE ID. */
  served: Record<string, number>;
  /** Clients refused by the server, by `code reason` (`--proxy`: none, the proxy refuses them). */
  refused: Record<string, number>;
  /** SVID changes after the first one (`--proxy`: 0, the services hold no SVID). */
  rotations: number;
}

/** Service -> runner. */
export type ServiceMessage = { type: 'ready'; port: number | null } | { type: 'stats'; stats: ServiceStats };
/** Runner -> service. */
export type RunnerMessage = { type: 'stop' };

/**
 * A service's command line, shared by service.ts and plainservice.ts:
 * `<name> [--call <name>=<host>:<port>]... [--rate <n>]`.
 */
export function parseServiceArgs(argv: readonly string[], usage: (msg: string) => never): { name: ServiceName; targets: Map<ServiceName, { host: string; port: number }>; rate: number } {
  const name = argv[0] as ServiceName;
  if (!SERVICES.includes(name)) usage(`unknown service ${JSON.stringify(argv[0] ?? '')}`);
  const targets = new Map<ServiceName, { host: string; port: number }>();
  let rate = 2;
  for (let i = 1; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1] ?? ''];
    const call = /^(\w+)=([\d.]+):(\d+)$/.exec(value);
    if (flag === '--call' && call && SERVICES.includes(call[1] as ServiceName)) targets.set(call[1] as ServiceName, { host: call[2]!, port: Number(call[3]) });
    else if (flag === '--rate' && /^\d+(\.\d+)?$/.test(value) && Number(value) > 0 && Number(value) <= 20) rate = Number(value);
    else usage(`bad argument ${flag} ${value}`);
  }
  return { name, targets, rate };
}
