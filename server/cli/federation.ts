/**
 * `federation create|list|show|update|delete|refresh`: federation relationships with SPIRE's
 * flags (-trustDomain -bundleEndpointURL -bundleEndpointProfile -endpointSpiffeID
 * -trustDomainBundlePath -trustDomainBundleFormat, -data <file|-> for JSON batches, -id for
 * delete and refresh) and SPIRE's printed text. `show` and `list` also print what the server's
 * bundle refresher last did (a Spindle addition) and whether a relationship is from the config.
 *
 * -data JSON, as SPIRE's:
 *   {"federation_relationships": [{"trust_domain": "td.org", "bundle_endpoint_url": "https://...",
 *     "https_spiffe": {"endpoint_spiffe_id": "spiffe://td.org/spire/server"},
 *     "trust_domain_bundle": {...}}]}
 * with "https_web": {} for the web profile. trust_domain_bundle is either SPIRE's bundle shape
 * (x509_authorities [{asn1: base64 DER}], jwt_authorities [{key_id, public_key: base64 SPKI}],
 * sequence_number, refresh_hint) or a SPIFFE bundle document ({"keys": [...]}).
 */
import { createPublicKey } from 'node:crypto';
import { Option, type Command } from 'commander';
import { requiredFlag } from '../../common/cli.js';
import { field, goQuote, goTimeString, grpcCodeName, pluralize, writeJson, type Writer } from '../../common/output.js';
import {
  BatchDeleteFederationRelationshipResponse,
  FederationRelationship as FrJson,
  type FederationRelationship as Fr,
  type FederationRelationshipResult,
} from '../../proto/gen/spindle/admin/v1/admin.js';
import { Bundle as SpiffeBundle, marshalBundle } from '../../spiffe/bundle.js';
import { parseSpiffeId, parseTrustDomain, trustDomainOf, type TrustDomain } from '../../spiffe/id.js';
import { action, addCommonOptions, readInput, type ActionContext, type CommonOptions } from './common.js';
import { CliError } from './errors.js';

const W = 26;

interface RelFlags extends CommonOptions {
  trustDomain?: string;
  bundleEndpointURL?: string;
  bundleEndpointProfile?: string;
  endpointSpiffeID?: string;
  trustDomainBundlePath?: string;
  trustDomainBundleFormat?: string;
  data?: string;
}

function tdOf(raw: string, flag: string): TrustDomain {
  try {
    return parseTrustDomain(raw);
  } catch (err) {
    throw new CliError(`${flag}: ${(err as Error).message}`);
  }
}

/** SPIRE's block for one relationship (plus the refresh lines when `withRefresh`). */
function printRelationship(out: Writer, r: Fr, withRefresh: boolean): void {
  let s = field('Trust domain', r.trustDomain, W) + field('Bundle endpoint URL', r.bundleEndpointUrl, W);
  const p = r.bundleEndpointProfile;
  if (p?.$case === 'httpsWeb') s += field('Bundle endpoint profile', 'https_web', W);
  else if (p?.$case === 'httpsSpiffe') s += field('Bundle endpoint profile', 'https_spiffe', W) + field('Endpoint SPIFFE ID', p.value.endpointSpiffeId, W);
  if (withRefresh) {
    if (r.static) s += field('Configured in', 'server config (federation.federates_with)', W);
    const f = r.refresh;
    const at = Number(f?.lastAttemptAt ?? 0n);
    s += field('Last refresh', at === 0 ? 'never' : goTimeString(at), W);
    s += field('Last refresh result', at === 0 ? '-' : f?.lastError ? `error: ${f.lastError}` : 'ok', W);
    const ok = Number(f?.lastSuccessAt ?? 0n);
    s += field('Last successful refresh', ok === 0 ? 'never' : goTimeString(ok), W);
    s += field('Bundle sequence', r.trustDomainBundle === undefined ? 'no bundle held' : r.trustDomainBundle.sequence.toString(10), W);
  }
  out.write(s);
}

/** SPIRE's -data bundle shape, or a SPIFFE bundle document, as a SPIFFE bundle document. */
function bundleFromJson(td: TrustDomain, v: unknown, where: string): string {
  if (typeof v !== 'object' || v === null) throw new CliError(`${where}: trust_domain_bundle must be an object`);
  const o = v as Record<string, unknown>;
  if (Array.isArray(o['keys'])) return JSON.stringify(o);
  try {
    const b = new SpiffeBundle(td);
    for (const a of (o['x509_authorities'] as Array<{ asn1?: string }> | undefined) ?? []) b.addX509Authority(Buffer.from(a.asn1 ?? '', 'base64'));
    for (const k of (o['jwt_authorities'] as Array<{ key_id?: string; public_key?: string }> | undefined) ?? []) {
      b.addJwtAuthority(k.key_id ?? '', createPublicKey({ key: Buffer.from(k.public_key ?? '', 'base64'), format: 'der', type: 'spki' }));
    }
    if (o['sequence_number'] !== undefined) b.sequence = BigInt(o['sequence_number'] as string | number);
    if (o['refresh_hint'] !== undefined) b.refreshHintSeconds = Number(o['refresh_hint']);
    return marshalBundle(b);
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`${where}: invalid trust_domain_bundle: ${(err as Error).message}`);
  }
}

function fromDataJson(text: string, where: string): Fr[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new CliError(`${where}: invalid JSON: ${(err as Error).message}`);
  }
  const list = (doc as { federation_relationships?: unknown })?.federation_relationships;
  if (!Array.isArray(list)) throw new CliError(`${where}: expected {"federation_relationships": [...]}`);
  return list.map((raw, i) => {
    const at = `${where}: federation_relationships[${i}]`;
    if (typeof raw !== 'object' || raw === null) throw new CliError(`${at}: must be an object`);
    const o = raw as Record<string, unknown>;
    const known = new Set(['trust_domain', 'bundle_endpoint_url', 'https_web', 'https_spiffe', 'trust_domain_bundle']);
    for (const k of Object.keys(o)) if (!known.has(k)) throw new CliError(`${at}: unknown field ${JSON.stringify(k)}`);
    const td = tdOf(String(o['trust_domain'] ?? ''), `${at}: trust_domain`);
    let profile: Fr['bundleEndpointProfile'];
    if (o['https_web'] !== undefined && o['https_spiffe'] !== undefined) throw new CliError(`${at}: set https_web or https_spiffe, not both`);
    if (o['https_web'] !== undefined) profile = { $case: 'httpsWeb', value: {} };
    else if (o['https_spiffe'] !== undefined) {
      const id = (o['https_spiffe'] as { endpoint_spiffe_id?: unknown })?.endpoint_spiffe_id;
      profile = { $case: 'httpsSpiffe', value: { endpointSpiffeId: typeof id === 'string' ? id : '' } };
    }
    // As SPIRE: an https_spiffe relationship's bundle is that of the endpoint SPIFFE ID's trust domain.
    let bundleTd = td;
    if (profile?.$case === 'httpsSpiffe') {
      try {
        bundleTd = trustDomainOf(parseSpiffeId(profile.value.endpointSpiffeId));
      } catch (err) {
        throw new CliError(`${at}: cannot parse bundle endpoint SPIFFE ID: ${(err as Error).message}`);
      }
    }
    const bundle = o['trust_domain_bundle'] === undefined ? undefined : bundleFromJson(bundleTd, o['trust_domain_bundle'], at);
    return {
      trustDomain: td,
      bundleEndpointUrl: typeof o['bundle_endpoint_url'] === 'string' ? o['bundle_endpoint_url'] : '',
      bundleEndpointProfile: profile,
      trustDomainBundle: bundle === undefined ? undefined : { trustDomain: bundleTd, document: Buffer.from(bundle, 'utf8'), sequence: 0n },
      trustDomainBundlePem: false,
      static: false,
      refresh: undefined,
    };
  });
}

/** The request relationships, from -data or from the flags (SPIRE's checks and messages). */
function relationshipsOf(o: RelFlags): Fr[] {
  if (o.data !== undefined) {
    const flags = (['trustDomain', 'bundleEndpointURL', 'bundleEndpointProfile', 'endpointSpiffeID', 'trustDomainBundlePath'] as const).filter((k) => o[k] !== undefined);
    if (flags.length > 0) throw new CliError(`-data cannot be combined with ${flags.map((k) => `-${k}`).join(', ')}: put those fields in the JSON`);
    return fromDataJson(readInput(o.data, 'federation relationships JSON'), o.data === '-' ? 'stdin' : o.data);
  }
  if ((o.trustDomain ?? '') === '') throw new CliError('trust domain is required');
  const td = tdOf(o.trustDomain!, '-trustDomain');
  if ((o.bundleEndpointURL ?? '') === '') throw new CliError('bundle endpoint URL is required');
  let profile: Fr['bundleEndpointProfile'];
  switch (o.bundleEndpointProfile ?? '') {
    case 'https_web':
      if ((o.endpointSpiffeID ?? '') !== '') throw new CliError('-endpointSpiffeID is only for the https_spiffe profile');
      profile = { $case: 'httpsWeb', value: {} };
      break;
    case 'https_spiffe':
      if ((o.endpointSpiffeID ?? '') === '') throw new CliError("endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set");
      profile = { $case: 'httpsSpiffe', value: { endpointSpiffeId: o.endpointSpiffeID! } };
      break;
    case '':
      throw new CliError('bundle endpoint profile is required: https_web or https_spiffe');
    default:
      throw new CliError(`unknown bundle endpoint profile type: ${goQuote(o.bundleEndpointProfile!)}: use https_web or https_spiffe`);
  }
  const format = (o.trustDomainBundleFormat ?? 'pem').toLowerCase();
  if (format !== 'pem' && format !== 'spiffe') throw new CliError(`invalid -trustDomainBundleFormat ${goQuote(o.trustDomainBundleFormat!)}: use pem or spiffe`);
  let bundle: Fr['trustDomainBundle'];
  if (o.trustDomainBundlePath !== undefined) {
    const text = readInput(o.trustDomainBundlePath, 'trust domain bundle');
    bundle = { trustDomain: '', document: Buffer.from(text, 'utf8'), sequence: 0n };
  }
  return [
    {
      trustDomain: td,
      bundleEndpointUrl: o.bundleEndpointURL!,
      bundleEndpointProfile: profile,
      trustDomainBundle: bundle,
      trustDomainBundlePem: bundle !== undefined && format === 'pem',
      static: false,
      refresh: undefined,
    },
  ];
}

function relationshipOptions(cmd: Command, forUpdate: boolean): Command {
  return cmd
    .addOption(requiredFlag(new Option('--trustDomain <td>', `Name of the trust domain to ${forUpdate ? 'update' : 'federate with'} (e.g., example.org)`), '-data'))
    .addOption(requiredFlag(new Option('--bundleEndpointURL <url>', 'URL of the SPIFFE bundle endpoint that provides the trust bundle (must use the HTTPS protocol)'), '-data'))
    .addOption(requiredFlag(new Option('--bundleEndpointProfile <profile>', "Endpoint profile type (either 'https_web' or 'https_spiffe')"), '-data'))
    .option('--endpointSpiffeID <id>', "SPIFFE ID of the SPIFFE bundle endpoint server. Only used for 'https_spiffe' profile.")
    .option('--trustDomainBundlePath <path>', 'Path to the trust domain bundle data (optional).')
    .option('--trustDomainBundleFormat <format>', "The format of the bundle data (optional). Either 'pem' or 'spiffe'.", 'pem')
    .option('--data <file>', "Path to a file containing federation relationships in JSON format (optional). If set to '-', read the JSON from stdin.");
}

async function runBatch(o: RelFlags, ctx: ActionContext, verb: 'create' | 'update'): Promise<void> {
  const rels = relationshipsOf(o);
  const resp = await ctx.withClient((c) =>
    verb === 'create'
      ? c.call(c.trustDomain.batchCreateFederationRelationship, { federationRelationships: rels })
      : c.call(c.trustDomain.batchUpdateFederationRelationship, { federationRelationships: rels }),
  );
  const failed = resp.results.filter((r) => (r.status?.code ?? 0) !== 0);
  if (ctx.format === 'json') {
    writeJson(ctx.io.out, { results: resp.results.map(resultJson) });
  } else {
    for (const r of resp.results) {
      if ((r.status?.code ?? 0) !== 0) continue;
      ctx.io.out.write('\n');
      printRelationship(ctx.io.out, r.federationRelationship!, false);
    }
    for (const r of failed) {
      ctx.io.err.write(`Failed to ${verb} the following federation relationship (code: ${grpcCodeName(r.status!.code)}, msg: ${goQuote(r.status!.message)}):\n`);
      printRelationship(ctx.io.err, r.federationRelationship ?? rels[0]!, false);
      ctx.io.err.write('\n');
    }
  }
  if (failed.length > 0) throw new CliError(`failed to ${verb} one or more federation relationships`);
}

function resultJson(r: FederationRelationshipResult): unknown {
  return {
    status: { code: r.status?.code ?? 0, message: r.status?.message ?? '' },
    federation_relationship: r.federationRelationship === undefined ? null : FrJson.toJSON(r.federationRelationship),
  };
}

export function register(program: Command): void {
  const fed = program.command('federation').description('Manage federation relationships');

  addCommonOptions(relationshipOptions(fed.command('create').description('Creates a dynamic federation relationship with a foreign trust domain'), false)).action(
    action<RelFlags>(async (o, ctx) => runBatch(o, ctx, 'create')),
  );

  addCommonOptions(relationshipOptions(fed.command('update').description('Updates a dynamic federation relationship with a foreign trust domain'), true)).action(
    action<RelFlags>(async (o, ctx) => runBatch(o, ctx, 'update')),
  );

  addCommonOptions(fed.command('list').description('Lists all dynamic federation relationships')).action(
    action<CommonOptions>(async (_o, ctx) => {
      const resp = await ctx.withClient((c) => c.call(c.trustDomain.listFederationRelationships, {}));
      if (ctx.format === 'json') {
        writeJson(ctx.io.out, { federation_relationships: resp.federationRelationships.map((r) => FrJson.toJSON(r)) });
        return;
      }
      const n = resp.federationRelationships.length;
      ctx.io.out.write(`Found ${pluralize(n, 'federation relationship', 'federation relationships')}\n`);
      for (const r of resp.federationRelationships) {
        ctx.io.out.write('\n');
        printRelationship(ctx.io.out, r, false);
      }
    }),
  );

  addCommonOptions(
    fed
      .command('show')
      .description('Shows a dynamic federation relationship')
      .addOption(requiredFlag(new Option('--trustDomain <td>', 'The trust domain name of the federation relationship to show'))),
  ).action(
    action<CommonOptions & { trustDomain?: string }>(async (o, ctx) => {
      if ((o.trustDomain ?? '') === '') throw new CliError('a trust domain name is required');
      const td = tdOf(o.trustDomain!, '-trustDomain');
      const r = await ctx.withClient((c) => c.call(c.trustDomain.getFederationRelationship, { trustDomain: td }));
      if (ctx.format === 'json') {
        writeJson(ctx.io.out, FrJson.toJSON(r));
        return;
      }
      ctx.io.out.write(`Found a federation relationship with trust domain ${td}:\n\n`);
      printRelationship(ctx.io.out, r, true);
    }),
  );

  addCommonOptions(
    fed
      .command('delete')
      .description('Deletes a dynamic federation relationship')
      .addOption(requiredFlag(new Option('--id <td>', 'SPIFFE ID of the trust domain'))),
  ).action(
    action<CommonOptions & { id?: string }>(async (o, ctx) => {
      if ((o.id ?? '') === '') throw new CliError('id is required');
      const td = tdOf(o.id!, '-id');
      const resp = await ctx.withClient((c) => c.call(c.trustDomain.batchDeleteFederationRelationship, { trustDomains: [td] }));
      const r = resp.results[0];
      if (ctx.format === 'json') writeJson(ctx.io.out, BatchDeleteFederationRelationshipResponse.toJSON(resp));
      if (r === undefined || (r.status?.code ?? 0) !== 0) {
        throw new CliError(`failed to delete federation relationship ${goQuote(td)}: ${r?.status?.message ?? 'no result'}`);
      }
      if (ctx.format !== 'json') ctx.io.out.write('federation relationship deleted.\n');
    }),
  );

  addCommonOptions(
    fed
      .command('refresh')
      .description("Refreshes the bundle from the specified federated trust domain's bundle endpoint")
      .addOption(requiredFlag(new Option('--id <td>', 'SPIFFE ID of the trust domain'))),
  ).action(
    action<CommonOptions & { id?: string }>(async (o, ctx) => {
      if ((o.id ?? '') === '') throw new CliError('id is required');
      const td = tdOf(o.id!, '-id');
      const resp = await ctx.withClient((c) => c.call(c.trustDomain.refreshBundle, { trustDomain: td }), { timeoutMs: 60_000 });
      if (ctx.format === 'json') writeJson(ctx.io.out, { trust_domain: td, sequence: resp.sequence.toString(10) });
      else ctx.io.out.write('Bundle refreshed\n');
    }),
  );
}
