/**
 * The patterns of the access policy, compiled once when the policy loads.
 *
 * SPIFFE ID patterns (`from.id_patterns`):
 *   `*`                                   any caller with an X509-SVID
 *   `spiffe://td/ns/*\/sa/payments`        `*` is exactly one path segment
 *   `spiffe://td/ns/prod/**`              a trailing `/**` is zero or more further segments
 * The trust domain is always literal, `*` and `**` are whole segments (`sa-*` is an error).
 *
 * HTTP path patterns (`to.paths`, `to.not_paths`):
 *   `/health`                             exact
 *   `/v1/*\/items`                         `*` is exactly one non-empty segment
 *   `/v1/**`                              `/v1`, `/v1/` and everything below it
 *   `/v1/item*`                           Istio's prefix form: a `*` glued to the end of the text
 *   `*.json`, `*\/health`                  Istio's suffix form: a leading `*`
 *   `*`                                   any path
 * Istio reads `/v1/*` as a prefix; here it is one segment (write `/v1/**` for Istio's meaning).
 * Patterns must themselves be normalized (no `//`, `.` or `..` segments, no `%2e`, `%2f`, `%5c`).
 */
import { isSpiffeError } from '../../spiffe/errors.js';
import { parseSpiffeId, parseTrustDomain } from '../../spiffe/id.js';

export interface IdPattern {
  readonly text: string;
  /** The pattern's literal trust domain (undefined for `*`). */
  readonly trustDomain?: string;
  /** True for `*` and `spiffe://td/**`: every workload of one or every trust domain. */
  readonly wide: boolean;
  test(id: string): boolean;
}

export type PathPatternKind = 'exact' | 'any' | 'prefix' | 'suffix' | 'segments';

export interface PathPattern {
  readonly text: string;
  readonly kind: PathPatternKind;
  /** Every path the pattern matches starts with this literal text. */
  readonly head: string;
  /** For a `segments` pattern ending in `/**` with no other wildcard: the literal base before `/**`. */
  readonly treeBase?: string;
  /** The literal leading segments every matching path has (`/v1/*\/x`: `v1`; `/v1/item*`: `v1`). */
  readonly leading: readonly string[];
  test(path: string): boolean;
}

const SCHEME = 'spiffe://';

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Compiles a SPIFFE ID pattern; returns a problem text when it is not one. */
export function compileIdPattern(text: string): IdPattern | string {
  if (text === '*') return { text, wide: true, test: () => true };
  if (!text.startsWith(SCHEME)) return `id pattern ${JSON.stringify(text)} must be "*" or start with "spiffe://"`;
  const slash = text.indexOf('/', SCHEME.length);
  const td = slash === -1 ? text.slice(SCHEME.length) : text.slice(SCHEME.length, slash);
  if (td.includes('*')) return `id pattern ${JSON.stringify(text)}: the trust domain must be literal (use trust_domains or "*")`;
  if (slash === -1) return `id pattern ${JSON.stringify(text)} has no path: to match a whole trust domain use trust_domains: [${td}]`;
  const segs = text.slice(slash + 1).split('/');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]!;
    if (s.includes('*') && s !== '*' && s !== '**') return `id pattern ${JSON.stringify(text)}: "*" must be a whole path segment (got ${JSON.stringify(s)})`;
    if (s === '**' && i !== segs.length - 1) return `id pattern ${JSON.stringify(text)}: "**" is only allowed as the last segment`;
  }
  // The literal parts must be what a SPIFFE ID may contain: check a sample with each wildcard filled in.
  try {
    parseSpiffeId(SCHEME + td + '/' + segs.map((s) => (s.includes('*') ? 'x' : s)).join('/'));
  } catch (err) {
    if (isSpiffeError(err)) return `id pattern ${JSON.stringify(text)}: ${err.message.replace(/^invalid SPIFFE ID "[^"]*": /, '')}`;
    throw err;
  }
  const hasTree = segs[segs.length - 1] === '**';
  const body = (hasTree ? segs.slice(0, -1) : segs).map((s) => (s === '*' ? '/[^/]+' : `/${escapeRegex(s)}`)).join('');
  const re = new RegExp(`^${escapeRegex(SCHEME + td)}${body}${hasTree ? '(?:/.*)?' : ''}$`);
  if (!text.includes('*')) return { text, trustDomain: td, wide: false, test: (id) => id === text };
  return { text, trustDomain: td, wide: segs.length === 1 && hasTree, test: (id) => re.test(id) };
}

/** Why a request path or pattern is not in normal form, or undefined when it is. */
export function pathNotNormal(path: string): string | undefined {
  if (!path.startsWith('/')) return 'does not start with "/"';
  if (path.includes('//')) return 'has an empty segment ("//")';
  if (/\/\.\.?(?:\/|$)/.test(path)) return 'has a "." or ".." segment';
  if (path.includes('\\')) return 'has a backslash';
  if (/%(?:2[eEfF]|5[cC])/.test(path)) return 'has a percent-encoded ".", "/" or "\\"';
  // Forms that services decode or cut differently from a literal comparison, so the policy could
  // decide on one path while the service serves another: a fragment (never part of a request
  // target), path parameters (Java servlet containers drop ";..." from each segment, so
  // "/admin;x" and "/public/..;/admin" are "/admin" there), percent-encoded unreserved characters
  // (Go, Python and Java decode "%61" to "a"), and "%" without two hex digits.
  if (path.includes('#')) return 'has a "#" (a fragment)';
  if (path.includes(';')) return 'has a ";" (path parameters are read differently by different services)';
  if (/%(?![0-9a-fA-F]{2})/.test(path)) return 'has a "%" that is not followed by two hex digits';
  if (/%(?:3[0-9]|4[1-9a-fA-F]|5[0-9aA]|6[1-9a-fA-F]|7[0-9aA]|2[dD]|5[fF]|7[eE])/.test(path)) return 'has a percent-encoded letter, digit, "-", "_" or "~" (write it plainly)';
  return undefined;
}

/** Compiles an HTTP path pattern; returns a problem text when it is not one. */
export function compilePathPattern(text: string): PathPattern | string {
  const q = JSON.stringify(text);
  // eslint-disable-next-line no-control-regex
  if (/[\s?#\x00-\x1f\x7f]/.test(text)) return `path pattern ${q}: whitespace, control characters, "?" and "#" are not allowed (paths are matched without the query string)`;
  if (text === '*') return { text, kind: 'any', head: '', leading: [], test: () => true };
  if (text.startsWith('*')) {
    const rest = text.slice(1);
    if (rest.includes('*')) return `path pattern ${q}: a suffix pattern has one "*", at the start`;
    return { text, kind: 'suffix', head: '', leading: [], test: (p) => p.endsWith(rest) };
  }
  const bad = pathNotNormal(text);
  if (bad !== undefined) return `path pattern ${q} ${bad}: patterns are matched against normalized paths`;
  const star = text.indexOf('*');
  if (star === -1) return { text, kind: 'exact', head: text, leading: text.slice(1).split('/'), test: (p) => p === text };
  // Istio's prefix form: one `*`, at the end, glued to text (not a whole segment).
  if (star === text.length - 1 && text[star - 1] !== '/') {
    const prefix = text.slice(0, -1);
    // The last segment of the prefix is incomplete (`/v1/item*` also matches `/v1/items`).
    return { text, kind: 'prefix', head: prefix, leading: prefix.slice(1).split('/').slice(0, -1), test: (p) => p.startsWith(prefix) };
  }
  const segs = text.slice(1).split('/');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]!;
    if (s.includes('*') && s !== '*' && s !== '**') {
      return `path pattern ${q}: "*" must be a whole segment, a leading "*" (suffix) or a trailing "*" after text (prefix)`;
    }
    if (s === '**' && i !== segs.length - 1) return `path pattern ${q}: "**" is only allowed as the last segment`;
  }
  const hasTree = segs[segs.length - 1] === '**';
  const body = (hasTree ? segs.slice(0, -1) : segs).map((s) => (s === '*' ? '/[^/]+' : `/${escapeRegex(s)}`)).join('');
  const re = new RegExp(`^${body}${hasTree ? '(?:/.*)?' : ''}$`);
  const base = hasTree ? text.slice(0, -3) : undefined;
  const head = text.slice(0, star);
  const treeBase = base !== undefined && !base.includes('*') ? base : undefined;
  const wild = segs.findIndex((x) => x === '*' || x === '**');
  // `/v1/**` with a literal base: string compares instead of the regex.
  const test =
    treeBase !== undefined ? (p: string): boolean => p.startsWith(treeBase) && (p.length === treeBase.length || p.charCodeAt(treeBase.length) === 0x2f) : (p: string): boolean => re.test(p);
  return {
    text,
    kind: 'segments',
    leading: segs.slice(0, wild),
    // `/v1/**` also matches `/v1`: its head is the base, without the slash.
    head: treeBase !== undefined ? treeBase : head,
    ...(treeBase !== undefined ? { treeBase } : {}),
    test,
  };
}

/**
 * The index keys of a path starting with `/`: its first segment, and its first two segments
 * joined by `/` when it has two (`/v1/items/7` -> [`v1`, `v1/items`]; `/` -> [``]).
 */
export function leadingKeys(path: string): [string, string | undefined] {
  const end = path.indexOf('/', 1);
  if (end === -1) return [path.slice(1), undefined];
  const end2 = path.indexOf('/', end + 1);
  return [path.slice(1, end), end2 === -1 ? path.slice(1) : path.slice(1, end2)];
}

/** Whether every path `b` matches is matched by `a` (conservative: false when unsure). */
export function pathCovers(a: PathPattern, b: PathPattern): boolean {
  if (a.kind === 'any' || a.text === b.text) return true;
  if (b.kind === 'exact') return a.test(b.text);
  if (a.kind === 'prefix') return b.kind !== 'suffix' && b.kind !== 'any' && b.head.startsWith(a.head);
  if (a.treeBase !== undefined) {
    if (b.kind === 'suffix' || b.kind === 'any') return false;
    // `/v1*` (prefix) also matches `/v10`; a `segments` pattern with head `/v1` is `/v1/**` itself.
    return (b.kind === 'segments' && b.head === a.treeBase) || b.head.startsWith(`${a.treeBase}/`);
  }
  return false;
}

/** Whether `a` is a valid trust domain name; returns a problem text otherwise. */
export function checkTrustDomain(text: string): string | undefined {
  if (text.startsWith(SCHEME)) return `trust domain ${JSON.stringify(text)}: write the bare name (${text.slice(SCHEME.length)})`;
  try {
    parseTrustDomain(text);
    return undefined;
  } catch (err) {
    if (isSpiffeError(err)) return err.message;
    throw err;
  }
}

/** The trust domain of a SPIFFE ID string (`spiffe://td/...`), without validating it. */
export function trustDomainOfId(id: string): string {
  const slash = id.indexOf('/', SCHEME.length);
  return slash === -1 ? id.slice(SCHEME.length) : id.slice(SCHEME.length, slash);
}
