/**
 * spindle-agent's main job: establish the agent's identity (resume or attest), follow the
 * server's authorized entries, and serve the Workload API on the local socket.
 */
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { dirname, resolve } from 'node:path';
import { createLogger } from '../common/logging.js';
import { lockDataDir } from '../common/datadirlock.js';
import { checkSafeDirectory } from '../common/safedir.js';
import { buildAgentPlugins, type AgentAttestorPlugins } from './plugins.js';
import { AgentIdentity } from './attest/identity.js';
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
}

export interface StartAgentOptions {
  logger?: Logger;
  /** The process environment, for attestors configured to read it (k8s: node_name_env). */
  env?: Readonly<Record<string, string | undefined>>;
  /** The attestors this agent may build; default this build's lists (tests extend them). */
  attestors?: AgentAttestorPlugins;
}

export async function startAgent(config: AgentConfig, opts: StartAgentOptions = {}): Promise<RunningAgent> {
  const logger = opts.logger ?? createLogger({ level: config.logLevel, format: config.logFormat, file: config.logFile, name: 'spindle-agent' });
  const cleanups: Array<() => Promise<void> | void> = [];
  const stop = async (): Promise<void> => {
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
    // One agent per data directory (common/datadirlock.ts); released last, after everything closed.
    const lock = lockDataDir(config.dataDir, 'agent data directory', ({ path, pid }) =>
      logger.warn({ path, stale_pid: pid }, 'took over a stale data directory lock: the process that held it is gone'),
    );
    cleanups.push(() => lock.release());
    const { nodeAttestor, workloadAttestors } = buildAgentPlugins(config, { ...(opts.env ? { env: opts.env } : {}), logger }, opts.attestors);
    const identity = await AgentIdentity.start({
      dataDir: config.dataDir,
      trustDomain: config.trustDomain,
      address: { host: config.serverAddress, port: config.serverPort },
      attestor: nodeAttestor,
      ...(config.trustBundlePath ? { trustBundlePem: readFileSync(config.trustBundlePath, 'utf8') } : {}),
      insecureBootstrap: config.insecureBootstrap,
      logger: logger.child({ subsystem: 'attestor' }),
    });
    cleanups.push(() => identity.stop());

    const manager = new AgentManager({
      trustDomain: config.trustDomain,
      connection: () => identity.connection(),
      logger: logger.child({ subsystem: 'manager' }),
      // Evicted (or its SVID no longer accepted): attestors that allow it attest again by themselves.
      onRefused: () => identity.reattestAfterRefusal(),
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
      (err: unknown) => logger.error({ err: (err as Error).message }, 'initial sync with the server failed'),
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

    logger.info({ agent_id: identity.agentId, socket_path: config.socketPath, server: `${config.serverAddress}:${config.serverPort}` }, 'spindle-agent is ready');
    return { config, logger, manager, identity, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
