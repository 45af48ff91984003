/**
 * `spindle-agent run`: every config setting also a flag (SPIRE's names); flags override the
 * file. The one place below bin/ that reads process.env and process.cwd() for the agent.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { isConfigError } from '../../common/configfile.js';
import type { AgentConfig, AgentFlags } from '../config/types.js';

function addFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option('--config <file>', 'Path to a SPIRE-style agent config file (YAML or JSON)'))
    .addOption(new Option('--expandEnv', 'Expand $VARIABLES in the config file'))
    .addOption(new Option('--trustDomain <name>', 'The trust domain of this agent'))
    .addOption(new Option('--serverAddress <host>', 'Address of spindle-server'))
    .addOption(new Option('--serverPort <port>', 'Port of spindle-server (default 8081)'))
    .addOption(new Option('--socketPath <path>', 'Workload API socket (default /tmp/spindle-agent/public/api.sock)'))
    .addOption(new Option('--dataDir <dir>', 'Directory for the agent SVID, key and bundle (default ./.data)'))
    .addOption(new Option('--joinToken <token>', 'Join token from `spindle-server token generate`'))
    .addOption(new Option('--joinTokenFile <file>', 'File holding the join token'))
    .addOption(new Option('--trustBundle <file>', 'PEM trust bundle to verify the server (from `spindle-server bundle show`)'))
    .addOption(new Option('--trustBundleUrl <url>', 'URL of the trust bundle (not supported yet)'))
    .addOption(new Option('--insecureBootstrap', 'Trust the server without verifying it on first contact (tests only)'))
    .addOption(new Option('--logLevel <level>', 'DEBUG, INFO, WARN or ERROR'))
    .addOption(new Option('--logFormat <format>', 'text or json'))
    .addOption(new Option('--logFile <file>', 'Write logs to this file'));
}

async function load(flags: AgentFlags): Promise<AgentConfig> {
  const { loadAgentConfig } = await import('../config/config.js');
  return loadAgentConfig({ flags, cwd: process.cwd(), env: process.env as Record<string, string>, readFile: (p: string) => readFileSync(p, 'utf8') });
}

function fail(err: unknown): never {
  if (isConfigError(err)) process.stderr.write(`${err.problems.join('\n')}\n`);
  else process.stderr.write(`Error: ${(err as Error).message}\n`);
  process.exit(1);
}

export function register(program: Command): void {
  addFlags(program.command('run').description('Runs the agent')).action(async (flags: AgentFlags) => {
    let config: AgentConfig;
    try {
      config = await load(flags);
    } catch (err) {
      fail(err);
    }
    const { startAgent } = await import('../run.js');
    let agent;
    try {
      agent = await startAgent(config);
    } catch (err) {
      fail(err);
    }
    let stopping = false;
    const shutdown = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      agent.logger.info({ signal }, 'shutting down');
      agent.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  });

  addFlags(program.command('validate').description('Validates an agent configuration file')).action(async (flags: AgentFlags) => {
    try {
      await load(flags);
    } catch (err) {
      fail(err);
    }
    process.stdout.write('Configuration is valid.\n');
  });
}
