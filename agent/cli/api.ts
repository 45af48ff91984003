/**
 * `api`: SPIRE's `spire-agent api` commands, Workload API clients built on the project's SDK
 * (spiffe/workloadapi):
 *   api fetch [x509]   X509-SVIDs and bundles (`api fetch` alone is `api fetch x509`)
 *   api fetch jwt      JWT-SVIDs and JWT bundles
 *   api validate jwt   has the agent validate a JWT-SVID
 *   api watch          prints X.509 updates until interrupted
 * Each reaches the agent at -socketPath, else $SPIFFE_ENDPOINT_SOCKET, else the default socket.
 */
import type { Command } from 'commander';
import { register as registerFetchJwt } from './fetchjwt.js';
import { register as registerFetchX509 } from './fetchx509.js';
import { register as registerValidateJwt } from './validatejwt.js';
import { register as registerWatch } from './watch.js';

export function register(program: Command): void {
  const api = program.command('api').description('Talks to the agent over the Workload API');
  const fetch = api.command('fetch').description('Fetches SVIDs from the Workload API (x509 when no kind is given)');
  registerFetchX509(fetch);
  registerFetchJwt(fetch);
  const validate = api.command('validate').description('Validates SVIDs with the Workload API');
  registerValidateJwt(validate);
  registerWatch(api);
}

/** SPIRE's alias: `api fetch [flags]` means `api fetch x509 [flags]`. */
export function expandFetchAlias(argv: readonly string[]): string[] {
  if (argv[0] !== 'api' || argv[1] !== 'fetch') return [...argv];
  const next = argv[2];
  if (next === 'x509' || next === 'jwt' || next === 'help' || next === '-h' || next === '--help' || next === '-help') return [...argv];
  return ['api', 'fetch', 'x509', ...argv.slice(2)];
}
