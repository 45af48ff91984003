/**
 * `api fetch jwt -audience A [-audience B | -audience A,B] [-spiffeID ID] [-socketPath P]
 * [-timeout 5s] [-output pretty|json]`: SPIRE's `spire-agent api fetch jwt`. Fetches the JWT
 * bundles, then the JWT-SVIDs, and prints
 *   token(<spiffe id>):\n\t<token>\n   [hint(<spiffe id>):\n\t<hint>\n]   per SVID, then
 *   bundle(<spiffe://td>):\n\t<JWKS>\n   per trust domain (sorted),
 * or, with `-output json`, `[<JWTSVIDResponse>,<JWTBundlesResponse>]` as SPIRE's protojson does.
 * The JWKS printed is the bundle as decoded (its JWT authorities, `use: jwt-svid`, by kid).
 */
import { Option, type Command } from 'commander';
import { requiredFlag } from '../../common/cli.js';
import { marshalJwtBundle } from '../../spiffe/bundle.js';
import { trustDomainId } from '../../spiffe/id.js';
import { addApiOptions, apiAction, collectCommaList, type ApiOptions } from './common.js';
import { b64, writeProtoJson } from './printer.js';
import { escapeControls } from '../../common/strings.js';

interface FetchJwtOptions extends ApiOptions {
  audience?: string[];
  spiffeID?: string;
}

export function register(fetch: Command): void {
  addApiOptions(
    fetch
      .command('jwt')
      .description('Fetches a JWT SVID from the Workload API')
      .addOption(requiredFlag(new Option('--audience <audience>', 'Audience the JWT-SVID is for (repeatable, or comma separated)').argParser(collectCommaList)))
      .option('--spiffeID <id>', 'SPIFFE ID subject (optional)'),
  ).action(
    apiAction<FetchJwtOptions>(async (o, ctx) => {
      const audience = o.audience ?? [];
      if (audience.length === 0) throw new Error('audience must be specified');
      const client = ctx.client();
      const bundles = await client.fetchJwtBundles();
      const svids = await client.fetchJwtSvid({ audience, ...(o.spiffeID ? { spiffeId: o.spiffeID } : {}) });
      const jwks = bundles.bundles().map((b) => [trustDomainId(b.trustDomain), marshalJwtBundle(b)] as const);
      if (ctx.format === 'json') {
        writeProtoJson(ctx.io.out, [
          { svids: svids.map((s) => ({ spiffe_id: s.id, svid: s.token, hint: s.hint })) },
          { bundles: Object.fromEntries(jwks.map(([id, doc]) => [id, b64(Buffer.from(doc, 'utf8'))])) },
        ]);
        return;
      }
      let text = '';
      for (const s of svids) {
        text += `token(${s.id}):\n\t${s.token}\n`;
        if (s.hint !== '') text += `hint(${s.id}):\n\t${escapeControls(s.hint)}\n`;
      }
      for (const [id, doc] of jwks) text += `bundle(${id}):\n\t${doc}\n`;
      ctx.io.out.write(text);
    }),
  );
}
