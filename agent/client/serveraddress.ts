/**
 * Where the agent finds spindle-server: `server_address` / `-serverAddress` as one host (an IP
 * address or a DNS name, as SPIRE takes it) or a comma-separated list of servers of one trust
 * domain sharing one datastore, each element `host`, `host:port`, `[ipv6]` or `[ipv6]:port`
 * (a bare IPv6 address takes `server_port`).
 *
 * The agent talks to one server at a time over one grpc-js channel built on the whole list
 * (`channelTarget`): grpc-js's `pick_first` load balancer connects to the addresses in the order
 * given and, when the server in use goes away, to the next one that answers; calls made
 * meanwhile wait for it. The order is ours: random (so agents spread over the servers), with the
 * server the agent is leaving last (so a connection made to move away from it lands elsewhere).
 * A single DNS name is resolved by grpc-js (`dns:` target, every address it resolves to) and
 * shuffled by `pick_first` itself (`shuffleAddressList`).
 *
 * A list may hold DNS names (`spindle-a.internal,spindle-b.internal`): the agent resolves them
 * itself (`resolveServerAddresses`: every address of every name) before it builds a channel, and
 * again before each reconnect by connection age, so the channel is always over addresses. A
 * grpc-js target holds addresses of one family: IPv4 addresses are used when there are any, else
 * IPv6 ones; a list of literal addresses mixing the two families is refused.
 */
import { randomInt } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';

export interface ServerAddress {
  host: string;
  port: number;
}

/** RFC 1123 host name (as common/configfields.ts HOSTNAME). */
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** `host:port` as written in logs and messages (`[v6]:port` for IPv6). */
export function formatServerAddress(a: ServerAddress): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** The whole list as operators read it: `127.0.0.1:8081, 127.0.0.2:8081`. */
export function formatServerAddresses(list: readonly ServerAddress[]): string {
  return list.map(formatServerAddress).join(', ');
}

function parsePort(text: string, element: string): number | string {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) return `bad port in ${JSON.stringify(element)}: expected an integer between 1 and 65535`;
  return Number(text);
}

/**
 * Parses `server_address`. Returns the addresses, or the problem (to report under the key or
 * flag it came from). `defaultPort` is `server_port` for elements without a port (the config
 * parser passes 0 and fills it in once it has read server_port).
 */
export function parseServerAddressList(text: string, defaultPort: number): { addresses: ServerAddress[] } | { problem: string } {
  const elements = text.split(',').map((s) => s.trim());
  const addresses: ServerAddress[] = [];
  for (const [i, el] of elements.entries()) {
    if (el === '') {
      return { problem: elements.length === 1 ? 'must not be empty' : `element ${i + 1} of the comma-separated list is empty, got ${JSON.stringify(text)}` };
    }
    let host: string;
    let port = defaultPort;
    const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(el);
    if (bracketed) {
      host = bracketed[1]!;
      if (isIP(host) !== 6) return { problem: `expected an IPv6 address inside brackets, got ${JSON.stringify(el)}` };
      if (bracketed[2] !== undefined) {
        const p = parsePort(bracketed[2], el);
        if (typeof p === 'string') return { problem: p };
        port = p;
      }
    } else if (isIP(el) === 6) {
      host = el;
    } else {
      const colon = el.lastIndexOf(':');
      host = colon >= 0 ? el.slice(0, colon) : el;
      if (colon >= 0) {
        if (host.includes(':')) {
          // Looks like an IPv6 address with a port: say how to write one.
          const hint = /^[0-9A-Fa-f:.]+$/.test(el) ? ' (an IPv6 address with a port goes in brackets: [::1]:8081)' : '';
          return { problem: `expected an IP address or host name${hint}, got ${JSON.stringify(el)}` };
        }
        const p = parsePort(el.slice(colon + 1), el);
        if (typeof p === 'string') return { problem: p };
        port = p;
      }
      if (isIP(host) === 0 && !HOSTNAME.test(host)) return { problem: `expected an IP address or host name, got ${JSON.stringify(el)}` };
    }
    addresses.push({ host, port });
  }
  const seen = new Set<string>();
  for (const a of addresses) {
    const key = formatServerAddress(a);
    if (seen.has(key)) return { problem: `lists ${key} twice` };
    seen.add(key);
  }
  if (addresses.length > 1) {
    const families = new Set(addresses.map((a) => isIP(a.host)).filter((f) => f !== 0));
    if (families.size > 1) return { problem: 'a list of several server addresses must be all IPv4 or all IPv6 addresses, not both' };
  }
  return { addresses };
}

/** Whether the agent can choose among servers: several addresses, or a DNS name (it may resolve to several). */
export function hasAlternatives(list: readonly ServerAddress[]): boolean {
  return list.length > 1 || (list.length === 1 && isIP(list[0]!.host) === 0);
}

/** Whether the agent resolves `list` itself before connecting: several servers, at least one given by name. */
export function needsResolving(list: readonly ServerAddress[]): boolean {
  return list.length > 1 && list.some((a) => isIP(a.host) === 0);
}

/** Every address of a DNS name (node:dns `lookup` with `all`, as the system resolver answers). */
export type LookupAll = (host: string) => Promise<Array<{ address: string; family: number }>>;

const lookupAll: LookupAll = (host) => lookup(host, { all: true, verbatim: true });

/**
 * `list` with every DNS name replaced by the addresses it resolves to (in list order, each
 * address once), reduced to one family (IPv4 when there is any). Names that do not resolve are
 * left out and reported in `unresolved`; when nothing is left, the error names them all.
 */
export async function resolveServerAddresses(
  list: readonly ServerAddress[],
  resolve: LookupAll = lookupAll,
): Promise<{ addresses: ServerAddress[]; unresolved: string[] }> {
  const out: ServerAddress[] = [];
  const unresolved: string[] = [];
  const seen = new Set<string>();
  const add = (a: ServerAddress): void => {
    const key = formatServerAddress(a);
    if (!seen.has(key)) {
      seen.add(key);
      out.push(a);
    }
  };
  const answers = await Promise.all(
    list.map(async (a) => {
      if (isIP(a.host) !== 0) return { a, ips: [a.host] };
      try {
        return { a, ips: (await resolve(a.host)).map((r) => r.address) };
      } catch (err) {
        return { a, ips: [] as string[], err: err as Error };
      }
    }),
  );
  for (const { a, ips, err } of answers as Array<{ a: ServerAddress; ips: string[]; err?: Error }>) {
    if (ips.length === 0) unresolved.push(`${a.host} (${err ? ((err as { code?: string }).code ?? err.message) : 'no address'})`);
    for (const ip of ips) add({ host: ip, port: a.port });
  }
  const v4 = out.filter((a) => isIP(a.host) === 4);
  const addresses = v4.length > 0 ? v4 : out;
  if (addresses.length === 0) throw new Error(`none of the servers in server_address resolves to an address: ${unresolved.join(', ')}`);
  return { addresses, unresolved };
}

/**
 * `list` in random order, with the address `first` moved to the front or `last` to the end
 * (addresses as formatServerAddress writes them; one not in the list is ignored).
 */
export function connectionOrder(list: readonly ServerAddress[], place: { first?: string | undefined; last?: string | undefined } = {}, rand: (n: number) => number = randomInt): ServerAddress[] {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = rand(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  const find = (s: string | undefined): number => (s === undefined ? -1 : out.findIndex((a) => formatServerAddress(a) === s));
  const f = find(place.first);
  if (f >= 0) out.unshift(...out.splice(f, 1));
  const l = find(place.last);
  if (l >= 0) out.push(...out.splice(l, 1));
  return out;
}

/**
 * The grpc-js target and channel options for one connection over `ordered` (already in the
 * order to try). One address: `host:port` as before (DNS names resolved by grpc-js). Several:
 * `ipv4:a:p,b:p` or `ipv6:[a]:p,...`, tried in that order by `pick_first`. A lone DNS name also
 * gets `pick_first` with `shuffleAddressList`, so agents spread over the addresses it resolves to.
 */
export function channelTarget(ordered: readonly ServerAddress[]): { target: string; options: Record<string, string> } {
  if (ordered.length === 0) throw new Error('channelTarget: no server address');
  if (ordered.length === 1) {
    const a = ordered[0]!;
    if (isIP(a.host) !== 0) return { target: formatServerAddress(a), options: {} };
    return {
      target: `dns:${a.host}:${a.port}`,
      options: { 'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ pick_first: { shuffleAddressList: true } }] }) },
    };
  }
  const scheme = isIP(ordered[0]!.host) === 6 ? 'ipv6' : 'ipv4';
  return {
    target: `${scheme}:${ordered.map(formatServerAddress).join(',')}`,
    options: { 'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ pick_first: {} }] }) },
  };
}
