import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CgroupParseError, parseCgroupFile } from './cgroup.js';

const UID = '2c48913c-b29f-11e7-9350-020968147796';
const UID_ = UID.replaceAll('-', '_');
const CID = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';
const CID2 = '09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6';
const NODE = '93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26';
const STATIC_UID = '6f4c0b3d9e8a7b6c5d4e3f2a1b0c9d8e';

/** cgroup v1: the same path on every hierarchy, as the kernel prints it. */
function v1(path: string): string {
  const hierarchies = ['hugetlb', 'devices', 'pids', 'perf_event', 'net_cls,net_prio', 'cpuset', 'memory', 'cpu,cpuacct', 'freezer', 'blkio', 'name=systemd'];
  return hierarchies.map((h, i) => `${hierarchies.length - i}:${h}:${path}`).join('\n') + '\n0::/\n';
}
const v2 = (path: string): string => `0::${path}\n`;

describe('parseCgroupFile: Kubernetes containers', () => {
  const cases: [string, string, { podUid: string | undefined; containerId: string }][] = [
    ['v1 cgroupfs, containerd/docker', v1(`/kubepods/burstable/pod${UID}/${CID}`), { podUid: UID, containerId: CID }],
    ['v1 cgroupfs, guaranteed QoS', v1(`/kubepods/pod${UID}/${CID}`), { podUid: UID, containerId: CID }],
    ['v1 cgroupfs, CRI-O', v1(`/kubepods/besteffort/pod${UID}/crio-${CID}`), { podUid: UID, containerId: CID }],
    ['v1 systemd, docker', v1(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/docker-${CID}.scope`), { podUid: UID, containerId: CID }],
    ['v1 systemd, CRI-O', v1(`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/crio-${CID}.scope`), { podUid: UID, containerId: CID }],
    ['v1 systemd, containerd', v1(`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope`), { podUid: UID, containerId: CID }],
    ['v2 cgroupfs, containerd', v2(`/kubepods/besteffort/pod${UID}/${CID}`), { podUid: UID, containerId: CID }],
    ['v2 cgroupfs, CRI-O', v2(`/kubepods/burstable/pod${UID}/crio-${CID}`), { podUid: UID, containerId: CID }],
    ['v2 systemd, containerd', v2(`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope`), { podUid: UID, containerId: CID }],
    ['v2 systemd, CRI-O', v2(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/crio-${CID}.scope`), { podUid: UID, containerId: CID }],
    ['v2 systemd, docker (cri-dockerd)', v2(`/kubepods.slice/kubepods-pod${UID_}.slice/docker-${CID}.scope`), { podUid: UID, containerId: CID }],
    ['v2 containerd slice:prefix:id form', v2(`/kubepods-besteffort-pod${UID_}.slice:cri-containerd:${CID}`), { podUid: UID, containerId: CID }],
    ['v2 seen from another cgroup namespace', v2(`/../../pod${UID}/${CID}`), { podUid: UID, containerId: CID }],
    ['v2 systemd seen from another cgroup namespace', v2(`/../kubepods-besteffort-pod${UID_}.slice/cri-containerd-${CID}.scope`), { podUid: UID, containerId: CID }],
    ['kind (nodes are docker containers)', v1(`/docker/${NODE}/kubepods/besteffort/pod${UID}/${CID}`).replace('0::/\n', `0::/docker/${NODE}/system.slice/containerd.service\n`), { podUid: UID, containerId: CID }],
    ['CRI-O without pod UID (KubeEdge)', v2(`/../crio-${CID}.scope`), { podUid: undefined, containerId: CID }],
    ['static pod (32-hex UID), cgroupfs', v2(`/kubepods/burstable/pod${STATIC_UID}/${CID}`), { podUid: STATIC_UID, containerId: CID }],
    ['static pod (32-hex UID), systemd', v2(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${STATIC_UID}.slice/cri-containerd-${CID}.scope`), { podUid: STATIC_UID, containerId: CID }],
    ['v1 with some hierarchies at the root', `12:rdma:/\n11:misc:/\n10:memory:/kubepods/besteffort/pod${UID}/${CID}\n`, { podUid: UID, containerId: CID }],
    ['v1 with a pod-level line of the same pod', `3:cpu:/kubepods/besteffort/pod${UID}\n2:memory:/kubepods/besteffort/pod${UID}/${CID}\n`, { podUid: UID, containerId: CID }],
  ];
  for (const [name, text, want] of cases) {
    test(name, () => assert.deepEqual(parseCgroupFile(text), want));
  }
});

describe('parseCgroupFile: not a Kubernetes container', () => {
  const cases: [string, string][] = [
    ['host process, v2', v2('/user.slice/user-1000.slice/session-3.scope')],
    ['host process, v1', v1('/system.slice/sshd.service')],
    ['root cgroup', v2('/')],
    ['plain docker container (systemd)', v2(`/system.slice/docker-${CID}.scope`)],
    ['plain docker container (cgroupfs)', v1(`/docker/${CID}`)],
    ['kind node process (not in a pod)', v2(`/docker/${NODE}/system.slice/kubelet.service`)],
    ['pod-level cgroup, no container', v2(`/kubepods/besteffort/pod${UID}`)],
    ['CRI-O conmon (container monitor)', v2(`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice/crio-conmon-${CID}.scope`)],
    ['sub-cgroup under a container', v2(`/kubepods/besteffort/pod${UID}/${CID}/nested/${CID2}`)],
    ['systemd inside a container', v2(`/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${CID}.scope/init.scope`)],
    ['container ID too short', v2(`/kubepods/besteffort/pod${UID}/${CID.slice(1)}`)],
    ['container ID too long', v2(`/kubepods/besteffort/pod${UID}/a${CID}`)],
    ['uppercase is not what kubelets write', v2(`/kubepods/besteffort/pod${UID}/${CID.toUpperCase()}`)],
    ['"pod" glued to a word is not a pod UID', v2(`/kubepods/besteffort/xpod${UID}/${CID}`)],
    ['empty file', ''],
  ];
  for (const [name, text] of cases) {
    test(name, () => assert.equal(parseCgroupFile(text), undefined));
  }
});

describe('parseCgroupFile: conflicts and malformed input are errors', () => {
  test('two container IDs in one file', () => {
    const text = `2:memory:/kubepods/besteffort/pod${UID}/${CID}\n1:cpu:/kubepods/besteffort/pod${UID}/${CID2}\n`;
    assert.throws(() => parseCgroupFile(text), (e: unknown) => e instanceof CgroupParseError && e.message.includes(CID) && e.message.includes(CID2) && /more than one container ID/.test(e.message));
  });
  test('two pod UIDs in one file (same container ID)', () => {
    const other = 'daa5c7ee-3484-4533-af39-3591564fd03e';
    const text = `2:memory:/kubepods/besteffort/pod${UID}/${CID}\n1:cpu:/kubepods/besteffort/pod${other}/${CID}\n`;
    assert.throws(() => parseCgroupFile(text), (e: unknown) => e instanceof CgroupParseError && e.message.includes(UID) && e.message.includes(other));
  });
  test('a pod UID in a pod-level line that is not the container pod', () => {
    const other = 'daa5c7ee-3484-4533-af39-3591564fd03e';
    const text = `2:memory:/kubepods/besteffort/pod${other}\n1:cpu:/kubepods/besteffort/pod${UID}/${CID}\n`;
    assert.throws(() => parseCgroupFile(text), /more than one pod UID/);
  });
  test('two pod UIDs in one path', () => {
    const other = 'daa5c7ee-3484-4533-af39-3591564fd03e';
    assert.throws(() => parseCgroupFile(v2(`/kubepods/pod${UID}/${CID2}/pod${other}/${CID}`)), /more than one pod UID/);
  });
  test('a pod-less CRI-O container next to a pod', () => {
    const text = `2:memory:/kubepods/besteffort/pod${UID}\n0::/../crio-${CID}.scope\n`;
    assert.throws(() => parseCgroupFile(text), /without its pod next to pod UID/);
  });
  test('the same candidate on every line is not a conflict', () => {
    assert.deepEqual(parseCgroupFile(v1(`/kubepods/besteffort/pod${UID}/${CID}`) + v2(`/kubepods/besteffort/pod${UID}/${CID}`)), { podUid: UID, containerId: CID });
  });
  test('a line without id:controllers:path', () => {
    assert.throws(() => parseCgroupFile(`0::/\nnonsense\n`), (e: unknown) => e instanceof CgroupParseError && /line 2/.test(e.message) && /nonsense/.test(e.message));
    assert.throws(() => parseCgroupFile(`x::/kubepods/pod${UID}/${CID}\n`), /line 1/);
  });
});
