/**
 * The rotation planner: SPIRE's slot state machine, run on a draft copy of the CA state by one
 * rotation step (CaManager commits the draft). It decides; it does not write anything.
 *
 * Slots and states (per kind: X.509 CA, JWT key; two key slots A and B each):
 *   prepared  key + certificate/kid exist and the authority is PUBLISHED in the bundle
 *   active    signs everything (exactly one per kind once started)
 *   old       signs nothing; its key is deleted; it stays in the bundle until pruned
 *   (pruned)  dropped from the journal and the bundle
 * Timing, for the active authority with lifetime L = notAfter - issuedAt:
 *   - at issuedAt + L/2, when nothing is prepared: prepare the next one (new key in the other
 *     slot, CA valid from now for caTtl, capped by the upstream CA) and publish it;
 *   - at issuedAt + 5L/6 (checked on a later rotate() than the one that prepared it): activate
 *     the prepared one, the active one becomes old;
 *   - no usable active (none, expired, key missing or not matching, made for another upstream
 *     mode): activate the prepared one if usable, else make one and activate it at once.
 *   - prune: old authorities whose notAfter is more than `pruneGraceSeconds` (default 60, a JWT
 *     validator's leeway) in the past. Everything they signed was capped at their notAfter, so
 *     nothing they signed can still be valid.
 * A prepared authority that turns out unusable (its key is gone) is dropped at once: it never
 * signed anything.
 *
 * Every change to the draft records a RotationEvent, so a step with no events changed nothing.
 */
import type { LiveJwt, LiveX509 } from './authorities.js';
import type { Journal, JwtRecord, RecordBase, RootRecord, SlotName, SlotStatus, X509Record } from './journal.js';

/** Prepare the next authority at this fraction of the active one's lifetime. */
export const PREPARE_AT = 1 / 2;
/** Activate the prepared authority at this fraction of the active one's lifetime. */
export const ACTIVATE_AT = 5 / 6;

export type RotationEventAction = 'prepared' | 'activated' | 'demoted' | 'pruned' | 'dropped' | 'published';

export interface RotationEvent {
  kind: 'x509' | 'jwt' | 'upstream_root';
  action: RotationEventAction;
  /** X.509 CA serial hex, JWT kid, or root serial hex. */
  id: string;
  notAfter: Date;
}

/** A mutable copy of the CA state that one step works on. */
export interface Draft {
  x509: X509Record[];
  jwt: JwtRecord[];
  upstreamRoots: RootRecord[];
  liveX509: Map<string, LiveX509>;
  liveJwt: Map<string, LiveJwt>;
  events: RotationEvent[];
}

/** A draft of the journal's records and the live authorities, with no events yet. */
export function newDraft(journal: Journal, liveX509: ReadonlyMap<string, LiveX509>, liveJwt: ReadonlyMap<string, LiveJwt>): Draft {
  return {
    x509: [...journal.x509],
    jwt: [...journal.jwt],
    upstreamRoots: [...journal.upstreamRoots],
    liveX509: new Map(liveX509),
    liveJwt: new Map(liveJwt),
    events: [],
  };
}

/** A slot kind (X.509 CA or JWT key): how the generic planner reads and makes its records. */
export interface Kind<R extends RecordBase, L extends { record: R }> {
  name: 'x509' | 'jwt';
  label: string;
  idOf(r: R): string;
  records(d: Draft): R[];
  setRecords(d: Draft, rs: R[]): void;
  live(d: Draft): Map<string, L>;
  /** Makes a new prepared authority in `slot`. */
  create(now: Date, slot: SlotName): Promise<L>;
  /** notAfter an authority made now would get. */
  projectedNotAfter(now: Date): number;
}

/** How a kind's authorities are made (the key slots supply these). */
export type KindMaker<R extends RecordBase, L extends { record: R }> = Pick<Kind<R, L>, 'create' | 'projectedNotAfter'>;

export function x509Kind(maker: KindMaker<X509Record, LiveX509>): Kind<X509Record, LiveX509> {
  return {
    name: 'x509',
    label: 'X.509 CA',
    idOf: (r) => r.id,
    records: (d) => d.x509,
    setRecords: (d, rs) => {
      d.x509 = rs;
    },
    live: (d) => d.liveX509,
    projectedNotAfter: (now) => maker.projectedNotAfter(now),
    create: (now, slot) => maker.create(now, slot),
  };
}

export function jwtKind(maker: KindMaker<JwtRecord, LiveJwt>): Kind<JwtRecord, LiveJwt> {
  return {
    name: 'jwt',
    label: 'JWT signing key',
    idOf: (r) => r.kid,
    records: (d) => d.jwt,
    setRecords: (d, rs) => {
      d.jwt = rs;
    },
    live: (d) => d.liveJwt,
    projectedNotAfter: (now) => maker.projectedNotAfter(now),
    create: (now, slot) => maker.create(now, slot),
  };
}

const ms = (iso: string): number => Date.parse(iso);
const otherSlot = (s: SlotName): SlotName => (s === 'A' ? 'B' : 'A');

function lifetimePoint(r: RecordBase, fraction: number): number {
  const start = ms(r.issuedAt);
  return start + (ms(r.notAfter) - start) * fraction;
}

/** Drops old authorities more than `graceMs` past their notAfter. */
export function prune(d: Draft, now: Date, graceMs: number): void {
  const t = now.getTime();
  const expired = (r: RecordBase): boolean => r.status === 'old' && t > ms(r.notAfter) + graceMs;
  for (const r of d.x509.filter(expired)) d.events.push({ kind: 'x509', action: 'pruned', id: r.id, notAfter: new Date(r.notAfter) });
  for (const r of d.jwt.filter(expired)) d.events.push({ kind: 'jwt', action: 'pruned', id: r.kid, notAfter: new Date(r.notAfter) });
  d.x509 = d.x509.filter((r) => !expired(r));
  d.jwt = d.jwt.filter((r) => !expired(r));
}

/**
 * The generic slot state machine for one kind (see the module comment). `cannotOutlive` is
 * called (and nothing is prepared) when the next authority is due but would not outlive the
 * active one, which happens when the upstream CA expires first.
 */
export async function plan<R extends RecordBase, L extends { record: R }>(
  k: Kind<R, L>,
  d: Draft,
  now: Date,
  cannotOutlive: (label: string, active: R) => void,
): Promise<void> {
  const t = now.getTime();
  const live = k.live(d);
  const find = (s: SlotStatus): R | undefined => k.records(d).find((r) => r.status === s);
  const usable = (r: R | undefined): boolean => r !== undefined && live.has(k.idOf(r)) && t < ms(r.notAfter);
  const replace = (r: R, next: R | undefined): void => {
    const rs = k.records(d);
    const i = rs.indexOf(r);
    if (next === undefined) rs.splice(i, 1);
    else rs[i] = next;
    k.setRecords(d, rs);
  };
  const event = (action: RotationEventAction, r: R): void => {
    d.events.push({ kind: k.name, action, id: k.idOf(r), notAfter: new Date(r.notAfter) });
  };
  const demote = (r: R): void => {
    replace(r, { ...r, status: 'old' });
    live.delete(k.idOf(r));
    event('demoted', r);
  };
  const activate = (r: R): void => {
    const next: R = { ...r, status: 'active', activatedAt: now.toISOString() };
    replace(r, next);
    const l = live.get(k.idOf(r));
    if (l !== undefined) live.set(k.idOf(r), { ...l, record: next });
    event('activated', next);
  };
  const prepare = async (slot: SlotName): Promise<R> => {
    const l = await k.create(now, slot);
    k.records(d).push(l.record);
    live.set(k.idOf(l.record), l);
    event('prepared', l.record);
    return l.record;
  };

  let prepared = find('prepared');
  if (prepared !== undefined && !usable(prepared)) {
    // Never signed anything: drop it (and its bundle entry) at once.
    replace(prepared, undefined);
    live.delete(k.idOf(prepared));
    event('dropped', prepared);
    prepared = undefined;
  }
  const active = find('active');
  if (active === undefined || !usable(active)) {
    if (active !== undefined) demote(active);
    activate(prepared ?? (await prepare(active ? otherSlot(active.slot) : 'A')));
    return;
  }
  if (prepared === undefined) {
    if (t < lifetimePoint(active, PREPARE_AT)) return;
    if (k.projectedNotAfter(now) <= ms(active.notAfter)) {
      cannotOutlive(k.label, active);
      return;
    }
    await prepare(otherSlot(active.slot));
    return; // published now, activated on a later step
  }
  if (t >= lifetimePoint(active, ACTIVATE_AT)) {
    demote(active);
    activate(prepared);
  }
}
