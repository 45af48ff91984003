/**
 * spindle-server's operator-facing startup messages, in one place: the names of its settings as
 * an operator writes them (flag and config key), the checks `run` makes before it creates
 * anything (log file, data directories, admin socket, agent API port) and the text for a failed
 * listen. `validate` runs the checks that create and bind nothing.
 */
import { dirname, resolve } from 'node:path';
import { accessSync, constants, statSync } from 'node:fs';
import { PreflightError, checkLogFile, checkSocketPath, checkTcpPort, checkWritableDirectory, describeFsError, describeListenError, type PortNames, type SocketNames } from '../common/preflight.js';
import type { ServerConfig } from './config/config.js';

export const LOG_FILE = { setting: '-logFile / log_file' } as const;

export const AGENT_API_PORT: PortNames = {
  what: 'agent API',
  addressSetting: '-bindAddress / bind_address',
  portSetting: '-serverPort / bind_port',
  inUseHint: 'is spindle-server already running?',
};

export const ADMIN_SOCKET: SocketNames = {
  what: 'admin socket',
  setting: '-socketPath / socket_path',
  // As the admin server creates it (server/api/admin/server.ts ADMIN_SOCKET_DIR_MODE).
  dirMode: 0o700,
  inUse: (path) => `another process is already serving on the admin socket ${path} (is spindle-server already running?); stop it or choose another -socketPath / socket_path`,
};

/** The text for a failed bind of the agent API (a race the preflight probe did not catch). */
export function agentApiListenError(err: unknown, host: string, port: number): string {
  // grpc-js reports "No address added out of total 1 resolved errors: [listen EADDRINUSE ...]".
  const inner = /\blisten (E[A-Z]+)\b/.exec(err instanceof Error ? err.message : String(err))?.[1];
  return describeListenError(inner ? Object.assign(new Error(inner), { code: inner }) : err, host, port, AGENT_API_PORT);
}

export const BUNDLE_ENDPOINT_PORT: PortNames = {
  what: 'SPIFFE bundle endpoint',
  addressSetting: 'federation.bundle_endpoint.address',
  portSetting: 'federation.bundle_endpoint.port',
  inUseHint: 'is spindle-server already running?',
};

/** The bundle endpoint's https_web certificate and key files exist and can be read. */
export function checkBundleEndpointFiles(config: ServerConfig): void {
  const profile = config.federation?.bundleEndpoint?.profile;
  if (profile?.name !== 'https_web') return;
  const files: Array<[string, string]> = [
    [profile.certFilePath, 'cert_file_path'],
    [profile.keyFilePath, 'key_file_path'],
  ];
  for (const [path, key] of files) {
    const setting = `federation.bundle_endpoint profile "https_web" serving_cert_file ${key}`;
    try {
      if (!statSync(path).isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EISDIR' });
      accessSync(path, constants.R_OK);
    } catch (err) {
      throw new PreflightError(`cannot read ${path} (${setting}): ${describeFsError(err)}; fix the path or the file's permissions`);
    }
  }
}

/** What `validate` can check without creating anything: the log file, the bundle endpoint's files. */
export function checkServerConfigFiles(config: ServerConfig): void {
  if (config.logFile) checkLogFile(config.logFile, LOG_FILE);
  checkBundleEndpointFiles(config);
}

/**
 * Everything `run` can check before it creates the CA and the datastore: the data directory and
 * the datastore's directory are writable (or creatable), the admin socket path is free and its
 * directory usable, the agent API port can be bound; with a bundle endpoint, its port can be
 * bound and its https_web certificate files can be read. (The log file was opened already.)
 */
export async function checkServerCanStart(config: ServerConfig): Promise<void> {
  const advice = 'choose another -dataDir / data_dir, or fix its permissions or mount';
  checkWritableDirectory(config.dataDir, `data directory ${config.dataDir} (-dataDir / data_dir)`, advice);
  const db = config.plugins.dataStore.connectionString;
  const dbDir = dirname(resolve(db));
  if (db !== ':memory:' && dbDir !== resolve(config.dataDir)) checkWritableDirectory(dbDir, `datastore directory ${dbDir} (DataStore connection_string)`, 'choose another connection_string, or fix its permissions or mount');
  await checkSocketPath(config.socketPath, ADMIN_SOCKET);
  await checkTcpPort(config.bindAddress, config.bindPort, AGENT_API_PORT);
  const be = config.federation?.bundleEndpoint;
  if (be !== undefined) {
    checkBundleEndpointFiles(config);
    await checkTcpPort(be.address, be.port, BUNDLE_ENDPOINT_PORT);
  }
}
