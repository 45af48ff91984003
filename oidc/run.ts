/**
 * `startOidcProvider`: the OIDC Discovery Provider's wiring. Order: logger, key source (the
 * first fetch or push awaited for a bounded time; the listener serves 503 on /keys until keys
 * arrive), the public listener (HTTPS with the serving certificate files, plain HTTP on
 * insecure_addr, or plain HTTP on a Unix socket), the optional health listener. `stop()` closes
 * them in reverse.
 */
import type { Server } from 'node:http';
import { dirname } from 'node:path';
import { startTelemetryListeners, type TelemetryListeners } from '../common/telemetryhttp.js';
import { createLogger } from '../common/logging.js';

type Logger = ReturnType<typeof createLogger>;
import { bindSocketInPlace, prepareSocketDirectory, removeSocketFile, removeStaleSocket } from '../common/unixsocket.js';
import type { OidcConfig } from './config.js';
import { createHandler, createPlainServer, createTlsServer } from './http.js';
import { KeySource, serverApiSource, workloadApiSource } from './keyset.js';
import { Registry } from 'prom-client';

export interface OidcProvider {
  logger: Logger;
  keys: KeySource;
  /** Where it listens: `host:port` or the socket path. */
  address: string;
  stop(): Promise<void>;
}

function listen(server: Server, bind: (cb: () => void) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    bind(() => {
      server.off('error', reject);
      resolve();
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export async function startOidcProvider(config: OidcConfig): Promise<OidcProvider> {
  const logger = createLogger({ level: config.logLevel, format: config.logFormat, file: config.logFile, name: 'spindle-oidc' });
  const keys = new KeySource(config.setKeyUse, logger);
  const src = config.source;
  if (src.kind === 'server_api') await serverApiSource(keys, src.socketPath, src.pollIntervalSeconds);
  else await workloadApiSource(keys, src.socketPath, src.trustDomain);

  const handler = createHandler(config, keys, logger);
  const l = config.listener;
  let server: Server;
  let stopSync = (): void => undefined;
  let address: string;
  let socketPath: string | undefined;
  try {
    if (l.kind === 'tls') {
      const tls = createTlsServer(handler, l, l.fileSyncIntervalSeconds, logger);
      server = tls.server as unknown as Server;
      stopSync = tls.stopSync;
    } else server = createPlainServer(handler);
    if (l.kind === 'socket') {
      socketPath = l.path;
      prepareSocketDirectory(dirname(l.path), 0o755, 'listen_socket_path');
      await removeStaleSocket(l.path, { what: 'listen_socket_path', inUse: (p) => `something already listens on ${p} (another spindle-oidc?)` });
      await bindSocketInPlace(l.path, 0o666, (staging) => listen(server, (cb) => server.listen(staging, cb)));
      address = l.path;
    } else {
      const { host, port } = l.address;
      await listen(server, (cb) => (host === '' ? server.listen(port, cb) : server.listen(port, host, cb)));
      address = `${host === '' ? '0.0.0.0' : host}:${port}`;
    }
  } catch (err) {
    keys.close();
    throw new Error(`cannot listen on ${l.kind === 'socket' ? l.path : `${l.address.host}:${l.address.port}`}: ${(err as Error).message}`);
  }

  let health: TelemetryListeners | undefined;
  if (config.healthChecks !== undefined) {
    const hc = config.healthChecks;
    health = await startTelemetryListeners({
      healthChecks: { listenerEnabled: true, bindAddress: 'localhost', bindPort: hc.bindPort, livePath: hc.livePath, readyPath: hc.readyPath },
      prometheus: undefined,
      registry: new Registry(),
      ready: async () => {
        const s = keys.state;
        return s.body === undefined ? { ready: false, body: { ready: false, reasons: ['no JWT keys yet'] } } : { ready: true, body: { ready: true, kids: s.kids } };
      },
      logger,
    });
  }

  logger.info({ address, scheme: l.kind === 'tls' ? 'https' : 'http', source: src.kind, domains: config.domains }, 'spindle-oidc is ready');
  return {
    logger,
    keys,
    address,
    stop: async () => {
      await health?.close();
      stopSync();
      await close(server);
      if (socketPath !== undefined) removeSocketFile(socketPath);
      keys.close();
      logger.info({}, 'spindle-oidc stopped');
    },
  };
}
