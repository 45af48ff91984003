/**
 * spindle-oidc command line (bin/spindle-oidc), as SPIRE's oidc-discovery-provider:
 * `spindle-oidc [-config <file>] [-expandEnv]` runs the provider until SIGTERM or SIGINT
 * (`-config` defaults to oidc-discovery-provider.conf in the working directory);
 * `spindle-oidc validate [-config <file>] [-expandEnv]` only checks the file. Flags are also
 * accepted as `--config`, `-config=<file>`.
 */
import { runService, validateConfig } from '../../common/runcommand.js';
import { packageVersion } from '../../common/version.js';
import { loadOidcConfig, OIDC_DEFAULTS } from '../config.js';
import { startOidcProvider } from '../run.js';

const USAGE = `Usage: spindle-oidc [validate] [-config <file>] [-expandEnv]

Serves the OIDC discovery document and the JWKS of a trust domain's JWT-SVID keys
(SPIRE's oidc-discovery-provider). See docs/oidc.md.

  -config <file>   the provider's config file (default ${OIDC_DEFAULTS.config})
  -expandEnv       expand $VAR and \${VAR} in the config file
  -version         print the version
`;

export async function main(argv: string[]): Promise<void> {
  let configPath: string = OIDC_DEFAULTS.config;
  let expandEnv = false;
  let validate = false;
  const args = [...argv];
  if (args[0] === 'validate') {
    validate = true;
    args.shift();
  } else if (args[0] === 'run') args.shift();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const m = /^--?([A-Za-z-]+)(?:=(.*))?$/.exec(a);
    const name = m?.[1]?.toLowerCase().replace(/-/g, '');
    if (name === 'config') {
      const v = m![2] ?? args[++i];
      if (v === undefined || v === '') return usageError('-config needs a file');
      configPath = v;
    } else if (name === 'expandenv' && m![2] === undefined) expandEnv = true;
    else if (name === 'h' || name === 'help') {
      process.stdout.write(USAGE);
      return;
    } else if (name === 'version') {
      process.stdout.write(`${packageVersion()}\n`);
      return;
    } else return usageError(a.startsWith('-') ? `unknown flag ${JSON.stringify(a)}` : `unknown command ${JSON.stringify(a)}`);
  }
  const load = async (): Promise<ReturnType<typeof loadOidcConfig>> =>
    loadOidcConfig({ configPath, cwd: process.cwd(), ...(expandEnv ? { env: process.env } : {}) });
  if (validate) return validateConfig(load);
  await runService(load, startOidcProvider);
}

function usageError(message: string): void {
  process.stderr.write(`Error: ${message}\n\n${USAGE}`);
  process.exit(2);
}
