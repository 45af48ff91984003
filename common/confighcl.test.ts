import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse as parseYaml } from 'yaml';
import { isConfigError, parseConfigText } from './configfile.js';
import { sniffConfigFormat } from './configformat.js';
import { parseHclConfig } from './confighcl.js';
import { SPIRE_AGENT_CONF, SPIRE_AGENT_YAML, SPIRE_SERVER_CONF, SPIRE_SERVER_YAML } from '../test/support/spireconf.js';

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(isConfigError(err), `expected ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

test('SPIRE server.conf and agent.conf (HCL) read to the same object as their YAML equivalents', () => {
  assert.deepEqual(parseConfigText(SPIRE_SERVER_CONF, '/etc/spire/server.conf'), parseYaml(SPIRE_SERVER_YAML));
  assert.deepEqual(parseConfigText(SPIRE_AGENT_CONF, '/etc/spire/agent.conf'), parseYaml(SPIRE_AGENT_YAML));
  // .hcl is HCL by its extension, whatever its first line.
  assert.deepEqual(parseConfigText(`\n\n${SPIRE_AGENT_CONF}`, 'agent.hcl'), parseYaml(SPIRE_AGENT_YAML));
});

test('blocks become maps: plugin_data as a block or as an attribute, empty bodies, labels', () => {
  assert.deepEqual(parseHclConfig('plugins {\n  KeyManager "memory" {}\n  NodeAttestor join_token {\n    plugin_data {}\n  }\n  WorkloadAttestor "unix" {\n    plugin_data = { discover_workload_path = true }\n  }\n}\n', 'a.hcl'), {
    plugins: { KeyManager: { memory: {} }, NodeAttestor: { join_token: { plugin_data: {} } }, WorkloadAttestor: { unix: { plugin_data: { discover_workload_path: true } } } },
  });
  // Lists of scalars, numbers, booleans and null stay what they are; quoted object keys work.
  assert.deepEqual(parseHclConfig('a = ["x", "y"]\nb = 8081\nc = false\nd = null\ne = { "My Cluster" = { f = [] } }\n', 'a.hcl'), {
    a: ['x', 'y'],
    b: 8081,
    c: false,
    d: null,
    e: { 'My Cluster': { f: [] } },
  });
  assert.deepEqual(parseHclConfig('', 'a.hcl'), {});
  assert.deepEqual(parseHclConfig('# only a comment\n', 'a.hcl'), {});
});

test('an HCL syntax error names the file, line and column and says what is wrong', () => {
  assert.deepEqual(problemsOf(() => parseConfigText('server {\n  trust_domain = "example.org"\n  bind_port =\n}\n', '/etc/spire/server.conf')), [
    'config: /etc/spire/server.conf:3:14: invalid HCL: Invalid expression; Expected the start of an expression, but found an invalid expression token.',
  ]);
  const unclosed = problemsOf(() => parseConfigText('server {\n  trust_domain = "example.org"\n', 'server.hcl'));
  assert.equal(unclosed.length, 1);
  assert.match(unclosed[0]!, /^config: server\.hcl:1:8: invalid HCL: Unclosed configuration block; /);
  // A key set twice is an error, as in YAML, with both places.
  assert.deepEqual(problemsOf(() => parseConfigText('server {\n  bind_port = 1\n  bind_port = 2\n}\n', 'x.hcl')), [
    'config: x.hcl:3:3: invalid HCL: Attribute redefined; The argument "bind_port" was already set at x.hcl:2:3. Each argument may be set only once.',
  ]);
});

test('a block written twice is an error naming the block', () => {
  assert.deepEqual(problemsOf(() => parseConfigText('server {\n  bind_port = 1\n}\nserver {\n  data_dir = "d"\n}\n', 's.conf')), [
    'config: s.conf: invalid HCL: the block server is written 2 times; write it once, with all its settings',
  ]);
  assert.deepEqual(problemsOf(() => parseConfigText('plugins {\n  NodeAttestor "join_token" {}\n  NodeAttestor "join_token" {}\n}\n', 's.hcl')), [
    'config: s.hcl: invalid HCL: the block plugins.NodeAttestor.join_token is written 2 times; write it once, with all its settings',
  ]);
});

test('.conf and extensionless files: HCL, JSON or YAML by the first line that is not blank or a # comment', () => {
  assert.equal(sniffConfigFormat(SPIRE_SERVER_CONF), 'hcl');
  assert.equal(sniffConfigFormat('\n  # c\nagent {\n'), 'hcl');
  assert.equal(sniffConfigFormat('DataStore "sql" {'), 'hcl');
  assert.equal(sniffConfigFormat('DataStore sql {'), 'hcl');
  assert.equal(sniffConfigFormat('log_level = "DEBUG"'), 'hcl');
  assert.equal(sniffConfigFormat('// comment\nserver: {}'), 'hcl');
  assert.equal(sniffConfigFormat('/* comment */'), 'hcl');
  assert.equal(sniffConfigFormat('# c\n{"server": {}}'), 'json');
  assert.equal(sniffConfigFormat('[1]'), 'json');
  assert.equal(sniffConfigFormat(SPIRE_SERVER_YAML), 'yaml');
  assert.equal(sniffConfigFormat('server: {bind_port: 1}'), 'yaml');
  assert.equal(sniffConfigFormat('---\nserver:\n'), 'yaml');
  assert.equal(sniffConfigFormat('a == b'), 'yaml');
  assert.equal(sniffConfigFormat(''), 'yaml');
  // So an existing YAML server.conf keeps loading as YAML.
  assert.deepEqual(parseConfigText(SPIRE_SERVER_YAML, 'server.conf'), parseYaml(SPIRE_SERVER_YAML));
});

test('HCL expressions are not evaluated: function calls and references stay text, no file or variable is read', () => {
  const v = parseHclConfig('a = file("/etc/passwd")\nb = "${HOME}"\nc = upper("x")\nd = var.x\n', 'x.hcl') as Record<string, unknown>;
  assert.deepEqual(v, { a: '${file("/etc/passwd")}', b: '${HOME}', c: '${upper("x")}', d: '${var.x}' });
});

test('the HCL parser runs in a child process: its Go runtime never loads into the caller', () => {
  const before = process.memoryUsage().rss;
  assert.deepEqual(parseHclConfig('server {\n  trust_domain = "example.org"\n}\n', 'server.conf'), { server: { trust_domain: 'example.org' } });
  assert.equal((globalThis as { Go?: unknown }).Go, undefined, "Go's wasm_exec.js was not loaded here");
  // In-process the parser's Go heap and compiled code stay at about +70 MB.
  const grewMb = (process.memoryUsage().rss - before) / 1e6;
  assert.ok(grewMb < 30, `the caller's RSS grew ${grewMb.toFixed(0)} MB`);
});
