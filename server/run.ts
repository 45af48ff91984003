/**
 * spindle-server's main job: wires the datastore, CA, change feed, node attestors, agent API,
 * admin API and telemetry together, and shuts them down in reverse order.
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { dirname, resolve } from 'node:path';
import { createLogger, routeGrpcLogs } from '../common/logging.js';
import { lockDataDir } from '../common/datadirlock.js';
import { BUNDLE_ENDPOINT_PORT, checkServerCanStart } from './errors.js';
import { PreflightError, describeListenError } from '../common/preflight.js';
import { checkSafeDirectory } from '../common/safedir.js';
import { openDataStore } from './datastore/factory.js';
import { CaManager, caOptionsFromConfig } from './ca/manager.js';
import { loadServerId } from './ca/serverid.js';
import { EntryIndex } from './entries/entryindex.js';
import { AuthorizationCache } from './entries/authcache.js';
import { ChangeFeed } from './entries/feed.js';
import { buildServerNodeAttestors, NODE_ATTESTOR_PLUGINS, type NodeAttestorPlugin } from '../attestors/node/registry.js';
import { AgentApi } from './api/agent/service.js';
import { startAgentApiServer, type AgentApiServer } from './api/agent/server.js';
import { createAdminServices, startAdminServer, type AdminServer } from './api/admin/index.js';
import { startTelemetry, type Telemetry } from './telemetry.js';
import { endpointSpiffeId, startBundleEndpoint, type BundleEndpoint } from './federation/endpoint.js';
import { BundleRefresher } from './federation/refresher.js';
import { FederationMetrics } from './federation/metrics.js';
import { REFRESH_HINT_WARN_BELOW_SECONDS, REFRESH_HINT_WARN_FROM_SECONDS } from './config/federationconfig.js';
import { ServerMetrics } from './metrics.js';
import type { ServerConfig } from './config/config.js';
import { isDataStoreUnavailable, type DataStore } from './datastore/types.js';

export interface RunningServer {
  config: ServerConfig;
  logger: Logger;
  datastore: DataStore;
  ca: CaManager;
  /** This server's metrics (its own Prometheus registry). */
  metrics: ServerMetrics;
  agentApiPort: number;
  /** The SPIFFE bundle endpoint, when federation.bundle_endpoint is configured. */
  bundleEndpoint?: BundleEndpoint;
  /** Stops everything; idempotent. */
  stop(): Promise<void>;
}

/** How often housekeeping runs (expired entries, join tokens, old events). */
const HOUSEKEEPING_MS = 5_000;
/** Change-feed events are kept this long so reconnecting agents and other servers can catch up. */
const EVENT_RETENTION_SECONDS = 24 * 3600;
/**
 * Expired join tokens are kept this long before housekeeping deletes them, so an agent that
 * presents one shortly after it expired is told "expired" rather than "does not exist".
 */
const EXPIRED_JOIN_TOKEN_RETENTION_SECONDS = 3600;

export interface StartServerOptions {
  now?: () => Date;
  logger?: Logger;
  /** The process environment, for attestors that read it (k8s_psat in-cluster credentials). */
  env?: Readonly<Record<string, string | undefined>>;
  /** The node attestors this server may build; default this build's list (tests extend it). */
  nodeAttestors?: readonly NodeAttestorPlugin[];
}

export async function startServer(config: ServerConfig, opts: StartServerOptions = {}): Promise<RunningServer> {
  const now = opts.now ?? (() => new Date());
  // Opens -logFile first: a log file that cannot be opened stops startup before anything else.
  const logger = opts.logger ?? createLogger({ level: config.logLevel, format: config.logFormat, file: config.logFile, name: 'spindle-server' });
  if (!opts.logger) routeGrpcLogs(logger);
  const cleanups: Array<() => Promise<void> | void> = [];
  const stop = async (): Promise<void> => {
    while (cleanups.length > 0) {
      const fn = cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        logger.error({ err }, 'error during shutdown');
      }
    }
  };
  try {
    // Before anything is created: a data or socket directory another local user controls is
    // refused (they could read keys, or replace the admin socket with their own server).
    checkSafeDirectory(config.dataDir, 'server data directory');
    checkSafeDirectory(dirname(resolve(config.socketPath)), 'admin socket directory');
    // And before the CA and datastore are created: every setting that can fail later is checked
    // now (directories writable, admin socket path free, agent API port bindable).
    // One server per data directory (common/datadirlock.ts), released last. Taken before the checks
    // below when the directory exists, so a second server on it hears exactly that (not that its
    // port or socket is busy); else after them, so a start that fails a check creates nothing.
    let locked = false;
    const lockDir = (): void => {
      const lock = lockDataDir(config.dataDir, 'server data directory', ({ path, pid }) =>
        logger.warn({ path, stale_pid: pid }, 'took over a stale data directory lock: the process that held it is gone'),
      );
      locked = true;
      cleanups.push(() => lock.release());
    };
    if (existsSync(config.dataDir)) lockDir();
    await checkServerCanStart(config);
    if (!locked) lockDir();
    const datastore = await openDataStore(config.plugins.dataStore, { logger: logger.child({ subsystem: 'datastore' }) });
    cleanups.push(() => datastore.close());

    const serverId = loadServerId(config.dataDir);
    const ca = await CaManager.start(caOptionsFromConfig(config, { datastore, logger: logger.child({ subsystem: 'ca' }), now, serverId }));
    ca.startTimers();
    cleanups.push(() => ca.stop());

    const nowSeconds = (): number => Math.floor(now().getTime() / 1000);
    const index = new EntryIndex({ trustDomain: config.trustDomain, now: nowSeconds });
    const cache = new AuthorizationCache(index);
    const feed = new ChangeFeed({ datastore, cache, logger: logger.child({ subsystem: 'feed' }) });
    // Bundle writes by other servers sharing the datastore: the CA adopts them (and its agents get them).
    feed.subscribe({
      bundle: (trustDomain) => {
        if (trustDomain === ca.trustDomain) ca.bundleEvent();
      },
    });
    const loaded = await feed.start();
    cleanups.push(() => feed.stop());

    const attestors = buildServerNodeAttestors(config.plugins.nodeAttestors, opts.env ? { env: opts.env } : {}, opts.nodeAttestors ?? NODE_ATTESTOR_PLUGINS);
    const metrics = new ServerMetrics({ attestors: attestors.keys() });
    const api = new AgentApi({
      trustDomain: config.trustDomain,
      datastore,
      ca,
      attestors,
      cache,
      feed,
      now,
      agentTtlSeconds: config.agentTtl,
      logger,
      metrics,
    });
    await api.loadFederatedBundles();
    const agentServer: AgentApiServer = await startAgentApiServer({ api, tls: ca, bindAddress: config.bindAddress, port: config.bindPort, metrics });
    cleanups.push(() => agentServer.close());

    // Federation: the bundles of the trust domains we federate with, fetched from their bundle
    // endpoints (static relationships from the config, dynamic ones from the datastore).
    const federation = new BundleRefresher({
      datastore,
      trustDomain: config.trustDomain,
      staticRelationships: config.federatesWith,
      logger: logger.child({ subsystem: 'federation' }),
      metrics: new FederationMetrics(metrics.registry),
      now,
    });
    await federation.start();
    cleanups.push(() => federation.stop());

    const admin: AdminServer = await startAdminServer({
      socketPath: config.socketPath,
      services: createAdminServices({ datastore, ca, trustDomain: config.trustDomain, now, logger: logger.child({ subsystem: 'admin_api' }), federation }),
      logger,
      metrics,
    });
    cleanups.push(() => admin.close());

    const bundleEndpoint = await startFederationEndpoint(config, ca, metrics, logger);
    if (bundleEndpoint !== undefined) cleanups.push(() => bundleEndpoint.close());

    const telemetry: Telemetry = await startTelemetry({ config, metrics, datastore, ca, api, now, logger: logger.child({ subsystem: 'telemetry' }) });
    cleanups.push(() => telemetry.close());

    const housekeeping = setInterval(() => {
      feed.pruneExpired();
      const t = nowSeconds();
      // During a datastore outage these fail every round: the datastore logs the outage once.
      const failed = (what: string) => (err: unknown) => {
        if (!isDataStoreUnavailable(err)) logger.warn({ err }, `${what} pruning failed`);
      };
      void datastore.pruneJoinTokens(t - EXPIRED_JOIN_TOKEN_RETENTION_SECONDS).catch(failed('join token'));
      void datastore.pruneExpiredEntries(t).catch(failed('expired entry'));
      void datastore.pruneEvents(t - EVENT_RETENTION_SECONDS).catch(failed('event'));
    }, HOUSEKEEPING_MS);
    housekeeping.unref();
    cleanups.push(() => clearInterval(housekeeping));

    logger.info(
      {
        trust_domain: config.trustDomain,
        address: `${config.bindAddress}:${agentServer.port}`,
        socket_path: config.socketPath,
        data_dir: config.dataDir,
        entries: loaded.entries,
      },
      'spindle-server is ready',
    );
    const running: RunningServer = { config, logger, datastore, ca, metrics, agentApiPort: agentServer.port, stop };
    if (bundleEndpoint !== undefined) running.bundleEndpoint = bundleEndpoint;
    return running;
  } catch (err) {
    await stop();
    throw err;
  }
}

/** federation.bundle_endpoint: the SPIFFE bundle endpoint, serving the CA's bundle (none when not configured). */
async function startFederationEndpoint(config: ServerConfig, ca: CaManager, metrics: ServerMetrics, logger: Logger): Promise<BundleEndpoint | undefined> {
  const be = config.federation?.bundleEndpoint;
  if (be === undefined) return undefined;
  const log = logger.child({ subsystem: 'bundle_endpoint' });
  if (be.profileDefaulted) {
    log.warn({}, 'federation.bundle_endpoint has no profile; serving with profile "https_spiffe" (as SPIRE does); set profile "https_spiffe" {} explicitly');
  }
  if (be.refreshHint < REFRESH_HINT_WARN_BELOW_SECONDS) {
    log.warn({ refresh_hint: be.refreshHint }, 'federation.bundle_endpoint.refresh_hint is below 1 minute: SPIRE servers do not refresh more often than that');
  } else if (be.refreshHint >= REFRESH_HINT_WARN_FROM_SECONDS) {
    log.warn({ refresh_hint: be.refreshHint }, 'federation.bundle_endpoint.refresh_hint is a day or more: other trust domains would see unscheduled bundle changes late; a smaller value such as 5m is recommended');
  }
  const endpoint = await startBundleEndpoint({
    trustDomain: config.trustDomain,
    address: be.address,
    port: be.port,
    refreshHintSeconds: be.refreshHint,
    profile: be.profile,
    bundles: ca,
    serverSvid: ca,
    logger: log,
    registry: metrics.registry,
  }).catch((err: unknown) => {
    // A port taken since the preflight probe: the same operator message.
    if (typeof (err as NodeJS.ErrnoException)?.code === 'string' && (err as NodeJS.ErrnoException).syscall === 'listen') {
      throw new PreflightError(describeListenError(err, be.address, be.port, BUNDLE_ENDPOINT_PORT));
    }
    throw err;
  });
  const fields: Record<string, unknown> = { url: endpoint.url, profile: be.profile.name, refresh_hint: be.refreshHint };
  if (be.profile.name === 'https_spiffe') fields['endpoint_spiffe_id'] = endpointSpiffeId(config.trustDomain);
  else fields['cert_file_path'] = be.profile.certFilePath;
  log.info(fields, 'serving the SPIFFE bundle endpoint');
  return endpoint;
}
