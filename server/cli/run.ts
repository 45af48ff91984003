/**
 * `spindle-server run` and `spindle-server validate`. Every config setting has a flag that
 * overrides the file; with no -config, flags alone configure a local server (SPIRE's behaviour).
 * This is the one place below bin/ that reads process.env and process.cwd().
 */
import { Option, type Command } from 'commander';
import { isConfigError } from '../../common/configfile.js';
import type { ServerConfig, ServerFlags } from '../config/config.js';

function addConfigFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option('--config <file>', 'Path to a SPIRE-style server config file (YAML or JSON)'))
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

function fail(err: unknown): never {
  if (isConfigError(err)) {
    process.stderr.write(`${err.problems.map((p) => `${p}`).join('\n')}\n`);
  } else {
    process.stderr.write(`Error: ${(err as Error).message}\n`);
  }
  process.exit(1);
}

export function register(program: Command): void {
  addConfigFlags(program.command('run').description('Runs the server')).action(async (flags: ServerFlags) => {
    let config: ServerConfig;
    try {
      config = await load(flags);
    } catch (err) {
      fail(err);
    }
    const { startServer } = await import('../run.js');
    let server;
    try {
      server = await startServer(config);
    } catch (err) {
      fail(err);
    }
    let stopping = false;
    const shutdown = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      server.logger.info({ signal }, 'shutting down');
      server.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });

  addConfigFlags(program.command('validate').description('Validates a server configuration file')).action(async (flags: ServerFlags) => {
    try {
      await load(flags);
    } catch (err) {
      fail(err);
    }
    process.stdout.write('Configuration is valid.\n');
  });
}
