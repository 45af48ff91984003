/**
 * Maintenance of our trust domain's bundle: what it holds, when its sequence moves, and which
 * upstream roots stay published.
 *
 * Contents: X.509 authorities = upstream roots (upstream mode) + every self-signed CA in the
 * journal (prepared, active, old); JWT authorities = every JWT key in the journal. A step that
 * changes the contents bumps spiffe_sequence by exactly 1 over the base sequence. At start the
 * base is max(stored bundle's sequence, journal's sequence), which reconciles a journal that was
 * written without its bundle. Upstream roots that are no longer configured stay published while
 * an intermediate not signed by the current upstream CA remains, and never past their own
 * notAfter (plus the prune grace).
 */
import type { StoredBundle } from '../datastore/types.js';
import type { TrustDomain } from '../../spiffe/id.js';
import { Bundle, parseBundle } from '../../spiffe/bundle.js';
import { importPublicKeySpki } from '../../spiffe/keys.js';
import { parseCertificate } from '../../spiffe/x509/index.js';
import type { Journal, RootRecord, X509Record } from './journal.js';
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
export function buildBundle(trustDomain: TrustDomain, d: Draft, sequence: bigint, refreshHintSeconds: number | undefined): Bundle {
  const b = new Bundle(trustDomain, { sequence, refreshHintSeconds });
  for (const r of d.upstreamRoots) b.addX509Authority(b64(r.certDer));
  for (const r of d.x509) if (r.selfSigned) b.addX509Authority(b64(r.certDer));
  for (const r of d.jwt) b.addJwtAuthority(r.kid, importPublicKeySpki(b64(r.publicKeySpki)));
  return b;
}

/**
 * The bundle to publish after a step: the draft's contents; `changed` when they differ from
 * `published` (or nothing is published), and then the sequence is `baseSeq + 1`, else it stays
 * the published one.
 */
export function nextBundle(
  trustDomain: TrustDomain,
  d: Draft,
  ctx: { published: Bundle | undefined; baseSeq: bigint; refreshHintSeconds: number | undefined },
): { bundle: Bundle; changed: boolean } {
  const bundle = buildBundle(trustDomain, d, ctx.published?.sequence ?? ctx.baseSeq, ctx.refreshHintSeconds);
  const changed = ctx.published === undefined || !bundle.equals(ctx.published);
  if (changed) bundle.sequence = ctx.baseSeq + 1n;
  return { bundle, changed };
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
