/**
 * Finds the Kubernetes pod UID and container ID of a process from the text of
 * /proc/<pid>/cgroup, the kernel's own record of where the process is accounted. Nothing else
 * is consulted: mountinfo, environment and the process's files are under the workload's control
 * and are never trusted to name a pod.
 *
 * Each line is `hierarchy-id:controllers:path` (cgroup v1: one line per hierarchy; v2: the
 * single `0::path` line). Paths may contain colons (containerd's `slice:prefix:id` form), so
 * only the first two colons split. A path names a container when, after dropping a `.scope`
 * suffix, its last component ends in a 64-hex container ID preceded by punctuation:
 *
 *   cgroupfs driver:  /kubepods/burstable/pod<uid>/<id>                        (containerd, docker)
 *                     /kubepods/besteffort/pod<uid>/crio-<id>                  (CRI-O)
 *   systemd driver:   /kubepods.slice/kubepods-burstable.slice/
 *                       kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
 *                       (or docker-<id>.scope, crio-<id>.scope)
 *                     /kubepods-besteffort-pod<uid with _>.slice:cri-containerd:<id>
 *   nested/namespaced: /docker/<node id>/kubepods/.../pod<uid>/<id>  (kind), /../../pod<uid>/<id>
 *
 * The pod UID is `pod` + a UUID whose groups are separated by `-`, `_` (systemd escapes `-` in
 * unit names as `_`) or nothing (static pods: the kubelet gives them the 32-hex MD5 of their
 * manifest as UID), between punctuation; it is returned as the kubelet reports it: `_` back to
 * `-`, no dashes added. The container component must be the pod component itself (colon
 * form) or the one right after it: a deeper path (sub-cgroups a privileged workload made under
 * its own container) does not name a container. CRI-O under KubeEdge puts no pod UID in the
 * path; a last component `crio-<id>` with no pod UID anywhere gives the container alone (the
 * attestor then searches every pod for it, as SPIRE does). `crio-conmon-<id>` (the container
 * monitor, not the workload) names no container.
 *
 * Paths without a pod are not Kubernetes workloads (plain docker, systemd services, the host):
 * the result is then undefined and the caller adds no k8s selectors. More than one candidate
 * across the lines (two container IDs, or two pod UIDs, or a pod UID in one line and a pod-less
 * CRI-O container in another) is an error, never a choice.
 */

export interface CgroupContainer {
  /** Pod UID as the kubelet reports it (8-4-4-4-12, or 32 hex for static pods), lowercase;
   *  undefined for the pod-less CRI-O shape. */
  podUid: string | undefined;
  /** 64 lowercase hex digits. */
  containerId: string;
}

export class CgroupParseError extends Error {
  readonly code = 'ERR_K8S_CGROUP';
  constructor(message: string) {
    super(message);
    this.name = 'CgroupParseError';
  }
}

/** ASCII punctuation, as Go's [[:punct:]]. */
const P = String.raw`!-\/:-@\[-\x60{-~`;
const POD_UID = new RegExp(
  String.raw`(?:^|[${P}])pod([0-9a-f]{8}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{4}[-_]?[0-9a-f]{12})(?=[${P}]|$)`,
  'g',
);
const CONTAINER_ID = new RegExp(String.raw`(?:^|[${P}])([0-9a-f]{64})$`);
const CRIO_ONLY = /^crio-([0-9a-f]{64})$/;
const CONMON = /(?:^|[-_.:])conmon[-_.:]/;

interface PathFinding {
  /** Distinct canonical pod UIDs named anywhere in the path. */
  pods: string[];
  candidate: CgroupContainer | undefined;
}

/** What one cgroup path says; exported for tests. */
export function parseCgroupPath(path: string): PathFinding {
  const trimmed = path.endsWith('.scope') ? path.slice(0, -'.scope'.length) : path;
  const components = trimmed.split('/');
  const pods: string[] = [];
  let podIndex = -1;
  components.forEach((c, i) => {
    for (const m of c.matchAll(POD_UID)) {
      const uid = m[1]!.replaceAll('_', '-');
      if (!pods.includes(uid)) pods.push(uid);
      podIndex = i;
    }
  });
  const lastIndex = components.length - 1;
  const last = components[lastIndex] ?? '';
  if (CONMON.test(last)) return { pods, candidate: undefined };
  if (pods.length === 0) {
    const crio = CRIO_ONLY.exec(last);
    return { pods, candidate: crio ? { podUid: undefined, containerId: crio[1]! } : undefined };
  }
  if (pods.length > 1) return { pods, candidate: undefined };
  const id = CONTAINER_ID.exec(last);
  if (!id || (lastIndex !== podIndex && lastIndex !== podIndex + 1)) return { pods, candidate: undefined };
  return { pods, candidate: { podUid: pods[0], containerId: id[1]! } };
}

/**
 * The container of a process from its /proc/<pid>/cgroup text: undefined when it is in no
 * Kubernetes container. Throws CgroupParseError on malformed lines and on conflicting
 * candidates (see the module contract).
 */
export function parseCgroupFile(text: string): CgroupContainer | undefined {
  let found: CgroupContainer | undefined;
  const pods = new Set<string>();
  let lineNo = 0;
  for (const line of text.split('\n')) {
    lineNo++;
    if (line.trim() === '') continue;
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0 || !/^\d+$/.test(line.slice(0, first))) {
      throw new CgroupParseError(`cgroup line ${lineNo} is not "id:controllers:path": ${JSON.stringify(line.slice(0, 200))}`);
    }
    const finding = parseCgroupPath(line.slice(second + 1));
    for (const p of finding.pods) pods.add(p);
    if (pods.size > 1) throw new CgroupParseError(`cgroups name more than one pod UID (${[...pods].join(', ')})`);
    const c = finding.candidate;
    if (c === undefined) continue;
    if (found === undefined) found = c;
    else if (found.containerId !== c.containerId) {
      throw new CgroupParseError(`cgroups name more than one container ID (${found.containerId}, ${c.containerId})`);
    }
  }
  if (found !== undefined) {
    const pod = pods.values().next().value;
    // A pod named in any line must be the candidate's pod (a pod-less CRI-O path next to a pod
    // path is two different stories).
    if (pod !== undefined && found.podUid !== pod) {
      throw new CgroupParseError(`cgroups name container ${found.containerId} without its pod next to pod UID ${pod}`);
    }
  }
  return found;
}
