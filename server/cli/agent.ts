/** `agent list|show|evict|ban|count`: SPIRE's flags and output. */
import { Option, type Command } from 'commander';
import { requiredFlag } from '../../common/cli.js';
import { field, goTimeString, pluralize, writeJson } from '../../common/output.js';
import { Agent as AgentMsg, type Agent } from '../../proto/gen/spindle/types/v1/types.js';
import { CountAgentsResponse, ListAgentsResponse, type AgentFilter } from '../../proto/gen/spindle/admin/v1/admin.js';
import { action, addCommonOptions, collect, parseBoolFlag, type CommonOptions } from './common.js';
import { idFlag, matchFlag, selectorFlags } from './entry.js';
import { CliError } from './errors.js';

const LIST_PAGE_SIZE = 1000;
const W = 18;

function formatAgent(a: Agent): string {
  let s = '';
  s += field('SPIFFE ID', a.spiffeId, W);
  s += field('Attestation type', a.attestationType, W);
  s += field('Expiration time', goTimeString(a.x509SvidExpiresAt), W);
  // Banned agents have no serial number (SPIRE clears it).
  s += a.banned ? field('Banned', true, W) : field('Serial number', a.x509SvidSerialNumber, W);
  s += field('Can re-attest', a.canReattest, W);
  return s;
}

interface FilterOptions extends CommonOptions {
  attestationType?: string;
  banned?: string;
  canReattest?: string;
  selector?: string[];
  matchSelectorsOn: string;
  expiresBefore?: string;
}

/** `-expiresBefore`: a date (`2006-01-02`, UTC midnight), an RFC 3339 time, or unix seconds. */
function parseExpiresBefore(value: string): bigint {
  if (/^\d+$/.test(value)) return BigInt(value);
  const date = /^\d{4}-\d{2}-\d{2}$/.test(value) ? new Date(`${value}T00:00:00Z`) : new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}/.test(value) || Number.isNaN(date.getTime())) {
    throw new CliError(`invalid value ${JSON.stringify(value)} for -expiresBefore: expected a date (2006-01-02), an RFC 3339 time or unix seconds`);
  }
  return BigInt(Math.floor(date.getTime() / 1000));
}

function addFilterOptions(cmd: Command): Command {
  cmd
    .option('--attestationType <type>', 'Filter by attestation type, like join_token or k8s_psat')
    .option('--banned <bool>', "Filter by banned status: 'true' for banned agents, 'false' for the others")
    .option('--canReattest <bool>', "Filter by whether agents can re-attest: 'true' or 'false'")
    .option('--selector <type:value>', 'A colon-delimited type:value selector. Can be used more than once', collect)
    .option('--matchSelectorsOn <match>', 'The match mode used when filtering by selectors. Options: exact, any, superset and subset', 'superset')
    .option('--expiresBefore <date>', 'Filter by agents whose SVID expires before this date (2006-01-02, RFC 3339, or unix seconds)');
  return addCommonOptions(cmd);
}

function filterFrom(o: FilterOptions): AgentFilter {
  const f: AgentFilter = { byAttestationType: o.attestationType ?? '', bySelectors: undefined, byExpiresBefore: 0n };
  if (o.banned !== undefined) f.byBanned = parseBoolFlag('banned', o.banned);
  if (o.canReattest !== undefined) f.byCanReattest = parseBoolFlag('canReattest', o.canReattest);
  if (o.selector !== undefined && o.selector.length > 0) {
    f.bySelectors = { selectors: selectorFlags(o.selector), match: matchFlag('matchSelectorsOn', o.matchSelectorsOn) };
  }
  if (o.expiresBefore !== undefined) f.byExpiresBefore = parseExpiresBefore(o.expiresBefore);
  return f;
}

type IdOptions = CommonOptions & { spiffeID?: string };

function agentId(o: IdOptions): string {
  if ((o.spiffeID ?? '') === '') throw new CliError('a SPIFFE ID is required: set -spiffeID');
  return idFlag('spiffeID', o.spiffeID!);
}

function idCommand(parent: Command, name: string, description: string, what: string): Command {
  return addCommonOptions(parent.command(name).description(description).addOption(requiredFlag(new Option('--spiffeID <id>', `The SPIFFE ID of the agent to ${what} (agent identity)`))));
}

export function register(program: Command): void {
  const agent = program.command('agent').description('Manage attested agents');

  addFilterOptions(agent.command('list').description('Lists attested agents and their SPIFFE IDs')).action(
    action<FilterOptions>(async (o, ctx) => {
      const filter = filterFrom(o);
      const agents = await ctx.withClient(async (c) => {
        const out: Agent[] = [];
        let pageToken = '';
        do {
          const resp = await c.call(c.agent.listAgents, { filter, pageSize: LIST_PAGE_SIZE, pageToken });
          out.push(...resp.agents);
          pageToken = resp.nextPageToken;
        } while (pageToken !== '');
        return out;
      });
      if (ctx.format === 'json') {
        writeJson(ctx.io.out, { agents: [], ...(ListAgentsResponse.toJSON({ agents, nextPageToken: '' }) as object) });
        return;
      }
      if (agents.length === 0) {
        ctx.io.out.write('No attested agents found\n');
        return;
      }
      ctx.io.out.write(`Found ${pluralize(agents.length, 'attested agent', 'attested agents')}:\n\n`);
      for (const a of agents) ctx.io.out.write(`${formatAgent(a)}\n`);
    }),
  );

  idCommand(agent, 'show', 'Shows the details of an attested agent given its SPIFFE ID', 'show').action(
    action<IdOptions>(async (o, ctx) => {
      const id = agentId(o);
      const a = await ctx.withClient((c) => c.call(c.agent.getAgent, { id }));
      if (ctx.format === 'json') {
        writeJson(ctx.io.out, AgentMsg.toJSON(a));
        return;
      }
      ctx.io.out.write(`Found an attested agent given its SPIFFE ID\n\n${formatAgent(a)}\n`);
      for (const s of a.selectors) ctx.io.out.write(field('Selectors', `${s.type}:${s.value}`, W));
    }),
  );

  idCommand(agent, 'evict', 'Evicts an attested agent given its SPIFFE ID', 'evict').action(
    action<IdOptions>(async (o, ctx) => {
      const id = agentId(o);
      await ctx.withClient((c) => c.call(c.agent.deleteAgent, { id }));
      if (ctx.format === 'json') writeJson(ctx.io.out, {});
      else ctx.io.out.write('Agent evicted successfully\n');
    }),
  );

  idCommand(agent, 'ban', 'Ban an attested agent given its SPIFFE ID', 'ban').action(
    action<IdOptions>(async (o, ctx) => {
      const id = agentId(o);
      await ctx.withClient((c) => c.call(c.agent.banAgent, { id }));
      if (ctx.format === 'json') writeJson(ctx.io.out, {});
      else ctx.io.out.write('Agent banned successfully\n');
    }),
  );

  addFilterOptions(agent.command('count').description('Count attested agents')).action(
    action<FilterOptions>(async (o, ctx) => {
      const resp = await ctx.withClient((c) => c.call(c.agent.countAgents, { filter: filterFrom(o) }));
      if (ctx.format === 'json') writeJson(ctx.io.out, { ...(CountAgentsResponse.toJSON(resp) as object), count: resp.count });
      else ctx.io.out.write(`${pluralize(resp.count, 'attested agent', 'attested agents')}\n`);
    }),
  );
}
