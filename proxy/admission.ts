/**
 * Connection admission for inbound listeners: two pools, so that connections nobody has
 * authenticated yet can never take the slots of verified callers, and one remote address cannot
 * take the pending slots every other caller needs.
 *
 * - pending: accepted, TLS handshake not finished or the caller's X509-SVID not yet verified.
 *   At most `max_pending_handshakes` per listener and `max_pending_per_address` from one remote
 *   IP address (an IPv6 /64, see addressKey; as nginx's `limit_conn` keyed by `$binary_remote_addr`, Envoy's per-listener
 *   connection limits). Over either, the socket is closed at accept, before any TLS work.
 * - verified: the caller passed the SPIFFE check; at most `max_connections`. When they are all
 *   taken, new sockets are closed at accept too (a handshake could not lead anywhere).
 *
 * A pending connection leaves its pool when it closes (handshake_timeout, a refused SVID, the
 * caller gone) or when it is promoted to verified. Sheds are counted by reason in
 * `spindle_proxy_connections_shed_total` and logged at most once per SHED_LOG_INTERVAL_MS per
 * listener (a flood makes one line, not one per socket).
 */

/**
 * The key a remote address is counted under: an IPv4 address as is (IPv4-mapped IPv6 too), an
 * IPv6 address by its /64 prefix (one host commonly holds a whole /64 and can pick any address
 * in it, so counting single IPv6 addresses would not bound it).
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1]!;
  if (!address.includes(':')) return address;
  const bare = address.split('%')[0]!.toLowerCase();
  const [head, tail] = bare.includes('::') ? (bare.split('::') as [string, string]) : [bare, undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => (g === '' ? '0' : g.replace(/^0+(?=.)/, '')))
    .join(':')}::/64`;
}

export type ShedReason = 'pending_per_address' | 'max_pending_handshakes' | 'max_connections';

export interface AdmissionLimits {
  maxConnections: number;
  maxPendingHandshakes: number;
  maxPendingPerAddress: number;
}

export class Admission {
  readonly #byAddress = new Map<string, number>();
  #pending = 0;
  #verified = 0;

  constructor(readonly limits: AdmissionLimits) {}

  get pending(): number {
    return this.#pending;
  }

  get verified(): number {
    return this.#verified;
  }

  /** Pending connections from `address` now. */
  pendingFrom(address: string): number {
    return this.#byAddress.get(address) ?? 0;
  }

  /** At accept: undefined when admitted as pending (the caller must later `promote` or `releasePending`), else why it is shed. `address` is an addressKey. */
  admit(address: string): ShedReason | undefined {
    if (this.#verified >= this.limits.maxConnections) return 'max_connections';
    if (this.#pending >= this.limits.maxPendingHandshakes) return 'max_pending_handshakes';
    const n = this.#byAddress.get(address) ?? 0;
    if (n >= this.limits.maxPendingPerAddress) return 'pending_per_address';
    this.#byAddress.set(address, n + 1);
    this.#pending++;
    return undefined;
  }

  /** Whether a verified slot is free (checked right before a finished handshake is verified). */
  hasVerifiedRoom(): boolean {
    return this.#verified < this.limits.maxConnections;
  }

  /** A pending connection from `address` is verified: it moves to the verified pool. */
  promote(address: string): void {
    this.releasePending(address);
    this.#verified++;
  }

  releasePending(address: string): void {
    const n = this.#byAddress.get(address) ?? 0;
    if (n <= 1) this.#byAddress.delete(address);
    else this.#byAddress.set(address, n - 1);
    if (this.#pending > 0) this.#pending--;
  }

  releaseVerified(): void {
    if (this.#verified > 0) this.#verified--;
  }
}

export const SHED_LOG_INTERVAL_MS = 10_000;

/**
 * Sheds summarized in one warning per interval: the counts by reason and the address that was
 * shed most (`log` is called from the first shed of an interval, then once per interval while
 * sheds continue, with what the previous interval saw).
 */
export class ShedLog {
  #counts = new Map<ShedReason, number>();
  #addresses = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    readonly listener: string,
    readonly log: (o: object, m: string) => void,
    readonly intervalMs = SHED_LOG_INTERVAL_MS,
  ) {}

  record(reason: ShedReason, address: string): void {
    const first = this.#timer === undefined;
    this.#counts.set(reason, (this.#counts.get(reason) ?? 0) + 1);
    // Bounded: at most 1000 distinct addresses kept per interval (the top one is all we report).
    if (this.#addresses.has(address) || this.#addresses.size < 1000) this.#addresses.set(address, (this.#addresses.get(address) ?? 0) + 1);
    if (first) {
      this.flush();
      this.#timer = setTimeout(() => this.#tick(), this.intervalMs);
      this.#timer.unref();
    }
  }

  #tick(): void {
    this.#timer = undefined;
    if (this.#counts.size === 0) return;
    this.flush();
    this.#timer = setTimeout(() => this.#tick(), this.intervalMs);
    this.#timer.unref();
  }

  /** Logs what was counted since the last line, if anything. */
  flush(): void {
    if (this.#counts.size === 0) return;
    let top: [string, number] | undefined;
    for (const e of this.#addresses) if (top === undefined || e[1] > top[1]) top = e;
    const shed = Object.fromEntries(this.#counts);
    const total = [...this.#counts.values()].reduce((a, b) => a + b, 0);
    this.log(
      { listener: this.listener, shed, total, top_address: top?.[0], top_address_count: top?.[1] },
      `connections closed at accept (over the pending or verified limits); next summary in ${this.intervalMs / 1000}s at most`,
    );
    this.#counts = new Map();
    this.#addresses = new Map();
  }

  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.flush();
  }
}
