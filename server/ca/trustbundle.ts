/**
 * Maintenance of our trust domain's bundle: what it holds, when its sequence moves, and which
 * upstream roots stay published.
 *
 * Contents (one server): X.509 authorities = upstream roots (upstream mode) + every self-signed
 * CA in the journal (prepared, active, old); JWT authorities = every JWT key in the journal. A
 * step that changes the stored contents bumps spiffe_sequence by exactly 1 over the base
 * sequence: max(stored bundle's sequence, journal's sequence), so a stored bundle older than the
 * journal (a restored database) is replaced by one with a higher sequence than either. Upstream roots that are no longer configured stay published while
 * an intermediate not signed by the current upstream CA remains, and never past their own
 * notAfter (plus the prune grace).
 *
 * Several servers on one datastore share the trust domain's bundle: each keeps its own journal,
 * and a step merges its authorities into the stored bundle (mergeShared) inside one datastore
 * write transaction, so the bundle holds every server's authorities. A server removes what it
 * published itself and has pruned or dropped since (`withdrawn`), and another server's
 * authorities only once they have expired (`ForeignExpiry`): more than the prune grace past an
 * X.509 authority's certificate notAfter, or past the notAfter that another server's journal
 * records for a JWT key (JWT keys in the bundle carry no expiry). So the authorities of a server
 * that was retired or lost its data_dir leave the bundle once they expire, as the server itself
 * would have pruned them. Upstream roots are not owned by one server: a root that one server
 * withdraws and another still configures is published again by the other when it notices
 * (CaManager's change-feed watch).
 */
import type { StoredBundle } from '../datastore/types.js';
import type { TrustDomain } from '../../spiffe/id.js';
import { Bundle, parseBundle } from '../../spiffe/bundle.js';
import type { KeyObject } from 'node:crypto';
import { importPublicKeySpki } from '../../spiffe/keys.js';
import { parseCertificate } from '../../spiffe/x509/index.js';
import { parseJournal, type Journal, type RootRecord, type X509Record } from './journal.js';
import type { CaLogger } from './options.js';
import type { Draft } from './rotation.js';

const ms = (iso: string): number => Date.parse(iso);
const b64 = (s: string): Buffer => Buffer.from(s, 'base64');

function serialOf(der: Buffer): string {
  try {
    return parseCertificate(der).serialHex;
  } catch {
    return '';
  }
}

/** What is published when the CA starts, and the sequence the first change builds on. */
export interface PublishedAtStart {
  /** The stored bundle (with the stored sequence), or undefined when there is none or it does not parse. */
  published: Bundle | undefined;
  /** max(stored sequence, journal sequence). */
  baseSeq: bigint;
  /** The stored bundle's sequence (0 when none). */
  storedSeq: bigint;
}

/** Reads the stored bundle of our trust domain against the journal; a stored bundle that does not parse is logged and republished. */
export function publishedAtStart(
  trustDomain: TrustDomain,
  stored: StoredBundle | undefined,
  journal: Journal,
  log: CaLogger,
): PublishedAtStart {
  let published: Bundle | undefined;
  if (stored !== undefined) {
    try {
      published = parseBundle(trustDomain, stored.document);
    } catch (err) {
      log.warn({ err }, 'stored bundle of our trust domain does not parse; it will be republished');
    }
  }
  const journalSeq = BigInt(journal.sequence);
  const storedSeq = stored?.sequence ?? 0n;
  const baseSeq = journalSeq > storedSeq ? journalSeq : storedSeq;
  if (published !== undefined) published.sequence = storedSeq;
  return { published, baseSeq, storedSeq };
}

/**
 * Adds configured upstream roots (`current`) to the draft; drops unconfigured ones once expired
 * (past `graceMs`) or no longer needed by an intermediate from another upstream CA.
 */
export function reconcileRoots(
  d: Draft,
  now: Date,
  o: { current: readonly Buffer[]; graceMs: number; isFromCurrentUpstream: (r: X509Record) => boolean },
): void {
  const t = now.getTime();
  const isCurrent = (r: RootRecord): boolean => o.current.some((c) => c.equals(b64(r.certDer)));
  const foreignIntermediates = d.x509.some((r) => !r.selfSigned && !o.isFromCurrentUpstream(r));
  d.upstreamRoots = d.upstreamRoots.filter((r) => {
    if (isCurrent(r)) return true;
    const keep = foreignIntermediates && t <= ms(r.notAfter) + o.graceMs;
    if (!keep) d.events.push({ kind: 'upstream_root', action: 'pruned', id: serialOf(b64(r.certDer)), notAfter: new Date(r.notAfter) });
    return keep;
  });
  for (const c of o.current) {
    if (d.upstreamRoots.some((r) => b64(r.certDer).equals(c))) continue;
    const info = parseCertificate(c);
    d.upstreamRoots.push({ certDer: c.toString('base64'), notAfter: info.notAfter.toISOString() });
    d.events.push({ kind: 'upstream_root', action: 'published', id: info.serialHex, notAfter: info.notAfter });
  }
}

/** The bundle the draft describes, with `sequence`. */
export function buildBundle(trustDomain: TrustDomain, d: Pick<Draft, 'x509' | 'jwt' | 'upstreamRoots'>, sequence: bigint, refreshHintSeconds: number | undefined): Bundle {
  const b = new Bundle(trustDomain, { sequence, refreshHintSeconds });
  for (const r of d.upstreamRoots) b.addX509Authority(b64(r.certDer));
  for (const r of d.x509) if (r.selfSigned) b.addX509Authority(b64(r.certDer));
  for (const r of d.jwt) b.addJwtAuthority(r.kid, importPublicKeySpki(b64(r.publicKeySpki)));
  return b;
}

/** Every X.509 and JWT authority of `b` is in `into` (same DER; same kid with the same key). */
export function containsAuthorities(into: Bundle, b: Bundle): boolean {
  for (const der of b.x509Authorities()) if (!into.hasX509Authority(der)) return false;
  const keys = into.jwtAuthorities();
  for (const [kid, key] of b.jwtAuthorities()) {
    const k = keys.get(kid);
    if (k === undefined || !k.equals(key)) return false;
  }
  return true;
}

/** What another server's journal records of one of its JWT keys: its public key and notAfter. */
export interface RecordedJwtKey {
  key: KeyObject;
  notAfterMs: number;
}

/** The evidence mergeShared prunes other servers' authorities on. */
export interface ForeignExpiry {
  now: Date;
  /** How long past its notAfter an authority stays (pruneGraceSeconds). */
  graceMs: number;
  /** The JWT keys other servers' journals record, by kid (journalJwtKeys). */
  jwtKeys: ReadonlyMap<string, RecordedJwtKey>;
}

/** An authority of another server that a merge pruned: X.509 CA serial hex or JWT kid. */
export interface PrunedAuthority {
  kind: 'x509' | 'jwt';
  id: string;
  notAfter: Date;
}

/** The notAfter of an X.509 authority, or undefined when it does not parse. */
function certNotAfter(der: Buffer): Date | undefined {
  try {
    return parseCertificate(der).notAfter;
  } catch {
    return undefined;
  }
}

/**
 * The X.509 authority expired more than the grace ago: its certificate says so. A certificate
 * that does not parse is no evidence and is kept.
 */
export function x509Expired(der: Buffer, now: Date, graceMs: number): Date | undefined {
  const notAfter = certNotAfter(der);
  return notAfter !== undefined && now.getTime() > notAfter.getTime() + graceMs ? notAfter : undefined;
}

/**
 * The JWT key expired more than the grace ago: a journal records this kid with this very key and
 * a notAfter that far in the past. A kid that no journal records is kept: the journals were
 * read before the bundle transaction, so it may be the key of a server that committed it since
 * (its journal is written in the same transaction as the bundle); and one whose journal was
 * deleted leaves no evidence of its expiry at all.
 */
export function jwtExpired(kid: string, key: KeyObject, e: ForeignExpiry): Date | undefined {
  const r = e.jwtKeys.get(kid);
  if (r === undefined || !r.key.equals(key)) return undefined;
  return e.now.getTime() > r.notAfterMs + e.graceMs ? new Date(r.notAfterMs) : undefined;
}

/**
 * The JWT keys that the journals record (every journal but `except`, ours), by kid. A journal
 * that does not parse is passed to `unreadable` and contributes nothing. A kid in two journals
 * (never expected: kids are random) keeps the later notAfter.
 */
export function journalJwtKeys(
  journals: ReadonlyArray<{ serverId: string; document: string }>,
  except: string,
  unreadable: (serverId: string, err: unknown) => void,
): Map<string, RecordedJwtKey> {
  const keys = new Map<string, RecordedJwtKey>();
  for (const j of journals) {
    if (j.serverId === except) continue;
    let journal: Journal;
    try {
      journal = parseJournal(j.document);
    } catch (err) {
      unreadable(j.serverId, err);
      continue;
    }
    for (const r of journal.jwt) {
      const notAfterMs = ms(r.notAfter);
      const known = keys.get(r.kid);
      if (known !== undefined && known.notAfterMs >= notAfterMs) continue;
      try {
        keys.set(r.kid, { key: importPublicKeySpki(b64(r.publicKeySpki)), notAfterMs });
      } catch (err) {
        unreadable(j.serverId, err);
      }
    }
  }
  return keys;
}

/**
 * The shared bundle after one server's step: `ours` (in its order), then the authorities of the
 * stored bundle (other servers', in their order) that this server neither holds nor `withdrew`,
 * less those `expiry` shows expired (x509Expired, jwtExpired; returned in `pruned`); the refresh
 * hint is ours. When that holds the same authorities and hint as `stored` (order aside),
 * `stored` is returned unchanged with `changed` false; `changed` is true when nothing parses
 * there or something was pruned. The caller sets the sequence of a changed bundle.
 */
export function mergeShared(
  trustDomain: TrustDomain,
  stored: Bundle | undefined,
  ours: Bundle,
  withdrawn: Bundle,
  expiry?: ForeignExpiry,
): { bundle: Bundle; changed: boolean; pruned: PrunedAuthority[] } {
  const b = new Bundle(trustDomain, { sequence: stored?.sequence ?? 0n, refreshHintSeconds: ours.refreshHintSeconds });
  for (const der of ours.x509Authorities()) b.addX509Authority(der);
  for (const [kid, key] of ours.jwtAuthorities()) b.addJwtAuthority(kid, key);
  const pruned: PrunedAuthority[] = [];
  if (stored === undefined) return { bundle: b, changed: true, pruned };
  for (const der of stored.x509Authorities()) {
    if (withdrawn.hasX509Authority(der) || b.hasX509Authority(der)) continue;
    const expired = expiry === undefined ? undefined : x509Expired(der, expiry.now, expiry.graceMs);
    if (expired !== undefined) pruned.push({ kind: 'x509', id: serialOf(der), notAfter: expired });
    else b.addX509Authority(der);
  }
  for (const [kid, key] of stored.jwtAuthorities()) {
    // A kid of ours stored with another key (never expected: kids are random) keeps our key.
    if (withdrawn.hasJwtAuthority(kid) || b.hasJwtAuthority(kid)) continue;
    const expired = expiry === undefined ? undefined : jwtExpired(kid, key, expiry);
    if (expired !== undefined) pruned.push({ kind: 'jwt', id: kid, notAfter: expired });
    else b.addJwtAuthority(kid, key);
  }
  const same =
    b.refreshHintSeconds === stored.refreshHintSeconds &&
    b.x509Authorities().length === stored.x509Authorities().length &&
    b.jwtAuthorities().size === stored.jwtAuthorities().size &&
    containsAuthorities(stored, b);
  return same ? { bundle: stored.clone(), changed: false, pruned } : { bundle: b, changed: true, pruned };
}

/**
 * `b` less the authorities expired more than `graceMs` ago at `now`: X.509 ones by their
 * certificate, JWT ones by `jwtNotAfter` (kid -> notAfter ms; a kid not in it is kept).
 */
export function unexpiredAuthorities(trustDomain: TrustDomain, b: Bundle, now: Date, graceMs: number, jwtNotAfter: ReadonlyMap<string, number>): Bundle {
  const out = new Bundle(trustDomain, { sequence: b.sequence, refreshHintSeconds: b.refreshHintSeconds });
  for (const der of b.x509Authorities()) if (x509Expired(der, now, graceMs) === undefined) out.addX509Authority(der);
  for (const [kid, key] of b.jwtAuthorities()) {
    const notAfter = jwtNotAfter.get(kid);
    if (notAfter === undefined || now.getTime() <= notAfter + graceMs) out.addJwtAuthority(kid, key);
  }
  return out;
}

/** The authorities of `before` that `after` no longer holds. */
export function withdrawnAuthorities(trustDomain: TrustDomain, before: Bundle, after: Bundle): Bundle {
  const w = new Bundle(trustDomain);
  for (const der of before.x509Authorities()) if (!after.hasX509Authority(der)) w.addX509Authority(der);
  const keep = after.jwtAuthorities();
  for (const [kid, key] of before.jwtAuthorities()) if (!keep.has(kid)) w.addJwtAuthority(kid, key);
  return w;
}

/** The bundle a journal describes (its own authorities only). */
export function journalBundle(trustDomain: TrustDomain, j: Journal, refreshHintSeconds: number | undefined): Bundle {
  return buildBundle(trustDomain, { x509: j.x509, jwt: j.jwt, upstreamRoots: j.upstreamRoots }, BigInt(j.sequence), refreshHintSeconds);
}

/**
 * CA certificates between our SVIDs and the bundle's roots: our unexpired intermediates in the
 * journal (active, prepared and old ones: agents may still present SVIDs of an old one),
 * followed by the upstream intermediates when an upstream authority is configured.
 */
export function intermediatesOf(journal: Journal, now: Date, upstreamIntermediates: readonly Buffer[] | undefined): Buffer[] {
  const t = now.getTime();
  const ours = journal.x509.filter((r) => !r.selfSigned && t <= ms(r.notAfter)).map((r) => b64(r.certDer));
  return upstreamIntermediates === undefined ? ours : [...ours, ...upstreamIntermediates.map((d) => Buffer.from(d))];
}
