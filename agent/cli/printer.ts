/**
 * Output of the `api` commands, as SPIRE's agent CLI prints it:
 * - X.509 (fetch x509, watch): "Received N svid(s) after <Go duration>", then per SVID the
 *   SPIFFE ID and validity of the leaf, intermediates, own CAs and federated CAs (tab-separated,
 *   times as Go prints time.Time in UTC), then an empty line. Federated bundles are in trust
 *   domain order (SPIRE iterates a Go map: random order).
 * - `-output json`: what SPIRE's protojson printer writes: proto field names (snake_case), every
 *   field present, bytes as standard base64, object keys sorted, `<>&` and U+2028/U+2029 escaped
 *   as Go does (DEL and C1 controls too, so no reader splits the line), one
 *   document per line; several messages form a JSON array.
 */
import { trustDomainId, trustDomainOf, type TrustDomain } from '../../spiffe/id.js';
import type { BundleSet } from '../../spiffe/bundle.js';
import { parseCertificate } from '../../spiffe/x509/index.js';
import type { X509Context, WorkloadX509Svid } from '../../spiffe/workloadapi/index.js';
import { goTimeString, type Writer } from '../../common/output.js';
import { escapeControls } from '../../common/strings.js';

/** Nanoseconds as Go's `time.Duration.String()`: "8.123456ms", "1.5s", "2m3s", "812ns". */
export function goDurationString(ns: bigint): string {
  if (ns === 0n) return '0s';
  const neg = ns < 0n;
  const u = neg ? -ns : ns;
  let out: string;
  if (u < 1000n) out = `${u}ns`;
  else if (u < 1_000_000n) out = `${frac(u, 3)}µs`;
  else if (u < 1_000_000_000n) out = `${frac(u, 6)}ms`;
  else {
    const minutes = u / 60_000_000_000n;
    out = `${frac(u % 60_000_000_000n, 9)}s`;
    if (minutes > 0n) {
      out = `${minutes % 60n}m${out}`;
      if (minutes >= 60n) out = `${minutes / 60n}h${out}`;
    }
  }
  return neg ? `-${out}` : out;
}

function frac(v: bigint, digits: number): string {
  const scale = 10n ** BigInt(digits);
  const int = v / scale;
  const rest = v % scale;
  if (rest === 0n) return String(int);
  return `${int}.${rest.toString().padStart(digits, '0').replace(/0+$/, '')}`;
}

/** An SVID with its own CAs and the CAs of every other trust domain in the context. */
export interface SvidView {
  svid: WorkloadX509Svid;
  bundle: Buffer[];
  federated: [TrustDomain, Buffer[]][];
}

export function svidViews(ctx: X509Context): SvidView[] {
  return ctx.svids.map((svid) => {
    const td = trustDomainOf(svid.id);
    return {
      svid,
      bundle: ctx.bundles.get(td)?.x509Authorities() ?? [],
      federated: federatedOf(ctx.bundles, td),
    };
  });
}

function federatedOf(bundles: BundleSet, own: TrustDomain): [TrustDomain, Buffer[]][] {
  return bundles
    .bundles()
    .filter((b) => b.trustDomain !== own && b.x509Authorities().length > 0)
    .map((b) => [b.trustDomain, b.x509Authorities()]);
}

function validity(prefix: string, der: Buffer): string {
  const c = parseCertificate(der);
  const secs = (d: Date): number => Math.floor(d.getTime() / 1000);
  return `${prefix} Valid After:\t${goTimeString(secs(c.notBefore))}\n${prefix} Valid Until:\t${goTimeString(secs(c.notAfter))}\n`;
}

/**
 * SPIRE's printX509SVIDResponse. `federatedLabel` names a federated trust domain: `fetch` prints
 * the response's map key (`spiffe://td`), `watch` the bare trust domain, as SPIRE does.
 */
export function printX509Svids(out: Writer, views: readonly SvidView[], elapsedNs: bigint, federatedLabel: (td: TrustDomain) => string): void {
  let s = `Received ${views.length} svid${views.length === 1 ? '' : 's'} after ${goDurationString(elapsedNs)}\n`;
  for (const v of views) {
    s += `\nSPIFFE ID:\t\t${v.svid.id}\n`;
    s += validity('SVID', v.svid.certificates[0]!);
    v.svid.certificates.slice(1).forEach((der, i) => (s += validity(`Intermediate #${i + 1}`, der)));
    v.bundle.forEach((der, i) => (s += validity(`CA #${i + 1}`, der)));
    for (const [td, cas] of v.federated) cas.forEach((der, i) => (s += validity(`[${federatedLabel(td)}] CA #${i + 1}`, der)));
  }
  out.write(`${s}\n`);
}

export const fetchLabel = (td: TrustDomain): string => trustDomainId(td);
export const watchLabel = (td: TrustDomain): string => td;

// ---- JSON (SPIRE's protojson printer) ----

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object' && !Buffer.isBuffer(value)) {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) out[k] = sortKeys((value as Record<string, unknown>)[k]);
    return out;
  }
  return value;
}

/** One line of JSON: one message, or an array of several. */
export function writeProtoJson(out: Writer, messages: readonly unknown[]): void {
  const doc = messages.length === 1 ? messages[0] : messages;
  const json = JSON.stringify(sortKeys(doc))
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026');
  // Go escapes U+2028/U+2029; DEL and C1 controls (NEL U+0085) too here, so no reader splits the line.
  const text = escapeControls(json);
  out.write(`${text}\n`);
}

export const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
