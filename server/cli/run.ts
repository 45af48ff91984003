/**
 * `spindle-server run` and `spindle-server validate`. Every config setting has a flag that
 * overrides the file; with no -config, flags alone configure a local server (SPIRE's behaviour).
 * This is the one place below bin/ that reads process.env and process.cwd().
 */
import { Option, type Command } from 'commander';
import { runService, validateConfig } from '../../common/runcommand.js';
import type { ServerConfig, ServerFlags } from '../config/config.js';

function addFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option('--config <file>', 'Path to a SPIRE server config file (HCL as SPIRE writes it, YAML or JSON)'))
    .addOption(new Option('--expandEnv', 'Expand $VARIABLES in the config file'))
    .addOption(new Option('--trustDomain <name>', 'The trust domain this server is the authority of'))
    .addOption(new Option('--bindAddress <ip>', 'IP address the agent API listens on (default 0.0.0.0)'))
    .addOption(new Option('--serverPort <port>', 'TCP port of the agent API (default 8081)'))
    .addOption(new Option('--socketPath <path>', 'Path of the admin API socket (default /tmp/spindle-server/private/api.sock)'))
    .addOption(new Option('--dataDir <dir>', 'Directory for the datastore and keys (default ./.data)'))
    .addOption(new Option('--logLevel <level>', 'DEBUG, INFO, WARN or ERROR (default INFO)'))
    .addOption(new Option('--logFormat <format>', 'text or json (default text)'))
    .addOption(new Option('--logFile <file>', 'Write logs to this file instead of stderr'));
}

/** The config module (and its YAML parser) loads only for run/validate, not for every admin command. */
async function load(flags: ServerFlags): Promise<ServerConfig> {
  const { loadServerConfig } = await import('../config/config.js');
  return loadServerConfig({ flags, cwd: process.cwd(), env: process.env as Record<string, string> });
}

export function register(program: Command): void {
  addFlags(program.command('run').description('Runs the server')).action((flags: ServerFlags) =>
    runService(
      () => load(flags),
      async (config) => (await import('../run.js')).startServer(config, { env: process.env }),
    ),
  );
  addFlags(program.command('validate').description('Validates a server configuration file')).action((flags: ServerFlags) =>
    validateConfig(async () => {
      const config = await load(flags);
      (await import('../errors.js')).checkServerConfigFiles(config);
      // Node attestors check their own plugin_data (k8s_psat: clusters, kubeconfig); building contacts nothing.
      (await import('../../attestors/node/registry.js')).buildServerNodeAttestors(config.plugins.nodeAttestors, { env: process.env });
    }),
  );
}
