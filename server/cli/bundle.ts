/**
 * `bundle show|list|set|delete|count`: this trust domain's bundle and federated bundles, with
 * SPIRE's `-format pem|spiffe` (pem by default) and messages ("bundle set.", "bundle deleted.").
 */
import { Option, type Command } from 'commander';
import { requiredFlag } from '../../common/cli.js';
import { indentJsonText, pluralize, writeJson } from '../../common/output.js';
import { BatchDeleteFederatedBundleResponse, BatchSetFederatedBundleResponse, ListFederatedBundlesResponse } from '../../proto/gen/spindle/admin/v1/admin.js';
import { Bundle as BundleMsg, type Bundle } from '../../proto/gen/spindle/types/v1/types.js';
import { parseBundle } from '../../spiffe/bundle.js';
import { parseTrustDomain } from '../../spiffe/id.js';
import { action, addCommonOptions, readInput, type CommonOptions } from './common.js';
import { CliError } from './errors.js';

type BundleFormat = 'pem' | 'spiffe';

function formatFlag(value: string | undefined): BundleFormat {
  const f = (value ?? '').toLowerCase();
  if (f === '' || f === 'pem') return 'pem';
  if (f === 'spiffe') return 'spiffe';
  throw new CliError(`invalid format: ${JSON.stringify(value)}: use pem or spiffe`);
}

function trustDomainFlag(value: string | undefined, what: string): string {
  if ((value ?? '') === '') throw new CliError(`${what}: set -id to the trust domain (example.org or spiffe://example.org)`);
  try {
    return parseTrustDomain(value!);
  } catch (err) {
    throw new CliError(`-id: ${(err as Error).message}`);
  }
}

const HEADER_RULE = '****************************************';

/** A bundle as SPIRE prints it: PEM CA certificates, or the SPIFFE document indented. */
function renderBundle(b: Bundle, format: BundleFormat, header: boolean): string {
  let s = header ? `${HEADER_RULE}\n* ${b.trustDomain}\n${HEADER_RULE}\n` : '';
  if (format === 'pem') {
    const parsed = parseBundle(parseTrustDomain(b.trustDomain), b.document);
    s += parsed.x509AuthoritiesPem();
  } else {
    s += `${indentJsonText(b.document.toString('utf8'))}\n`;
  }
  return s;
}

interface FormatOptions extends CommonOptions {
  format?: string;
}

export function register(program: Command): void {
  const bundle = program.command('bundle').description("Manage this trust domain's bundle and federated bundles");

  addCommonOptions(
    bundle.command('show').description('Prints the bundle of this server\'s trust domain').option('--format <format>', 'The format to show the bundle: pem or spiffe', 'pem'),
  ).action(
    action<FormatOptions>(async (o, ctx) => {
      const format = formatFlag(o.format);
      const b = await ctx.withClient((c) => c.call(c.bundle.getBundle, {}));
      if (ctx.format === 'json') writeJson(ctx.io.out, BundleMsg.toJSON(b));
      else ctx.io.out.write(renderBundle(b, format, false));
    }),
  );

  addCommonOptions(
    bundle
      .command('list')
      .description('Lists federated bundle data')
      .option('--id <trustDomain>', 'Trust domain (or its SPIFFE ID) of the bundle to show; all federated bundles when unset')
      .option('--format <format>', 'The format to list federated bundles: pem or spiffe', 'pem'),
  ).action(
    action<FormatOptions & { id?: string }>(async (o, ctx) => {
      const format = formatFlag(o.format);
      if (o.id !== undefined) {
        const td = trustDomainFlag(o.id, 'a trust domain is required');
        const b = await ctx.withClient((c) => c.call(c.bundle.getFederatedBundle, { trustDomain: td }));
        if (ctx.format === 'json') writeJson(ctx.io.out, BundleMsg.toJSON(b));
        else ctx.io.out.write(renderBundle(b, format, false));
        return;
      }
      const resp = await ctx.withClient((c) => c.call(c.bundle.listFederatedBundles, {}));
      if (ctx.format === 'json') {
        writeJson(ctx.io.out, { bundles: [], ...(ListFederatedBundlesResponse.toJSON(resp) as object) });
        return;
      }
      resp.bundles.forEach((b, i) => ctx.io.out.write(`${i > 0 ? '\n' : ''}${renderBundle(b, format, true)}`));
    }),
  );

  addCommonOptions(
    bundle
      .command('set')
      .description('Creates or updates bundle data of a federated trust domain')
      .addOption(requiredFlag(new Option('--id <trustDomain>', 'Trust domain (or its SPIFFE ID) of the bundle to set')))
      .option('--path <file>', 'Path to the bundle data; read from stdin when unset')
      .option('--format <format>', 'The format of the bundle data: pem or spiffe', 'pem'),
  ).action(
    action<FormatOptions & { id?: string; path?: string }>(async (o, ctx) => {
      const td = trustDomainFlag(o.id, 'id flag is required');
      const format = formatFlag(o.format);
      const data = readInput(o.path ?? '-', 'bundle data');
      const resp = await ctx.withClient((c) =>
        c.call(c.bundle.batchSetFederatedBundle, {
          bundles: [{ trustDomain: td, document: Buffer.from(data, 'utf8'), sequence: 0n }],
          pem: format === 'pem',
        }),
      );
      const r = resp.results[0];
      if (r === undefined || (r.status?.code ?? 0) !== 0) throw new CliError(`failed to set federated bundle: ${r?.status?.message ?? 'no result'}`);
      if (ctx.format === 'json') writeJson(ctx.io.out, BatchSetFederatedBundleResponse.toJSON(resp));
      else ctx.io.out.write('bundle set.\n');
    }),
  );

  addCommonOptions(
    bundle
      .command('delete')
      .description('Deletes federated bundle data')
      .addOption(requiredFlag(new Option('--id <trustDomain>', 'Trust domain (or its SPIFFE ID) of the bundle to delete'))),
  ).action(
    action<CommonOptions & { id?: string }>(async (o, ctx) => {
      const td = trustDomainFlag(o.id, 'id is required');
      const resp = await ctx.withClient((c) => c.call(c.bundle.batchDeleteFederatedBundle, { trustDomains: [td] }));
      const r = resp.results[0];
      if (r === undefined || (r.status?.code ?? 0) !== 0) {
        throw new CliError(`failed to delete federated bundle ${JSON.stringify(td)}: ${r?.status?.message ?? 'no result'}`);
      }
      if (ctx.format === 'json') writeJson(ctx.io.out, BatchDeleteFederatedBundleResponse.toJSON(resp));
      else ctx.io.out.write('bundle deleted.\n');
    }),
  );

  addCommonOptions(bundle.command('count').description('Count bundles (this trust domain\'s and federated ones)')).action(
    action<CommonOptions>(async (_o, ctx) => {
      const count = await ctx.withClient(async (c) => {
        await c.call(c.bundle.getBundle, {});
        const fed = await c.call(c.bundle.listFederatedBundles, {});
        return 1 + fed.bundles.length;
      });
      if (ctx.format === 'json') writeJson(ctx.io.out, { count });
      else ctx.io.out.write(`${pluralize(count, 'bundle', 'bundles')}\n`);
    }),
  );
}
