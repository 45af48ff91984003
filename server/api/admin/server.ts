/**
 * The admin API's gRPC server on a local Unix socket. Filesystem permissions are the
 * authorization (whoever can connect to the socket is an administrator), so:
 * - the parent directory and its ancestors must not be controlled by another local user (owned
 *   by us or root, not writable by others without the sticky bit), else startup fails naming
 *   the directory, its owner and mode; a missing one is created with mode 0700 (chmod after
 *   mkdir: the umask does not matter); an existing one is left as it is (it may be shared, e.g.
 *   /tmp) but one open to group or others is logged;
 * - a stale socket file from a previous run is removed only if it IS a socket and nothing answers
 *   on it; any other file at the path is an error (never deleted);
 * - the socket is bound in a private (0700) staging directory next to the final path, chmod'ed
 *   to 0770 there (owner and group may connect) and renamed into place: at the final path it
 *   never exists with any other mode, so no one connects in a window between bind and chmod.
 * Serves EntryService, AgentService, BundleService, SVIDService, TrustDomainService and grpc.health.v1.Health.
 */
import { Server, ServerCredentials, type ServerInterceptor } from '@grpc/grpc-js';
import { dirname, resolve } from 'node:path';
import { bindSocketInPlace, prepareSocketDirectory, removeSocketFile, removeStaleSocket } from '../../../common/unixsocket.js';
import { HealthService } from '../../../proto/gen/grpc/health/v1/health.js';
import {
  AgentServiceClient,
  AgentServiceService,
  BundleServiceClient,
  BundleServiceService,
  EntryServiceClient,
  EntryServiceService,
  SVIDServiceClient,
  SVIDServiceService,
  TrustDomainServiceClient,
  TrustDomainServiceService,
} from '../../../proto/gen/spindle/admin/v1/admin.js';
import { createHealthService } from './health.js';
import { ADMIN_SOCKET } from '../../errors.js';
import type { AdminServices } from './service.js';
import type { ApiLogger } from './types.js';

export const ADMIN_SOCKET_MODE = 0o770;
export const ADMIN_SOCKET_DIR_MODE = 0o700;

export interface AdminServerOptions {
  socketPath: string;
  services: AdminServices;
  logger: ApiLogger;
  /** Counts and times every RPC (server/metrics.ts). */
  metrics?: { grpcInterceptor(): ServerInterceptor };
}

export interface AdminServer {
  /** The absolute socket path listened on. */
  readonly socketPath: string;
  /** Stops accepting calls, waits briefly for running ones, closes the socket and removes it. */
  close(): Promise<void>;
}

const SHUTDOWN_GRACE_MS = 5000;

function prepareDirectory(dir: string, log: ApiLogger): void {
  const existing = prepareSocketDirectory(dir, ADMIN_SOCKET_DIR_MODE, 'admin socket');
  if (existing !== undefined && (existing.mode & 0o007) !== 0) {
    log.warn(
      { dir, mode: (existing.mode & 0o777).toString(8) },
      'admin socket directory is accessible to others; the socket itself is 0770, but a private directory (0700) is safer',
    );
  }
}

function bind(server: Server, target: string): Promise<void> {
  return new Promise((ok, fail) => {
    server.bindAsync(target, ServerCredentials.createInsecure(), (err) => (err ? fail(err) : ok()));
  });
}

export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const log = options.logger.child({ component: 'admin_server' });
  const socketPath = resolve(options.socketPath);
  prepareDirectory(dirname(socketPath), log);
  await removeStaleSocket(socketPath, ADMIN_SOCKET);

  const server = new Server({ interceptors: options.metrics ? [options.metrics.grpcInterceptor()] : [] });
  const { services } = options;
  server.addService(EntryServiceService, services.entry);
  server.addService(AgentServiceService, services.agent);
  server.addService(BundleServiceService, services.bundle);
  server.addService(SVIDServiceService, services.svid);
  server.addService(TrustDomainServiceService, services.trustDomain);
  server.addService(
    HealthService,
    createHealthService([
      EntryServiceClient.serviceName,
      AgentServiceClient.serviceName,
      BundleServiceClient.serviceName,
      SVIDServiceClient.serviceName,
      TrustDomainServiceClient.serviceName,
    ]),
  );
  try {
    await bindSocketInPlace(socketPath, ADMIN_SOCKET_MODE, (staging) => bind(server, `unix:${staging}`));
  } catch (err) {
    server.forceShutdown();
    throw new Error(`cannot listen on the admin socket ${socketPath}: ${(err as Error).message}`, { cause: err });
  }
  log.info({ socketPath }, 'admin API listening');

  let closing: Promise<void> | undefined;
  return {
    socketPath,
    close(): Promise<void> {
      closing ??= new Promise<void>((done) => {
        const timer = setTimeout(() => server.forceShutdown(), SHUTDOWN_GRACE_MS);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          removeSocketFile(socketPath);
          log.info({ socketPath }, 'admin API stopped');
          done();
        });
      });
      return closing;
    },
  };
}
