/**
 * `api fetch x509 [-socketPath P] [-timeout 5s] [-output pretty|json] [-silent] [-write DIR]`
 * (`api fetch` alone means this): SPIRE's `spire-agent api fetch x509`.
 * - Takes the first FetchX509SVID message; in pretty mode each SVID is verified against its own
 *   trust domain's bundle first (SPIRE does the same), then printed.
 * - `-write DIR` writes, per SVID N: `svid.N.pem` (leaf + intermediates),
 *   `svid.N.key` (PKCS#8 PEM, mode 0600), `bundle.N.pem` (own CAs) and `federated_bundle.N.M.pem`
 *   for each other trust domain M in trust domain order; public files 0644. Each file is written
 *   to a temp file and renamed, so a reader never sees half a key, and an existing file (or a
 *   symlink planted there) is replaced rather than written through. In pretty mode each file is
 *   announced ("Writing SVID #0 to file DIR/svid.0.pem."); in json mode stdout stays pure JSON.
 *   A missing DIR is created 0700, parents included, and refused under a directory another
 *   local user controls (common/safedir.ts ensureOutputDirectory).
 * - `-silent` suppresses all stdout (SPIRE's doc: "Suppress stdout").
 */
import type { Command } from 'commander';
import { ensureOutputDirectory } from '../../common/safedir.js';
import { writeFileReplacingSync } from '../../common/safefile.js';
import { join } from 'node:path';
import { trustDomainId, trustDomainOf } from '../../spiffe/id.js';
import { exportPrivateKeyPkcs8 } from '../../spiffe/keys.js';
import { certificatesToPem, privateKeyToPem } from '../../spiffe/pem.js';
import { verifyX509Svid } from '../../spiffe/x509/index.js';
import type { X509Context } from '../../spiffe/workloadapi/index.js';
import { addApiOptions, apiAction, type ApiOptions } from './common.js';
import { b64, fetchLabel, printX509Svids, svidViews, writeProtoJson, type SvidView } from './printer.js';

interface FetchX509Options extends ApiOptions {
  silent?: boolean;
  write?: string;
}

/** Writes `data` to `path` with `mode` via a temp file (final mode before any byte) + rename. */
export function writeFileAtomic(path: string, data: string, mode: number): void {
  try {
    writeFileReplacingSync(path, data, mode);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'no such directory' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'is a directory' : e.message;
    throw new Error(`cannot write ${path}: ${why}`);
  }
}

function writeFiles(dir: string, views: readonly SvidView[], announce: (line: string) => void): void {
  try {
    ensureOutputDirectory(dir, '-write directory');
  } catch (err) {
    throw new Error(`cannot use ${dir} for -write: ${(err as Error).message}`);
  }
  views.forEach((v, i) => {
    const svidPath = join(dir, `svid.${i}.pem`);
    const keyPath = join(dir, `svid.${i}.key`);
    const bundlePath = join(dir, `bundle.${i}.pem`);
    announce(`Writing SVID #${i} to file ${svidPath}.\n`);
    writeFileAtomic(svidPath, certificatesToPem(v.svid.certificates), 0o644);
    announce(`Writing key #${i} to file ${keyPath}.\n`);
    writeFileAtomic(keyPath, privateKeyToPem(exportPrivateKeyPkcs8(v.svid.privateKey)), 0o600);
    announce(`Writing bundle #${i} to file ${bundlePath}.\n`);
    writeFileAtomic(bundlePath, certificatesToPem(v.bundle), 0o644);
    v.federated.forEach(([td, cas], j) => {
      const path = join(dir, `federated_bundle.${i}.${j}.pem`);
      announce(`Writing federated bundle #${j} for trust domain ${trustDomainId(td)} to file ${path}.\n`);
      writeFileAtomic(path, certificatesToPem(cas), 0o644);
    });
  });
}

/** The X509SVIDResponse as SPIRE's json output shows it, rebuilt from the decoded context. */
export function x509ResponseJson(ctx: X509Context): Record<string, unknown> {
  const own = new Set(ctx.svids.map((s) => trustDomainOf(s.id)));
  const federated: Record<string, string> = {};
  for (const b of ctx.bundles.bundles()) if (!own.has(b.trustDomain)) federated[trustDomainId(b.trustDomain)] = b64(b.x509AuthoritiesDer());
  return {
    svids: ctx.svids.map((s) => ({
      spiffe_id: s.id,
      x509_svid: b64(Buffer.concat(s.certificates)),
      x509_svid_key: b64(exportPrivateKeyPkcs8(s.privateKey)),
      bundle: b64(ctx.bundles.get(trustDomainOf(s.id))?.x509AuthoritiesDer() ?? Buffer.alloc(0)),
      hint: s.hint,
    })),
    crl: [],
    federated_bundles: federated,
  };
}

export function register(fetch: Command): void {
  addApiOptions(
    fetch
      .command('x509')
      .description('Fetches X509 SVIDs from the Workload API')
      .option('--silent', 'Suppress stdout')
      .option('--write <dir>', 'Write SVID data to the specified path'),
  ).action(
    apiAction<FetchX509Options>(async (o, ctx) => {
      const started = process.hrtime.bigint();
      const x509 = await ctx.client().fetchX509Context();
      const elapsed = process.hrtime.bigint() - started;
      const views = svidViews(x509);
      const out = (s: string): void => {
        if (!o.silent) ctx.io.out.write(s);
      };
      if (ctx.format === 'json') {
        if (!o.silent) writeProtoJson(ctx.io.out, [x509ResponseJson(x509)]);
        if (o.write !== undefined) writeFiles(o.write, views, () => {});
        return;
      }
      for (const v of views) {
        try {
          verifyX509Svid(v.svid.certificates, x509.bundles);
        } catch (err) {
          throw new Error(`"${v.svid.id}" SVID failed verification against bundle: ${(err as Error).message}`);
        }
      }
      if (!o.silent) printX509Svids(ctx.io.out, views, elapsed, fetchLabel);
      if (o.write !== undefined) writeFiles(o.write, views, out);
    }),
  );
}
