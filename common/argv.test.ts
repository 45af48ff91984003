import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { commandSpecOf, normalizeArgv, type CommandSpec } from './argv.js';

function program(): Command {
  const p = new Command('prog').version('1.0.0', '-v, --version');
  const entry = p.command('entry');
  entry
    .command('create')
    .option('--spiffeID <id>')
    .option('--parentID <id>')
    .option('--selector <sel>', 'selector', (v: string, prev: string[] = []) => [...prev, v])
    .option('--x509SVIDTTL <seconds>')
    .option('--data <file>')
    .option('--ttl <n>')
    .option('--admin')
    .option('--socketPath <path>');
  entry.command('show').option('--spiffeID <id>').option('--downstream');
  p.command('token').command('generate').option('--ttl <n>').option('--spiffeID <id>');
  return p;
}

const spec: CommandSpec = commandSpecOf(program());
const norm = (...argv: string[]): string[] => normalizeArgv(argv, spec);

test('single-dash camelCase flags become --camelCase', () => {
  assert.deepEqual(norm('entry', 'create', '-spiffeID', 'spiffe://example.org/w', '-parentID', 'spiffe://example.org/p'), [
    'entry',
    'create',
    '--spiffeID',
    'spiffe://example.org/w',
    '--parentID',
    'spiffe://example.org/p',
  ]);
});

test('kebab-case, snake_case and other casings map to the declared option', () => {
  assert.deepEqual(norm('entry', 'create', '--spiffe-id', 'a', '--parent_id', 'b', '--x509-svid-ttl', '60', '--SOCKET-PATH', 's'), [
    'entry',
    'create',
    '--spiffeID',
    'a',
    '--parentID',
    'b',
    '--x509SVIDTTL',
    '60',
    '--socketPath',
    's',
  ]);
  assert.deepEqual(norm('entry', 'create', '--spiffeID', 'a'), ['entry', 'create', '--spiffeID', 'a']);
});

test('-flag=value and --kebab=value forms keep the value intact (first = splits)', () => {
  assert.deepEqual(norm('entry', 'create', '-selector=k8s:label:a=b', '--spiffe-id=spiffe://x/y'), [
    'entry',
    'create',
    '--selector=k8s:label:a=b',
    '--spiffeID=spiffe://x/y',
  ]);
});

test('the value after a value-taking flag is never rewritten', () => {
  assert.deepEqual(norm('entry', 'create', '-data', '-'), ['entry', 'create', '--data', '-']);
  assert.deepEqual(norm('entry', 'create', '-ttl', '-5'), ['entry', 'create', '--ttl', '-5']);
  assert.deepEqual(norm('entry', 'create', '-selector', '-spiffeID'), ['entry', 'create', '--selector', '-spiffeID']);
  assert.deepEqual(norm('entry', 'create', '-selector', '--parent-id'), ['entry', 'create', '--selector', '--parent-id']);
});

test('lone dash, negative numbers and positionals are left alone', () => {
  assert.deepEqual(norm('entry', 'create', '-', '-5', '-.5', 'x'), ['entry', 'create', '-', '-5', '-.5', 'x']);
});

test('unknown flags and flags of other commands are left for commander to reject', () => {
  assert.deepEqual(norm('entry', 'create', '-nope', 'v', '--no-such'), ['entry', 'create', '-nope', 'v', '--no-such']);
  // -downstream belongs to `entry show`, not `entry create`.
  assert.deepEqual(norm('entry', 'create', '-downstream'), ['entry', 'create', '-downstream']);
  assert.deepEqual(norm('entry', 'show', '-downstream'), ['entry', 'show', '--downstream']);
});

test('everything after -- is copied verbatim', () => {
  assert.deepEqual(norm('entry', 'create', '--', '-spiffeID', 'x'), ['entry', 'create', '--', '-spiffeID', 'x']);
});

test('Go boolean forms: -admin=true becomes --admin, -admin=false is dropped, other values pass on', () => {
  assert.deepEqual(norm('entry', 'create', '-admin=true'), ['entry', 'create', '--admin']);
  assert.deepEqual(norm('entry', 'create', '-admin=false'), ['entry', 'create']);
  assert.deepEqual(norm('entry', 'create', '-admin=1', '--admin=F'), ['entry', 'create', '--admin']);
  assert.deepEqual(norm('entry', 'create', '-admin=maybe'), ['entry', 'create', '--admin=maybe']);
  assert.deepEqual(norm('entry', 'create', '-admin', 'positional'), ['entry', 'create', '--admin', 'positional']);
});

test('help and version spellings', () => {
  assert.deepEqual(norm('entry', 'create', '-h'), ['entry', 'create', '-h']);
  assert.deepEqual(norm('entry', 'create', '-help'), ['entry', 'create', '--help']);
  assert.deepEqual(norm('-version'), ['--version']);
  assert.deepEqual(norm('-v'), ['-v']);
});

test('subcommands are only recognised before other positionals; scopes follow them', () => {
  assert.deepEqual(norm('token', 'generate', '-ttl', '60', '-spiffe-id', 'x'), ['token', 'generate', '--ttl', '60', '--spiffeID', 'x']);
  // `create` after a positional is just a value.
  assert.deepEqual(norm('entry', 'junk', 'create', '-spiffeID'), ['entry', 'junk', 'create', '-spiffeID']);
});

test('ambiguous folded names are left alone', () => {
  const s: CommandSpec = {
    options: [
      { long: 'fooBar', takesValue: true },
      { long: 'foo-bar', takesValue: true },
    ],
    subcommands: new Map(),
  };
  assert.deepEqual(normalizeArgv(['--foobar', 'x'], s), ['--foobar', 'x']);
  assert.deepEqual(normalizeArgv(['-fooBar', 'x'], s), ['--fooBar', 'x']);
});

test('commander parses the normalised argv as intended', async () => {
  const p = program();
  let seen: Record<string, unknown> | undefined;
  p.commands
    .find((c) => c.name() === 'entry')!
    .commands.find((c) => c.name() === 'create')!
    .action((opts: Record<string, unknown>) => {
      seen = opts;
    });
  const argv = normalizeArgv(
    ['entry', 'create', '-spiffeID', 'spiffe://example.org/w', '--parent-id=spiffe://example.org/p', '-selector', 'unix:uid:1000', '--selector', 'k8s:ns:-x', '-admin=true', '-ttl', '-5'],
    commandSpecOf(p),
  );
  await p.parseAsync(argv, { from: 'user' });
  assert.deepEqual(seen, {
    spiffeID: 'spiffe://example.org/w',
    parentID: 'spiffe://example.org/p',
    selector: ['unix:uid:1000', 'k8s:ns:-x'],
    admin: true,
    ttl: '-5',
  });
});
