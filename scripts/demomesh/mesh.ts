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
  failed: number;
}

/** What a service reports when it stops. */
export interface ServiceStats {
  /** Outgoing calls by target name: `ok` = answered 200, `failed` = anything else. */
  calls: Record<string, CallStats>;
  /** Requests served, by caller SPIFFE ID. */
  served: Record<string, number>;
  /** Clients refused by the server, by `code reason`. */
  refused: Record<string, number>;
  /** SVID changes after the first one. */
  rotations: number;
}

/** Service -> runner. */
export type ServiceMessage = { type: 'ready'; port: number | null } | { type: 'stats'; stats: ServiceStats };
/** Runner -> service. */
export type RunnerMessage = { type: 'stop' };
