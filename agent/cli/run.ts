/**
 * `spindle-agent run`: every config setting also a flag (SPIRE's names); flags override the
 * file. The one place below bin/ that reads process.env and process.cwd() for the agent.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { runService, validateConfig } from '../../common/runcommand.js';
import type { AgentConfig, AgentFlags } from '../config/types.js';

function addFlags(cmd: Command): Command {
  return cmd
    .addOption(new Option('--config <file>', 'Path to a SPIRE agent config file (HCL as SPIRE writes it, YAML or JSON)'))
    .addOption(new Option('--expandEnv', 'Expand $VARIABLES in the config file'))
    .addOption(new Option('--trustDomain <name>', 'The trust domain of this agent'))
    .addOption(new Option('--serverAddress <host>', 'Address of spindle-server, or a comma-separated list of servers (host, host:port, [ipv6]:port)'))
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

export function register(program: Command): void {
  addFlags(program.command('run').description('Runs the agent')).action((flags: AgentFlags) =>
    runService(
      () => load(flags),
      async (config) => (await import('../run.js')).startAgent(config, { env: process.env }),
    ),
  );
  addFlags(program.command('validate').description('Validates an agent configuration file')).action((flags: AgentFlags) =>
    validateConfig(async () => {
      const config = await load(flags);
      (await import('../errors.js')).checkAgentConfigFiles(config);
      // Plugins validate their own plugin_data; building them has no side effects.
      (await import('../plugins.js')).buildAgentPlugins(config, { env: process.env });
      return config;
    }),
  );
}
