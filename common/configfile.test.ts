import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, ConfigReader, closestKey, expandEnv, isConfigError, loadConfigFile, parseConfigText, pluginSections } from './configfile.js';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-configfile-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function write(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Runs fn, expects a ConfigError, returns its problems. */
function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(isConfigError(err), `expected ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_CONFIG_INVALID');
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

const YAML_TEXT = 'server:\n  trust_domain: example.org\n  bind_port: 8081\n  list: [a, b]\n';
const EXPECTED = { server: { trust_domain: 'example.org', bind_port: 8081, list: ['a', 'b'] } };

// ------------------------------------------------------------------ files

test('loadConfigFile reads YAML (.yaml, .yml) and JSON (.json) by extension', (t) => {
  const dir = tempDir(t);
  assert.deepEqual(loadConfigFile(write(dir, 'a.yaml', YAML_TEXT)), EXPECTED);
  assert.deepEqual(loadConfigFile(write(dir, 'a.yml', YAML_TEXT)), EXPECTED);
  assert.deepEqual(loadConfigFile(write(dir, 'a.json', JSON.stringify(EXPECTED))), EXPECTED);
  assert.deepEqual(loadConfigFile(write(dir, 'A.YAML', YAML_TEXT)), EXPECTED);
});

test('loadConfigFile reads .conf and extensionless files as JSON, else YAML', (t) => {
  const dir = tempDir(t);
  assert.deepEqual(loadConfigFile(write(dir, 'server.conf', JSON.stringify(EXPECTED, null, 2))), EXPECTED);
  assert.deepEqual(loadConfigFile(write(dir, 'server2.conf', YAML_TEXT)), EXPECTED);
  assert.deepEqual(loadConfigFile(write(dir, 'server', YAML_TEXT)), EXPECTED);
});

test('an empty (or comment-only) file is an empty map', (t) => {
  const dir = tempDir(t);
  assert.deepEqual(loadConfigFile(write(dir, 'e.yaml', '')), {});
  assert.deepEqual(loadConfigFile(write(dir, 'c.yaml', '# nothing here\n')), {});
  assert.deepEqual(loadConfigFile(write(dir, 'e.json', '  \n')), {});
});

test('a missing file or a directory is a ConfigError naming the path', (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'nope.yaml');
  assert.deepEqual(problemsOf(() => loadConfigFile(missing)), [`config: cannot read config file ${missing}: file not found`]);
  mkdirSync(join(dir, 'd.yaml'));
  assert.deepEqual(problemsOf(() => loadConfigFile(join(dir, 'd.yaml'))), [`config: cannot read config file ${join(dir, 'd.yaml')}: is a directory`]);
});

test('YAML syntax errors name the file, line and column', (t) => {
  const dir = tempDir(t);
  const path = write(dir, 'bad.yaml', 'server:\n  bind_port: 1\n  x: y: z\n');
  const problems = problemsOf(() => loadConfigFile(path));
  assert.equal(problems.length, 1);
  assert.match(problems[0]!, new RegExp(`^config: ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:6: invalid YAML: `));
});

test('duplicate YAML keys are errors with their line', (t) => {
  const dir = tempDir(t);
  const path = write(dir, 'dup.yaml', 'server:\n  trust_domain: a.org\n  trust_domain: b.org\n');
  const problems = problemsOf(() => loadConfigFile(path));
  assert.match(problems[0]!, /dup\.yaml:3:3: invalid YAML: Map keys must be unique/);
});

test('JSON syntax errors name the file, line and column', (t) => {
  const dir = tempDir(t);
  const a = write(dir, 'a.json', '{\n  "server": {\n    "bind_port": }\n}\n');
  const pa = problemsOf(() => loadConfigFile(a));
  assert.equal(pa.length, 1);
  assert.match(pa[0]!, /a\.json:3:18: invalid JSON: /);
  assert.ok(!pa[0]!.includes('\n'), 'one line, without the echoed input');
  const b = write(dir, 'b.json', '{\n  "server": {,\n');
  assert.match(problemsOf(() => loadConfigFile(b))[0]!, /b\.json:2:\d+: invalid JSON: /);
  // A .conf that looks like JSON reports the JSON error, not a YAML one.
  const c = write(dir, 'c.conf', '{\n  "server": {\n    "bind_port": 1,\n  }\n}\n');
  assert.match(problemsOf(() => loadConfigFile(c))[0]!, /c\.conf:\d+:\d+: invalid JSON: /);
});

test('parseConfigText takes an explicit format', () => {
  assert.deepEqual(parseConfigText('a: 1', 'x', 'yaml'), { a: 1 });
  assert.deepEqual(parseConfigText('{"a": 1}', 'x', 'json'), { a: 1 });
  assert.throws(() => parseConfigText('a: 1', 'x', 'json'), ConfigError);
});

test('loadConfigFile expands the environment only when given one', (t) => {
  const dir = tempDir(t);
  const path = write(dir, 's.yaml', 'server:\n  trust_domain: ${TD}\n  data_dir: $HOME_DIR/data\n');
  assert.deepEqual(loadConfigFile(path, { env: { TD: 'example.org', HOME_DIR: '/srv' } }), {
    server: { trust_domain: 'example.org', data_dir: '/srv/data' },
  });
  assert.deepEqual(loadConfigFile(path), { server: { trust_domain: '${TD}', data_dir: '$HOME_DIR/data' } });
});

test('expandEnv replaces $NAME and ${NAME}, unset names with "", $$ with $, and leaves other $ alone', () => {
  const env = { A: 'x', A_B: 'y', EMPTY: '', UNDEF: undefined };
  assert.equal(expandEnv('$A ${A} ${A}b $A_B ${A_B}', env), 'x x xb y y');
  assert.equal(expandEnv('[$MISSING][${MISSING}][$EMPTY][$UNDEF]', env), '[][][][]');
  assert.equal(expandEnv('pa$$word $$A $1 ${ $} ${1} $-x end$', env), 'pa$word $A $1 ${ $} ${1} $-x end$');
  assert.equal(expandEnv('no variables', env), 'no variables');
  assert.equal(expandEnv('$toString $constructor', {}), ' ', 'no prototype lookups');
});

// ------------------------------------------------------------------ ConfigReader

test('typed getters return values and defaults; null and absent mean unset', () => {
  const r = new ConfigReader({
    s: 'text',
    empty: '',
    n: 42,
    ns: '8081',
    b: true,
    bs: 'false',
    d: '1h30m',
    dn: 90,
    e: 'debug',
    l: ['a', 'b'],
    sec: { k: 'v' },
    nul: null,
  });
  assert.equal(r.string('s'), 'text');
  assert.equal(r.string('empty', 'def'), 'def');
  assert.equal(r.string('absent'), undefined);
  assert.equal(r.string('nul', 'def'), 'def');
  assert.equal(r.int('n', { min: 1, max: 100 }), 42);
  assert.equal(r.int('ns', { min: 1, max: 65535 }), 8081);
  assert.equal(r.int('absent', { default: 7 }), 7);
  assert.equal(r.bool('b', false), true);
  assert.equal(r.bool('bs', true), false);
  assert.equal(r.bool('absent', true), true);
  assert.equal(r.duration('d'), 5400);
  assert.equal(r.duration('dn'), 90);
  assert.equal(r.duration('absent', 60), 60);
  assert.equal(r.enum('e', ['DEBUG', 'INFO'] as const, 'INFO', { caseInsensitive: true }), 'DEBUG');
  assert.deepEqual(r.stringList('l'), ['a', 'b']);
  assert.deepEqual(r.stringList('absent', ['z']), ['z']);
  const sec = r.section('sec');
  assert.equal(sec.present, true);
  assert.equal(sec.path, 'sec');
  assert.equal(sec.string('k'), 'v');
  assert.equal(r.section('absent').present, false);
  assert.equal(r.section('nul').present, false);
  assert.equal(r.has('nul'), false);
  assert.equal(r.has('s'), true);
  r.throwIfInvalid();
});

test('bad values are problems in the documented format, and give the default', () => {
  const r = new ConfigReader({
    server: {
      bind_port: 'abc',
      big: 70000,
      frac: 1.5,
      inf: Infinity,
      str: 5,
      flag: 'yes',
      ttl: 'soon',
      ttl2: '500ms',
      ttl3: '30s',
      ttl4: { a: 1 },
      lvl: 'verbose',
      lvl2: 'debug',
      list: 'US',
      list2: ['US', 3],
      sec: 'not a map',
    },
  });
  const s = r.section('server');
  assert.equal(s.int('bind_port', { min: 1, max: 65535, default: 8081 }), 8081);
  s.int('big', { min: 1, max: 65535 });
  s.int('frac', { min: 0 });
  s.int('inf');
  s.string('str');
  assert.equal(s.bool('flag', false), false);
  s.duration('ttl');
  s.duration('ttl2');
  s.duration('ttl3', undefined, { min: 60 });
  s.duration('ttl4');
  s.enum('lvl', ['DEBUG', 'INFO'] as const, 'INFO');
  s.enum('lvl2', ['DEBUG', 'INFO'] as const, 'INFO');
  s.stringList('list');
  assert.deepEqual(s.stringList('list2'), ['US']);
  assert.equal(s.section('sec').present, true);
  assert.deepEqual(r.collectProblems(), [
    'config: server.bind_port: expected an integer between 1 and 65535, got "abc"',
    'config: server.big: expected an integer between 1 and 65535, got 70000',
    'config: server.frac: expected an integer of at least 0, got 1.5',
    'config: server.inf: expected an integer, got Infinity',
    'config: server.str: expected a string, got 5',
    'config: server.flag: expected true or false, got "yes"',
    'config: server.ttl: expected a duration such as "1h", "30m", "90s" or "1h30m" (or whole seconds), got "soon"',
    'config: server.ttl2: must be a whole number of seconds, got "500ms"',
    'config: server.ttl3: must be at least 1m, got "30s"',
    'config: server.ttl4: expected a duration such as "1h", "30m" or "90s", got a map',
    'config: server.lvl: expected one of DEBUG, INFO, got "verbose"',
    'config: server.lvl2: expected one of DEBUG, INFO, got "debug"',
    'config: server.list: expected a list of strings, got "US"',
    'config: server.list2[1]: expected a string, got 3',
    'config: server.sec: expected a map of settings, got "not a map"',
  ]);
});

test('unknown keys are problems naming their full dotted path, with a suggestion when close', () => {
  const r = new ConfigReader({ server: { trust_domian: 'x', bind_port: 1, zzz: 1, nested: { deep: 1 } }, bogus: {} });
  const s = r.section('server');
  s.string('trust_domain');
  s.int('bind_port');
  s.section('nested');
  assert.deepEqual(r.collectProblems(), [
    'config: bogus: unknown key',
    'config: server.trust_domian: unknown key (did you mean "trust_domain"?)',
    'config: server.zzz: unknown key',
    'config: server.nested.deep: unknown key',
  ]);
});

test('all problems are thrown together in one ConfigError', () => {
  const r = new ConfigReader({ a: 'x', b: 'y', c: 1 });
  r.int('a');
  r.bool('b');
  const problems = problemsOf(() => r.throwIfInvalid());
  assert.deepEqual(problems, [
    'config: c: unknown key',
    'config: a: expected an integer, got "x"',
    'config: b: expected true or false, got "y"',
  ]);
  const err = new ConfigError(problems);
  assert.equal(err.message, `3 configuration problems:\n  ${problems.join('\n  ')}`);
  assert.equal(new ConfigError(['config: one']).message, 'config: one');
});

test('a non-map root or section is a problem', () => {
  assert.deepEqual(new ConfigReader([1, 2]).collectProblems(), ['config: expected a map of settings, got a list']);
  assert.deepEqual(new ConfigReader('x').collectProblems(), ['config: expected a map of settings, got "x"']);
  assert.deepEqual(new ConfigReader(null).collectProblems(), []);
  assert.deepEqual(new ConfigReader(undefined).collectProblems(), []);
});

test('a one-element list of maps is read as a section (the HCL-to-JSON block shape)', () => {
  const r = new ConfigReader({ server: [{ trust_domain: 'example.org' }], two: [{}, {}] });
  assert.equal(r.section('server').string('trust_domain'), 'example.org');
  r.section('two');
  assert.deepEqual(r.collectProblems(), ['config: two: expected a map of settings, got a list']);
});

test('a reader with a path prefixes its messages; absorb takes in its problems', () => {
  const main = new ConfigReader({});
  const other = new ConfigReader({ x: 1, y: 'z' }, 'plugins.K.n.plugin_data');
  other.int('y');
  main.absorb(other);
  assert.deepEqual(main.collectProblems(), [
    'config: plugins.K.n.plugin_data.x: unknown key',
    'config: plugins.K.n.plugin_data.y: expected an integer, got "z"',
  ]);
});

test('unsupported and problem helpers', () => {
  const r = new ConfigReader({ federation: {}, other: null });
  r.unsupported('federation', 'is not supported yet');
  r.unsupported('other', 'never shown: null is unset');
  r.unsupported('absent', 'never shown');
  r.problemHere('whole file problem');
  r.problemLine('config: verbatim');
  assert.deepEqual(r.collectProblems(), ['config: federation: is not supported yet', 'config: whole file problem', 'config: verbatim']);
});

test('closestKey suggests only near misses', () => {
  assert.equal(closestKey('trust_domian', ['trust_domain', 'bind_port']), 'trust_domain');
  assert.equal(closestKey('NodeAtestor', ['NodeAttestor', 'KeyManager']), 'NodeAttestor');
  assert.equal(closestKey('banana', ['trust_domain', 'bind_port']), undefined);
  assert.equal(closestKey('c', ['a', 'b']), undefined, 'one-letter keys get no suggestion');
  assert.equal(closestKey('servr', ['server', 'plugins']), 'server');
});

// ------------------------------------------------------------------ plugin sections

test('pluginSections reads the SPIRE shape: { Kind: { name: { plugin_data, enabled } } }', () => {
  const root = new ConfigReader({
    plugins: {
      NodeAttestor: {
        join_token: { plugin_data: {} },
        k8s_psat: { plugin_data: { clusters: { c1: {} } } },
        bare: null,
        no_data: {},
        off: { enabled: false, plugin_data: { x: 1 } },
      },
    },
  });
  const p = root.section('plugins');
  const got = pluginSections(p, 'NodeAttestor');
  assert.deepEqual(
    got.map((s) => [s.name, s.path, s.enabled, s.data.value, s.data.path]),
    [
      ['join_token', 'plugins.NodeAttestor.join_token', true, {}, 'plugins.NodeAttestor.join_token.plugin_data'],
      ['k8s_psat', 'plugins.NodeAttestor.k8s_psat', true, { clusters: { c1: {} } }, 'plugins.NodeAttestor.k8s_psat.plugin_data'],
      ['bare', 'plugins.NodeAttestor.bare', true, {}, 'plugins.NodeAttestor.bare.plugin_data'],
      ['no_data', 'plugins.NodeAttestor.no_data', true, {}, 'plugins.NodeAttestor.no_data.plugin_data'],
      ['off', 'plugins.NodeAttestor.off', false, { x: 1 }, 'plugins.NodeAttestor.off.plugin_data'],
    ],
  );
  assert.deepEqual(pluginSections(p, 'KeyManager'), []);
  // plugin_data is not checked by the caller's reader: the plugin validates it later.
  assert.deepEqual(root.collectProblems(), []);
  const psat = got[1]!.data;
  assert.deepEqual(problemsOf(() => psat.throwIfInvalid()), ['config: plugins.NodeAttestor.k8s_psat.plugin_data.clusters: unknown key']);
});

test('pluginSections reads the HCL-to-JSON list shape the same way', () => {
  const asMap = new ConfigReader({ NodeAttestor: { join_token: { plugin_data: {} }, k8s_psat: { plugin_data: { a: 1 } } } });
  const asList = new ConfigReader({
    NodeAttestor: [{ join_token: [{ plugin_data: [{}] }] }, { k8s_psat: [{ plugin_data: [{ a: 1 }] }] }],
  });
  const flat = (r: ConfigReader) => pluginSections(r, 'NodeAttestor').map((s) => [s.name, s.path, s.enabled, s.data.value]);
  assert.deepEqual(flat(asList), flat(asMap));
  assert.deepEqual(asList.collectProblems(), []);
});

test('pluginSections reports duplicates, bad shapes, external plugins and bad enabled values', () => {
  const root = new ConfigReader({
    A: [{ x: {} }, { x: {} }, 'nope'],
    B: 'nope',
    C: { ext: { plugin_cmd: './bin', plugin_checksum: 'abc' }, file: { plugin_data_file: 'x.conf' }, bad: { enabled: 'maybe', plugin_data: 'str', extra: 1 } },
  });
  assert.equal(pluginSections(root, 'A').length, 1);
  assert.deepEqual(pluginSections(root, 'B'), []);
  const c = pluginSections(root, 'C');
  assert.deepEqual(c.map((s) => [s.name, s.enabled, s.data.value]), [['ext', true, {}], ['file', true, {}], ['bad', true, {}]]);
  assert.deepEqual(root.collectProblems(), [
    'config: C.bad.extra: unknown key',
    'config: A[2]: expected a map of plugin name to plugin settings, got "nope"',
    'config: A.x: configured more than once',
    'config: B: expected a map of plugin name to plugin settings, got "nope"',
    'config: C.ext.plugin_cmd: external plugins are not supported; Spindle plugins are built in',
    'config: C.ext.plugin_checksum: external plugins are not supported; Spindle plugins are built in',
    'config: C.file.plugin_data_file: is not supported yet; put the settings in plugin_data',
    'config: C.bad.enabled: expected true or false, got "maybe"',
    'config: C.bad.plugin_data: expected a map of plugin settings, got "str"',
  ]);
});

test('pluginSections accepts enabled written as a string, as HCL does', () => {
  const root = new ConfigReader({ K: { a: { enabled: 'false' }, b: { enabled: true } } });
  assert.deepEqual(pluginSections(root, 'K').map((s) => [s.name, s.enabled]), [['a', false], ['b', true]]);
});
