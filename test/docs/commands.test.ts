// The command blocks of README.md and docs/*.md, run as a reader pastes them: in order, one file
// at a time, each file in a fresh clone of this checkout (its tracked files as they are now,
// including uncommitted edits), with node_modules linked and dist/ and the native addon copied,
// as `npm install` leaves a clone. What counts as a command block and the markers for blocks
// that keep running or cannot run here are in test/docs/blocks.ts.
//
// Each file gets its own network and mount namespace (unshare; the test needs root, as the rest
// of the suite does): a loopback of its own, so the documented default ports (8081) are free,
// and a private tmpfs on /tmp, so the default socket paths (/tmp/spindle-server/...) are not
// shared with anything else on the machine. The foreground blocks run in one bash (variables
// and `cd` carry over from block to block, as in a terminal) under `set -eo pipefail`: the first
// failing command fails the test, naming the file, the block's line and its output. Each block
// has a time bound. When a file is done, its clone must have no untracked or modified files:
// everything the docs write goes to a git-ignored place.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../support/paths.js';
import { commandBlocks, type CommandBlock } from './blocks.js';

/** Blocks that cannot run here, per file. Changing a count is a deliberate edit of this table. */
const EXPECTED_SKIPS: Record<string, number> = {
  'README.md': 2,
  'docs/federation-endpoint.md': 1,
  'docs/kubernetes.md': 13,
  'docs/performance.md': 1,
  'docs/proxy.md': 1,
};
const BLOCK_TIMEOUT_MS = 60_000;
const SENTINEL = '__DOCS_TEST_BLOCK_DONE__';

const docFiles = (): string[] => [
  'README.md',
  ...readdirSync(join(repoRoot, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`),
];

function git(args: string[], cwd = repoRoot): string {
  const r = spawnSync('git', ['-c', 'user.name=docs-test', '-c', 'user.email=docs-test@localhost', ...args], { cwd, encoding: 'utf8' });
  assert.equal(r.status, 0, `git ${args.join(' ')} failed (status ${r.status}): ${r.stderr || '(nothing on stderr)'}\n${r.stdout}`);
  return r.stdout;
}

/**
 * A commit holding the checkout's tracked files as they are now: HEAD when they are unchanged
 * (as in CI), else what `git stash create` records without touching the tree. (`stash create`
 * refreshes the index under index.lock and fails quietly while another git holds it, so it is
 * used only when there is something to record.)
 */
function checkoutRevision(): string {
  const diff = spawnSync('git', ['diff', '--quiet', 'HEAD', '--'], { cwd: repoRoot, encoding: 'utf8' });
  if (diff.status === 0) return git(['rev-parse', 'HEAD']).trim();
  assert.equal(diff.status, 1, `git diff HEAD failed: ${diff.stderr}`);
  return git(['stash', 'create']).trim() || git(['rev-parse', 'HEAD']).trim();
}

/** A clone of the checkout's tracked files as they are now, ready as after `npm install`. */
function freshClone(): { dir: string; remove: () => void } {
  // Not under /tmp: each file's namespace mounts its own empty /tmp.
  const base = mkdtempSync(join(existsSync('/var/tmp') ? '/var/tmp' : tmpdir(), 'spindle-docs-'));
  const dir = join(base, 'spindle');
  const rev = checkoutRevision();
  git(['clone', '--quiet', '--shared', '--no-checkout', repoRoot, dir], base);
  git(['checkout', '--quiet', '--detach', rev], dir);
  // An empty directory here; the file's mount namespace bind-mounts the checkout's node_modules
  // on it (a symlink would point into /tmp, hidden by that namespace's own /tmp, when the
  // checkout lives there).
  mkdirSync(join(dir, 'node_modules'));
  appendFileSync(join(dir, '.git', 'info', 'exclude'), '/node_modules\n');
  cpSync(join(repoRoot, 'dist'), join(dir, 'dist'), { recursive: true });
  const addon = join('agent', 'native', 'peercred', 'build');
  cpSync(join(repoRoot, addon), join(dir, addon), { recursive: true });
  return { dir, remove: () => rmSync(base, { recursive: true, force: true }) };
}

interface Proc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function track(child: ChildProcess): Proc {
  let out = '';
  child.stdout!.on('data', (d) => (out += String(d)));
  child.stderr!.on('data', (d) => (out += String(d)));
  // A death by signal N is reported as the shell does: 128 + N.
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : null))),
  );
  return { child, output: () => out, exited };
}

/** Resolves when `cond` holds, or rejects with `what` after `ms`, or when `proc` exits first. */
async function waitFor(proc: Proc, cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  let done = false;
  void proc.exited.then(() => (done = true));
  while (!cond()) {
    if (done) {
      await new Promise((r) => setTimeout(r, 100)); // let the last output arrive
      if (cond()) return;
      throw new Error(`${what}: the shell exited (status ${await proc.exited}) first`);
    }
    if (Date.now() > deadline) throw new Error(`${what}: not done after ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function killGroup(p: Proc, signal: NodeJS.Signals): void {
  try {
    process.kill(-p.child.pid!, signal);
  } catch {
    // already gone
  }
}

async function stop(p: Proc): Promise<void> {
  killGroup(p, 'SIGTERM');
  const timer = setTimeout(() => killGroup(p, 'SIGKILL'), 15_000);
  await p.exited;
  clearTimeout(timer);
}

const show = (file: string, b: CommandBlock): string => `${file}:${b.line}:\n${b.text.replace(/^/gm, '    ')}`;
const tail = (s: string): string => s.split('\n').slice(-40).join('\n');

async function runFile(file: string, blocks: CommandBlock[], log: (line: string) => void): Promise<void> {
  const clone = freshClone();
  const env = { ...process.env };
  delete env['SPIFFE_ENDPOINT_SOCKET'];
  // A new network namespace (loopback up) and mount namespace with the checkout's node_modules
  // bound into the clone, then an empty tmpfs on /tmp.
  const setup = 'mount --bind "$1" node_modules && ip link set lo up && mount -t tmpfs -o mode=1777 docs-test-tmp /tmp && exec bash --noprofile --norc';
  const shell = track(
    spawn(
      'unshare',
      ['--net', '--mount', '--propagation', 'private', '--', 'bash', '--noprofile', '--norc', '-c', setup, 'docs-test', join(repoRoot, 'node_modules')],
      { cwd: clone.dir, env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] },
    ),
  );
  const background: { proc: Proc; block: CommandBlock }[] = [];
  try {
    shell.child.stdin!.write('set -eo pipefail\n');
    let n = 0;
    for (const b of blocks) {
      if (b.mode.kind === 'skip') {
        log(`skipped ${file}:${b.line}: ${b.mode.reason}`);
        continue;
      }
      n++;
      if (b.mode.kind === 'background') {
        // Another terminal: same namespaces, same directory, its own process group.
        const proc = track(
          spawn('nsenter', ['--target', String(shell.child.pid), '--net', '--mount', `--wd=${clone.dir}`, '--', 'bash', '--noprofile', '--norc', '-eo', 'pipefail', '-c', b.text], {
            cwd: clone.dir,
            env,
            detached: true,
            stdio: ['ignore', 'pipe', 'pipe'],
          }),
        );
        const until = b.mode.until;
        try {
          await waitFor(proc, () => proc.output().includes(until), BLOCK_TIMEOUT_MS, `waiting for "${until}"`);
        } catch (err) {
          await stop(proc);
          assert.fail(`${(err as Error).message} from the background block ${show(file, b)}its output:\n${tail(proc.output())}`);
        }
        if (b.mode.ctrlC) {
          killGroup(proc, 'SIGINT');
          const code = await Promise.race([proc.exited, new Promise<string>((r) => setTimeout(() => r('timeout'), 20_000))]);
          // npm (npm start) ends by SIGINT itself once its script has stopped: status 130, as a
          // terminal shows it; the demo's own exit is checked by what it printed.
          if (code !== 0 && code !== 130) {
            await stop(proc);
            assert.fail(`Ctrl-C did not stop ${show(file, b)}cleanly (status ${code}); its output:\n${tail(proc.output())}`);
          }
        } else background.push({ proc, block: b });
        log(`ran ${file}:${b.line} in the background (until "${until}"${b.mode.ctrlC ? ', then Ctrl-C' : ''})`);
        continue;
      }
      const mark = `${SENTINEL}${n}`;
      const before = shell.output().length;
      shell.child.stdin!.write(`{\n${b.text}} </dev/null\nprintf '\\n%s\\n' '${mark}'\n`);
      try {
        await waitFor(shell, () => shell.output().includes(mark), BLOCK_TIMEOUT_MS, 'the block');
      } catch (err) {
        assert.fail(`${(err as Error).message}: ${show(file, b)}its output:\n${tail(shell.output().slice(before))}`);
      }
      log(`ran ${file}:${b.line}`);
    }
    for (const { proc, block } of background) {
      const code = await Promise.race([proc.exited, Promise.resolve('running')]);
      assert.equal(code, 'running', `the background block ${show(file, block)}exited early (status ${code}); its output:\n${tail(proc.output())}`);
    }
  } finally {
    for (const { proc } of background.reverse()) await stop(proc);
    shell.child.stdin!.end();
    await stop(shell);
  }
  try {
    const dirty = git(['status', '--porcelain', '--untracked-files=all'], clone.dir);
    assert.equal(dirty, '', `${file}'s commands left files in the checkout that git does not ignore:\n${dirty}`);
  } finally {
    clone.remove();
  }
}

describe('docs: every command block of README.md and docs/*.md runs as pasted', { concurrency: true }, () => {
  const files = docFiles();
  // A file whose blocks or markers cannot be read fails the first test below, naming it.
  const errors: string[] = [];
  const parsed = new Map<string, CommandBlock[]>();
  for (const f of files) {
    try {
      parsed.set(f, commandBlocks(readFileSync(join(repoRoot, f), 'utf8'), f));
    } catch (err) {
      errors.push((err as Error).message);
    }
  }

  test('the skipped blocks are exactly the known ones (a new skip is a deliberate change)', () => {
    assert.deepEqual(errors, []);
    const skips: Record<string, number> = {};
    for (const [f, blocks] of parsed) {
      const n = blocks.filter((b) => b.mode.kind === 'skip').length;
      if (n > 0) skips[f] = n;
    }
    assert.deepEqual(skips, EXPECTED_SKIPS);
  });

  for (const [file, blocks] of parsed) {
    if (!blocks.some((b) => b.mode.kind !== 'skip')) continue;
    test(`${file}: ${blocks.filter((b) => b.mode.kind !== 'skip').length} blocks run, ${blocks.filter((b) => b.mode.kind === 'skip').length} skipped`, async (t) => {
      assert.equal(process.getuid?.(), 0, 'this test runs each file in its own network and mount namespace (unshare) and must run as root (CI does); it did NOT run');
      await runFile(file, blocks, (line) => t.diagnostic(line));
    });
  }
});

describe('docs: command block extraction', () => {
  test('sh/bash/shell fences are commands, markers apply to the next block, bad markers are errors', () => {
    const md = [
      'intro',
      '```sh',
      'echo one',
      '```',
      '```text',
      '$ not run',
      '```',
      '<!-- docs-test: background until "ready" -->',
      '',
      '```bash',
      'server run',
      '```',
      '<!-- docs-test: background until "go" then ctrl-c -->',
      '```shell',
      'npm start',
      '```',
      '<!-- docs-test: skip needs a cluster -->',
      '```sh',
      'kubectl apply',
      '```',
    ].join('\n');
    const blocks = commandBlocks(md, 'x.md');
    assert.deepEqual(
      blocks.map((b) => [b.line, b.text, b.mode]),
      [
        [2, 'echo one\n', { kind: 'run' }],
        [10, 'server run\n', { kind: 'background', until: 'ready', ctrlC: false }],
        [14, 'npm start\n', { kind: 'background', until: 'go', ctrlC: true }],
        [18, 'kubectl apply\n', { kind: 'skip', reason: 'needs a cluster' }],
      ],
    );
    assert.throws(() => commandBlocks('<!-- docs-test: skp x -->\n```sh\nx\n```\n', 'y.md'), /y\.md:1: unknown docs-test marker "skp x"/);
    assert.throws(() => commandBlocks('<!-- docs-test: skip x -->\ntext\n```sh\nx\n```\n', 'y.md'), /y\.md:1: the docs-test marker is not followed by a command block/);
    assert.throws(() => commandBlocks('<!-- docs-test: skip x -->\n```yaml\nx: 1\n```\n', 'y.md'), /followed by a `yaml` block/);
    assert.throws(() => commandBlocks('```sh\nx\n', 'y.md'), /y\.md:1: unclosed code fence/);
  });
});
