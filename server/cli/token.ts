/** `token generate [-ttl 600] [-spiffeID alias]`: prints `Token: <value>` as SPIRE does. */
import type { Command } from 'commander';
import { writeJson } from '../../common/output.js';
import { CreateJoinTokenResponse } from '../../proto/gen/spindle/admin/v1/admin.js';
import { action, addCommonOptions, parseIntFlag, type CommonOptions } from './common.js';
import { idFlag } from './entry.js';
import { CliError } from './errors.js';

export const DEFAULT_TOKEN_TTL_SECONDS = 600;

export function register(program: Command): void {
  const token = program.command('token').description('Manage join tokens');
  addCommonOptions(
    token
      .command('generate')
      .description('Generates a join token')
      .option('--ttl <seconds>', 'Token TTL in seconds', String(DEFAULT_TOKEN_TTL_SECONDS))
      .option('--spiffeID <id>', 'Additional SPIFFE ID to assign the token owner (optional): creates a node alias entry'),
  ).action(
    action<CommonOptions & { ttl: string; spiffeID?: string }>(async (o, ctx) => {
      const ttl = parseIntFlag('ttl', o.ttl);
      if (ttl < 1) throw new CliError('a positive -ttl (seconds) is required');
      const alias = o.spiffeID === undefined || o.spiffeID === '' ? '' : idFlag('spiffeID', o.spiffeID);
      const resp = await ctx.withClient((c) => c.call(c.agent.createJoinToken, { ttl, agentAliasSpiffeId: alias }));
      if (ctx.format === 'json') {
        writeJson(ctx.io.out, CreateJoinTokenResponse.toJSON(resp));
        return;
      }
      ctx.io.out.write(`Token: ${resp.value}\n`);
      // SPIRE prints this warning on stdout; stderr keeps `token generate | cut -d' ' -f2` working.
      if (alias === '') ctx.io.err.write('Warning: Missing SPIFFE ID.\n');
    }),
  );
}
