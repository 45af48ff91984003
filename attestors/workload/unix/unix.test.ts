import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigReader, isConfigError } from '../../../common/configfile.js';
import type { Selector } from '../../../common/selector.js';
import { buildWorkloadAttestors } from '../registry.js';
import { WorkloadAttestationError } from '../types.js';
import { parseIdNames, UnixWorkloadAttestor } from './unix.js';

const root = mkdtempSync(join(tmpdir(), 'spindle-unix-attestor-'));
after(() => rmSync(root, { recursive: true, force: true }));

const values = (sels: Selector[]): string[] => sels.map((s) => `${s.type}:${s.value}`);

function status(uid: string, gid: string, groups: string): string {
  return `Name:\tworkload\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t4242\nUid:\t${uid}\nGid:\t${gid}\nFDSize:\t64\nGroups:\t${groups}\nVmPeak:\t  1000 kB\n`;
}

/** A fake host: <dir>/proc/<pid>/{status,exe} and <dir>/etc/{passwd,group}. */
function fakeHost(name: string, opts: { statusText: string; binary?: Buffer; passwd?: string; group?: string; pid?: number }): { procRoot: string; etcRoot: string; binPath: string } {
  const dir = join(root, name);
  const pid = opts.pid ?? 4242;
  mkdirSync(join(dir, 'proc', String(pid)), { recursive: true });
  mkdirSync(join(dir, 'etc'), { recursive: true });
  mkdirSync(join(dir, 'bin'), { recursive: true });
  writeFileSync(join(dir, 'proc', String(pid), 'status'), opts.statusText);
  const binPath = join(dir, 'bin', 'workload');
  writeFileSync(binPath, opts.binary ?? Buffer.from('#!/bin/true\nbinary contents\n'));
  symlinkSync(binPath, join(dir, 'proc', String(pid), 'exe'));
  if (opts.passwd !== undefined) writeFileSync(join(dir, 'etc', 'passwd'), opts.passwd);
  if (opts.group !== undefined) writeFileSync(join(dir, 'etc', 'group'), opts.group);
  return { procRoot: join(dir, 'proc'), etcRoot: join(dir, 'etc'), binPath };
}

const PASSWD = '# comment\nroot:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nalias:x:1000:1000::/home/alias:/bin/sh\n+nis::::::\nbroken line\n';
const GROUP = 'root:x:0:\nalice:x:1000:\nwheel:x:10:alice\ndocker:x:999:alice\n';
const peer = { pid: 4242, uid: 1000, gid: 1000, groups: [] as number[] };

describe('unix workload attestor', () => {
  it('takes uid, gid and supplementary groups from the connect-time credentials, never from /proc status', async () => {
    // /proc says what the process runs as NOW (e.g. after exec'ing a setgid program: egid 42,
    // no groups); the selectors come from what the kernel captured at connect().
    const host = fakeHost('effective', { statusText: status('0\t0\t0\t0', '42\t42\t42\t42', ''), passwd: PASSWD, group: GROUP });
    const a = new UnixWorkloadAttestor(host);
    assert.deepEqual(values(await a.attest({ pid: 4242, uid: 1000, gid: 1000, groups: [10, 999, 4711] })), [
      'unix:uid:1000',
      'unix:user:alice', // first line for uid 1000 wins, not "alias"
      'unix:gid:1000',
      'unix:group:alice',
      'unix:supplementary_gid:10',
      'unix:supplementary_group:wheel',
      'unix:supplementary_gid:999',
      'unix:supplementary_group:docker',
      'unix:supplementary_gid:4711', // no name: only the number
    ]);
  });

  it('omits names when unknown or when passwd/group are missing; handles no supplementary groups', async () => {
    const host = fakeHost('nonames', { statusText: status('5\t5\t5\t5', '6\t6\t6\t6', ' ') });
    assert.deepEqual(values(await new UnixWorkloadAttestor(host).attest({ ...peer, uid: 5, gid: 6 })), ['unix:uid:5', 'unix:gid:6']);
  });

  it('adds unix:path and unix:sha256 with discover_workload_path', async () => {
    const binary = Buffer.from('ELF pretend binary '.repeat(1000));
    const host = fakeHost('path', { statusText: status('0\t0\t0\t0', '0\t0\t0\t0', ''), binary, passwd: PASSWD, group: GROUP });
    const a = UnixWorkloadAttestor.fromConfig(new ConfigReader({ discover_workload_path: true }), host);
    const got = values(await a.attest(peer));
    assert.ok(got.includes(`unix:path:${host.binPath}`), got.join(' '));
    assert.ok(got.includes(`unix:sha256:${createHash('sha256').update(binary).digest('hex')}`), got.join(' '));
    assert.equal(got.length, 6);
  });

  it('enforces workload_size_limit (0 = no limit, negative = no hash, over the limit = error)', async () => {
    const binary = Buffer.alloc(5000, 7);
    const host = fakeHost('limit', { statusText: status('0\t0\t0\t0', '0\t0\t0\t0', ''), binary });
    const sha = `unix:sha256:${createHash('sha256').update(binary).digest('hex')}`;
    const at = (limit: number | string): UnixWorkloadAttestor =>
      UnixWorkloadAttestor.fromConfig(new ConfigReader({ discover_workload_path: 'true', workload_size_limit: limit }), host);
    assert.ok(values(await at(0).attest(peer)).includes(sha));
    assert.ok(values(await at(5000).attest(peer)).includes(sha));
    const noHash = values(await at(-1).attest(peer));
    assert.ok(noHash.some((v) => v.startsWith('unix:path:')) && !noHash.some((v) => v.startsWith('unix:sha256:')));
    await assert.rejects(at('4999').attest(peer), (err: unknown) => err instanceof WorkloadAttestationError && /exceeds workload_size_limit \(5000 > 4999/.test(err.message));
  });

  it('fails with WorkloadAttestationError when the process is gone (path discovery) or the pid is invalid', async () => {
    const host = fakeHost('gone', { statusText: status('1\t1\t1\t1', '1\t1\t1\t1', '') });
    const a = new UnixWorkloadAttestor({ ...host, discoverWorkloadPath: true });
    await assert.rejects(a.attest({ ...peer, pid: 999_999 }), (err: unknown) => err instanceof WorkloadAttestationError && /process 999999 is gone/.test(err.message));
    await assert.rejects(a.attest({ ...peer, pid: 0 }), WorkloadAttestationError);
    await assert.rejects(new UnixWorkloadAttestor(host).attest({ ...peer, pid: -1 }), /invalid caller pid -1/);
  });

  it('attests this test process from the real /proc', async () => {
    const a = UnixWorkloadAttestor.fromConfig(new ConfigReader({ discover_workload_path: true }));
    const uid = process.geteuid!();
    const gid = process.getegid!();
    // What SO_PEERGROUPS reports for this process: the kernel's list (Node's getgroups() adds the egid).
    const groups = (/^Groups:\s*(.*)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '').trim().split(/\s+/).filter((g) => g !== '').map(Number);
    const got = values(await a.attest({ pid: process.pid, uid, gid, groups }));
    assert.ok(got.includes(`unix:uid:${uid}`), got.join(' '));
    assert.ok(got.includes(`unix:gid:${gid}`), got.join(' '));
    for (const g of groups) assert.ok(got.includes(`unix:supplementary_gid:${g}`), `${g} in ${got.join(' ')}`);
    const names = parseIdNames(readFileSync('/etc/passwd', 'utf8'));
    const user = names.get(uid);
    if (user !== undefined) assert.ok(got.includes(`unix:user:${user}`));
    assert.ok(got.includes(`unix:path:${realpathSync(process.execPath)}`), got.join(' '));
    const sha = createHash('sha256').update(readFileSync(process.execPath)).digest('hex');
    assert.ok(got.includes(`unix:sha256:${sha}`));
  });
});

describe('workload attestor registry', () => {
  it('builds unix from plugin_data and validates its keys', () => {
    const [a] = buildWorkloadAttestors([{ name: 'unix', data: new ConfigReader({ discover_workload_path: true, workload_size_limit: 1024 }) }]);
    assert.ok(a instanceof UnixWorkloadAttestor);
    assert.equal(a.discoverWorkloadPath, true);
    assert.equal(a.workloadSizeLimit, 1024);
    assert.throws(
      () => buildWorkloadAttestors([{ name: 'unix', data: new ConfigReader({ discover_workload_pth: true, workload_size_limit: 'big' }, 'plugins.WorkloadAttestor.unix.plugin_data') }]),
      (err: unknown) => isConfigError(err) && err.problems.length === 2 && /workload_size_limit/.test(err.message) && /discover_workload_pth/.test(err.message),
    );
    assert.throws(() => buildWorkloadAttestors([{ name: 'docker', data: new ConfigReader({}) }]), /workload attestor "docker" is not available in this build \(available: unix, k8s\)/);
    assert.deepEqual(buildWorkloadAttestors([]), []);
  });
});
