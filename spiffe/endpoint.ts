/**
 * Workload API endpoint addresses (`SPIFFE_ENDPOINT_SOCKET`).
 *
 * Accepted, nothing else:
 *   unix:///abs/path  or  unix:/abs/path   absolute path, no authority, no userinfo, no query,
 *                                          no fragment, not empty and not just "/"
 *   tcp://<IP>:<port>                      IPv4 dotted quad or bracketed IPv6 literal (no zone),
 *                                          port 1..65535 (digits, no leading zero), no path
 *                                          (not even "/"), no query, no fragment, no userinfo
 * Schemes are lowercase only. The path is taken literally: percent-encoding is rejected rather
 * than decoded (go-spiffe would decode it, grpc-js would not; refusing keeps every client on
 * the same socket). A small explicit parser, never the WHATWG `URL` parser.
 *
 * Errors: SpiffeError code `ERR_ENDPOINT_ADDRESS_INVALID`, stable `reason`s:
 *   not_string          the value is not a string
 *   empty               empty input
 *   scheme              no scheme, or not exactly `unix` / `tcp`
 *   char                space, control character (e.g. a trailing newline) or non-ASCII
 *   percent_encoding    `%` anywhere
 *   query               `?` anywhere
 *   fragment            `#` anywhere
 *   userinfo            `user@` in the authority
 *   unix_authority      `unix://host/path`
 *   unix_relative_path  `unix:relative/path`
 *   unix_empty_path     `unix:`, `unix://`, `unix:///`, `unix:/`
 *   tcp_opaque          `tcp:` without `//` (e.g. `tcp:1.2.3.4:80`)
 *   tcp_not_ip          missing host, hostname (`localhost`), unbracketed or malformed IPv6, bad IPv4
 *   tcp_port_missing    no port, or an empty one (`tcp://1.2.3.4:`)
 *   tcp_port_invalid    non-digits, leading zero, 0 or over 65535, junk after `]`
 *   tcp_path            anything after the authority, including a lone `/`
 * Checks run in this order: not_string, empty, scheme, characters (left to right), structure.
 */
import { isIP } from 'node:net';
import { ErrorCode, SpiffeError, quote } from './errors.js';

export type EndpointAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export type EndpointReason =
  | 'not_string'
  | 'empty'
  | 'scheme'
  | 'char'
  | 'percent_encoding'
  | 'query'
  | 'fragment'
  | 'userinfo'
  | 'unix_authority'
  | 'unix_relative_path'
  | 'unix_empty_path'
  | 'tcp_opaque'
  | 'tcp_not_ip'
  | 'tcp_port_missing'
  | 'tcp_port_invalid'
  | 'tcp_path';

function invalid(input: unknown, reason: EndpointReason, detail: string): SpiffeError {
  const shown = typeof input === 'string' ? quote(input) : `(${typeof input})`;
  return new SpiffeError(
    ErrorCode.ENDPOINT_ADDRESS_INVALID,
    reason,
    `invalid Workload API endpoint address ${shown}: ${detail}`,
  );
}

const PORT_RE = /^[1-9][0-9]{0,4}$/;

/** Parses a `SPIFFE_ENDPOINT_SOCKET` value. Throws SpiffeError ERR_ENDPOINT_ADDRESS_INVALID. */
export function parseEndpointAddress(s: string): EndpointAddress {
  if (typeof s !== 'string') throw invalid(s, 'not_string', `expected a string, got ${typeof s}`);
  if (s.length === 0) throw invalid(s, 'empty', 'must not be empty');

  const colon = s.indexOf(':');
  const scheme = colon === -1 ? '' : s.slice(0, colon);
  if (scheme !== 'unix' && scheme !== 'tcp') {
    let detail = 'scheme must be "unix" or "tcp"';
    if (scheme.toLowerCase() === 'unix' || scheme.toLowerCase() === 'tcp') {
      detail = 'scheme must be lowercase "unix" or "tcp"';
    } else if (colon === -1 && s.startsWith('/')) {
      detail = `missing scheme (did you mean "unix://${s}"?)`;
    } else if (colon === -1) {
      detail = 'missing scheme: use unix:///abs/path or tcp://<IP>:<port>';
    }
    throw invalid(s, 'scheme', detail);
  }

  for (let i = colon + 1; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) {
      throw invalid(s, 'char', `spaces, control and non-ASCII characters are not allowed (U+${c.toString(16).toUpperCase().padStart(4, '0')} at index ${i})`);
    }
    if (c === 0x25) throw invalid(s, 'percent_encoding', `percent-encoding is not supported (index ${i})`);
    if (c === 0x3f) throw invalid(s, 'query', 'must not include a query ("?")');
    if (c === 0x23) throw invalid(s, 'fragment', 'must not include a fragment ("#")');
  }

  const rest = s.slice(colon + 1);
  return scheme === 'unix' ? parseUnix(s, rest) : parseTcp(s, rest);
}

function parseUnix(s: string, rest: string): EndpointAddress {
  let path: string;
  if (rest.startsWith('//')) {
    const slash = rest.indexOf('/', 2);
    const authority = slash === -1 ? rest.slice(2) : rest.slice(2, slash);
    if (authority.includes('@')) throw invalid(s, 'userinfo', 'unix socket URI must not include user info');
    if (authority !== '') {
      throw invalid(s, 'unix_authority', `unix socket URI must not have an authority (${quote(authority)}); use unix:///abs/path`);
    }
    path = slash === -1 ? '' : rest.slice(slash);
  } else if (rest.startsWith('/')) {
    path = rest;
  } else if (rest === '') {
    path = '';
  } else {
    throw invalid(s, 'unix_relative_path', 'unix socket path must be absolute (unix:///abs/path)');
  }
  if (path === '' || path === '/') throw invalid(s, 'unix_empty_path', 'unix socket URI must include a socket path');
  return { kind: 'unix', path };
}

function parseTcp(s: string, rest: string): EndpointAddress {
  if (!rest.startsWith('//')) throw invalid(s, 'tcp_opaque', 'tcp socket URI must have the form tcp://<IP>:<port>');
  const slash = rest.indexOf('/', 2);
  const authority = slash === -1 ? rest.slice(2) : rest.slice(2, slash);
  if (authority.includes('@')) throw invalid(s, 'userinfo', 'tcp socket URI must not include user info');
  if (authority === '') throw invalid(s, 'tcp_not_ip', 'tcp socket URI must include an IP address and port');
  if (slash !== -1) throw invalid(s, 'tcp_path', `tcp socket URI must not include a path (${quote(rest.slice(slash))})`);

  let host: string;
  let port: string | undefined;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close === -1) throw invalid(s, 'tcp_not_ip', 'unterminated "[" in IPv6 address');
    host = authority.slice(1, close);
    if (isIP(host) !== 6) throw invalid(s, 'tcp_not_ip', `${quote(host)} is not an IPv6 address`);
    const after = authority.slice(close + 1);
    if (after === '') port = undefined;
    else if (after.startsWith(':')) port = after.slice(1);
    else throw invalid(s, 'tcp_port_invalid', `unexpected ${quote(after)} after "]"`);
  } else {
    const lastColon = authority.lastIndexOf(':');
    host = lastColon === -1 ? authority : authority.slice(0, lastColon);
    port = lastColon === -1 ? undefined : authority.slice(lastColon + 1);
    if (host.includes(':')) throw invalid(s, 'tcp_not_ip', 'an IPv6 address must be in brackets: tcp://[::1]:<port>');
    if (isIP(host) !== 4) {
      throw invalid(s, 'tcp_not_ip', `host ${quote(host)} must be an IP address (hostnames are not allowed)`);
    }
  }
  if (port === undefined || port === '') throw invalid(s, 'tcp_port_missing', 'tcp socket URI must include a port');
  const n = Number(port);
  if (!PORT_RE.test(port) || n > 65535) {
    throw invalid(s, 'tcp_port_invalid', `port ${quote(port)} must be a number from 1 to 65535`);
  }
  return { kind: 'tcp', host, port: n };
}

/** The grpc-js channel target for an address: `unix:///abs/path`, `ipv4:1.2.3.4:80`, `ipv6:[::1]:80`. */
export function toGrpcTarget(addr: EndpointAddress): string {
  if (addr.kind === 'unix') {
    // grpc-js reads `unix://` + empty authority + "/" + rest as the literal absolute path.
    return `unix://${addr.path}`;
  }
  return isIP(addr.host) === 6 ? `ipv6:[${addr.host}]:${addr.port}` : `ipv4:${addr.host}:${addr.port}`;
}

/** The canonical `SPIFFE_ENDPOINT_SOCKET` form of an address (`unix:///abs/path`, `tcp://1.2.3.4:80`, `tcp://[::1]:80`). */
export function formatEndpointAddress(addr: EndpointAddress): string {
  if (addr.kind === 'unix') return `unix://${addr.path}`;
  return isIP(addr.host) === 6 ? `tcp://[${addr.host}]:${addr.port}` : `tcp://${addr.host}:${addr.port}`;
}
