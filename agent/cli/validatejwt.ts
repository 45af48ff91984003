/**
 * `api validate jwt -audience A -svid TOKEN [-socketPath P] [-timeout 5s] [-output pretty|json]`:
 * SPIRE's `spire-agent api validate jwt`. The agent validates the token against the caller's
 * bundles. Prints
 *   SVID is valid.\nSPIFFE ID : <id>\nClaims    : <claims as compact JSON, keys sorted>\n
 * A token the agent refuses (INVALID_ARGUMENT): `Error: SVID is not valid: <agent's reason>`;
 * any other failure: `Error: unable to validate JWT SVID: <what happened>`; exit 1 either way.
 */
import { Option, type Command } from 'commander';
import { requiredFlag } from '../../common/cli.js';
import { status as Status } from '@grpc/grpc-js';
import { isWorkloadApiError } from '../../spiffe/workloadapi/index.js';
import { addApiOptions, apiAction, type ApiOptions } from './common.js';
import { writeProtoJson } from './printer.js';
import { escapeControls } from '../../common/strings.js';

interface ValidateJwtOptions extends ApiOptions {
  audience?: string;
  svid?: string;
}

function sortedJson(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(value));
}

export function register(validate: Command): void {
  addApiOptions(
    validate
      .command('jwt')
      .description('Validates a JWT SVID')
      .addOption(requiredFlag(new Option('--audience <audience>', 'Expected audience value')))
      .addOption(requiredFlag(new Option('--svid <token>', 'JWT SVID'))),
  ).action(
    apiAction<ValidateJwtOptions>(async (o, ctx) => {
      if (!o.audience) throw new Error('audience must be specified');
      if (!o.svid) throw new Error('svid must be specified');
      let result;
      try {
        result = await ctx.client().validateJwtSvid(o.svid, o.audience);
      } catch (err) {
        if (isWorkloadApiError(err, Status.INVALID_ARGUMENT) && err.reason === 'rpc') throw new Error(`SVID is not valid: ${err.details}`);
        throw new Error(`unable to validate JWT SVID: ${(err as Error).message}`);
      }
      if (ctx.format === 'json') {
        writeProtoJson(ctx.io.out, [{ spiffe_id: result.spiffeId, claims: result.claims }]);
        return;
      }
      ctx.io.out.write(`SVID is valid.\nSPIFFE ID : ${result.spiffeId}\nClaims    : ${escapeControls(sortedJson(result.claims))}\n`);
    }),
  );
}
