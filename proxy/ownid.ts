/**
 * Our own SPIFFE ID for access log lines and X-Forwarded-Client-Cert, read once per SVID rather
 * than once per connection or request: `X509Source.getX509Svid()` parses the leaf certificate on
 * every call (to refuse an expired SVID), which was a tenth of an HTTP listener's CPU. The cache
 * is keyed by the SVID object the source holds (a rotation brings a new one) and ends at the
 * leaf's notAfter, after which the source is asked again (and answers `svid_expired`: no ID).
 */
import type { X509Source } from '../spiffe/sdk/x509source.js';
import { parseCertificate } from '../spiffe/x509/parse.js';

export type OwnId = () => string | undefined;

export function ownIdReader(source: X509Source, now: () => number = Date.now): OwnId {
  let cached: { svid: object; id: string; notAfter: number } | undefined;
  return () => {
    let current: object;
    try {
      current = source.context.defaultSvid;
    } catch {
      return undefined;
    }
    if (cached !== undefined && cached.svid === current && now() < cached.notAfter) return cached.id;
    try {
      const svid = source.getX509Svid();
      const leaf = svid.certificates[0];
      cached = { svid: current, id: svid.id, notAfter: leaf === undefined ? 0 : parseCertificate(leaf).notAfter.getTime() };
      return svid.id;
    } catch {
      cached = undefined;
      return undefined;
    }
  };
}
