/**
 * spindle-agent's main job: establish the agent's identity (resume or attest), follow the
 * server's authorized entries, and serve the Workload API on the local socket.
 */
import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import { dirname, join, resolve } from 'node:path';
import { createLogger, routeGrpcLogs } from '../common/logging.js';
import { lockDataDir } from '../common/datadirlock.js';
import { checkAgentCanStart, describeServerError, EXIT_MUST_REATTEST, mustReattestMessage, readTrustBundleFile, refusalKind } from './errors.js';
import { checkSafeDirectory } from '../common/safedir.js';
import { buildAgentPlugins, type AgentAttestorPlugins } from './plugins.js';
import { AgentIdentity } from './attest/identity.js';
import { formatServerAddresses, hasAlternatives } from './client/serveraddress.js';
import { AgentManager } from './manager/manager.js';
import { startAgentEndpoint } from './endpoints/endpoint.js';
import type { AgentConfig } from './config/types.js';
import { startAgentTelemetry } from './telemetry.js';

export interface RunningAgent {
  config: AgentConfig;
  logger: Logger;
  manager: AgentManager;
  identity: AgentIdentity;
  stop(): Promise<void>;
  /**
   * Resolves when the agent must exit on its own: the server evicted or banned it and it cannot
   * attest again by itself (EXIT_MUST_REATTEST). The message was logged; `onStderr` tells
   * whether the log is stderr (so the caller need not print it again).
   */
  exited: Promise<{ exitCode: number; message: string; onStderr: boolean }>;
}

export interface StartAgentOptions {
  logger?: Logger;
  /** The process environment, for attestors configured to read it (k8s: node_name_env). */
  env?: Readonly<Record<string, string | undefined>>;
  /** The attestors this agent may build; default this build's lists (tests extend them). */
  attestors?: AgentAttestorPlugins;
}

export async function startAgent(config: AgentConfig, opts: StartAgentOptions = {}): Promise<RunningAgent> {
  // Opens -logFile first: a log file that cannot be opened stops startup before anything else.
  const logger = opts.logger ?? createLogger({ level: config.logLevel, format: config.logFormat, file: config.logFile, name: 'spindle-agent' });
  if (!opts.logger) routeGrpcLogs(logger);
  const cleanups: Array<() => Promise<void> | void> = [];
  let stopping = false;
  const stop = async (): Promise<void> => {
    stopping = true;
    while (cleanups.length > 0) {
      try {
        await cleanups.pop()!();
      } catch (err) {
        logger.error({ err }, 'error during shutdown');
      }
    }
  };
  try {
    // Before anything is created: a data or socket directory another local user controls is
    // refused (they could read the agent key, or serve their own Workload API in our place).
    checkSafeDirectory(config.dataDir, 'agent data directory');
    checkSafeDirectory(dirname(resolve(config.socketPath)), 'Workload API socket directory');
    const trustBundle = config.trustBundlePath ? readTrustBundleFile(config.trustBundlePath) : undefined;
    // One agent per data directory (common/datadirlock.ts), released last. Taken before the checks
    // below when the directory exists, so a second agent on it hears exactly that (not that its
    // port or socket is busy); else after them, so a start that fails a check creates nothing.
    let locked = false;
    const lockDir = (): void => {
      const lock = lockDataDir(config.dataDir, 'agent data directory', ({ path, pid }) =>
        logger.warn({ path, stale_pid: pid }, 'took over a stale data directory lock: the process that held it is gone'),
      );
      locked = true;
      cleanups.push(() => lock.release());
    };
    if (existsSync(config.dataDir)) lockDir();
    // Before attesting (a join token is single-use): everything that can fail later is checked now.
    await checkAgentCanStart(config);
    if (!locked) lockDir();
    const { nodeAttestor, workloadAttestors } = buildAgentPlugins(config, { ...(opts.env ? { env: opts.env } : {}), logger }, opts.attestors);
    // Messages name every server the agent may use: `127.0.0.1:8081, 127.0.0.2:8081`.
    const address = formatServerAddresses(config.servers);
    const alternatives = hasAlternatives(config.servers);
    const describe = (err: unknown): string =>
      describeServerError(err, {
        address,
        trustDomain: config.trustDomain,
        bundle: config.trustBundlePath
          ? `${config.trustBundlePath} (-trustBundle)`
          : config.insecureBootstrap
            ? 'fetched with -insecureBootstrap'
            : `${join(config.dataDir, 'bundle.pem')} (stored by an earlier run)`,
        joinToken: config.joinToken,
      });
    let identity: AgentIdentity;
    try {
      identity = await AgentIdentity.start({
        dataDir: config.dataDir,
        trustDomain: config.trustDomain,
        addresses: config.servers,
        maxConnectionAgeMs: config.serverMaxConnectionAge * 1000,
        attestor: nodeAttestor,
        ...(trustBundle ? { trustBundle } : {}),
        insecureBootstrap: config.insecureBootstrap,
        logger: logger.child({ subsystem: 'attestor' }),
        describeError: describe,
      });
    } catch (err) {
      throw new Error(describe(err), { cause: err });
    }
    cleanups.push(() => identity.stop());

    let exit!: (e: { exitCode: number; message: string; onStderr: boolean }) => void;
    const exited = new Promise<{ exitCode: number; message: string; onStderr: boolean }>((r) => (exit = r));
    let mustExit = false;
    // Evicted or banned: an attestor that allows it attests again by itself; a join-token agent
    // cannot (its token is spent), so it says so once, forgets its SVID and exits (as SPIRE's
    // agent does when it can neither renew nor re-attest).
    const onRefused = (err: unknown): void => {
      if (mustExit || stopping || identity.reattestAfterRefusal()) return;
      const kind = refusalKind(err);
      if (kind === undefined) return;
      mustExit = true;
      identity.discardStoredSvid();
      const message = mustReattestMessage(identity.agentId, kind, config.dataDir);
      logger.error({ agent_id: identity.agentId, exit_code: EXIT_MUST_REATTEST }, message);
      exit({ exitCode: EXIT_MUST_REATTEST, message, onStderr: !opts.logger && !config.logFile });
    };

    const manager = new AgentManager({
      trustDomain: config.trustDomain,
      connection: () => identity.connection(),
      logger: logger.child({ subsystem: 'manager' }),
      onRefused,
      describeError: describe,
      failoverRetries: identity.failoverRetries,
    });
    cleanups.push(() => manager.stop());
    identity.onConnectionChange(() => manager.reconnect());
    manager.subscribeBundles((set) => {
      const own = set.get(config.trustDomain);
      if (own) identity.updateBundle(own.x509Authorities().slice());
    });
    // Do not wait for the server here: the socket serves as soon as the first sync arrives,
    // and workloads that connect earlier wait for it (or are told the agent is not ready).
    let synced = false;
    manager.start().then(
      () => (synced = true),
      (err: unknown) => {
        if (!stopping && !mustExit) logger.error({ err: describe(err) }, 'initial sync with the server failed');
      },
    );

    // The Workload API and Envoy SDS v3 (SPIRE's agent `sds` section) on the one socket.
    const endpoint = await startAgentEndpoint({
      socketPath: config.socketPath,
      cache: manager,
      attestors: workloadAttestors,
      logger: logger.child({ subsystem: 'endpoints' }),
      limits: config.workloadApi,
      sds: {
        defaultSvidName: config.sds.defaultSvidName,
        defaultBundleName: config.sds.defaultBundleName,
        defaultAllBundlesName: config.sds.defaultAllBundlesName,
        disableSpiffeCertValidation: config.sds.disableSpiffeCertValidation,
      },
    });
    cleanups.push(() => endpoint.close());

    const telemetry = await startAgentTelemetry({
      config,
      logger: logger.child({ subsystem: 'telemetry' }),
      sources: {
        entries: () => manager.entryCount,
        synced: () => synced,
        agentSvidNotAfter: () => identity.svidNotAfter(),
        workloadApiLimits: () => endpoint.limits.stats(),
        jwtSvidCache: () => ({ entries: manager.jwtCacheSize, evictions: manager.jwtCacheEvictions }),
        workloadApiConnections: () => endpoint.connections.stats(),
      },
    });
    cleanups.push(() => telemetry.close());

    logger.info(
      { agent_id: identity.agentId, socket_path: config.socketPath, server: address, ...(alternatives ? { server_max_connection_age_s: config.serverMaxConnectionAge } : {}) },
      'spindle-agent is ready',
    );
    return { config, logger, manager, identity, stop, exited };
  } catch (err) {
    await stop();
    throw err;
  }
}
