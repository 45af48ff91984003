/**
 * `x509 mint` and `jwt mint` (SPIRE's output and files).
 * - x509: the key pair is generated HERE (ECDSA P-256) and only a CSR goes to the server. With
 *   `-write DIR`: svid.pem and bundle.pem (0644) and key.pem (0600, whatever the umask and
 *   whatever was at the path: a temp file gets the mode before any key byte is written and is
 *   renamed over the path, so an existing file, possibly someone else's, is replaced, never
 *   written through). A missing DIR is created 0700, parents included (common/safedir.ts
 *   ensureOutputDirectory: refused under a directory another local user controls); `jwt mint
 *   -write FILE` creates FILE's missing directory the same way.
 * - `-ttl` is a Go duration (`1h`, `90s`) or whole seconds; 0 means the server default. When the
 *   server caps the lifetime (CA expiry), a warning says so, as SPIRE does.
 */
import { Option, type Command } from 'commander';
import { requiredFlag } from '../../common/cli.js';
import { dirname, join } from 'node:path';
import { parseDuration } from '../../common/duration.js';
import { ensureOutputDirectory } from '../../common/safedir.js';
import { writeFileReplacingSync } from '../../common/safefile.js';
import { writeJson } from '../../common/output.js';
import { MintJWTSVIDResponse } from '../../proto/gen/spindle/admin/v1/admin.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { certificatesToPem, privateKeyToPem } from '../../spiffe/pem.js';
import { action, addCommonOptions, collect, type CommonOptions } from './common.js';
import { idFlag } from './entry.js';
import { CliError } from './errors.js';

/** Replaces `path` with `data` at exactly `mode`, set before any byte is written (common/safefile.ts). */
export function writeFileWithMode(path: string, data: string, mode: number): void {
  try {
    writeFileReplacingSync(path, data, mode);
  } catch (err) {
    throw new CliError(`cannot write ${path}: ${(err as Error).message}`);
  }
}

/** Creates the -write directory when it is missing (0700, safely: see ensureOutputDirectory). */
export function prepareWriteDirectory(dir: string): void {
  try {
    ensureOutputDirectory(dir, '-write directory');
  } catch (err) {
    throw new CliError(`cannot use ${dir} for -write: ${(err as Error).message}`);
  }
}

function ttlFlag(value: string | undefined): number {
  if (value === undefined) return 0;
  try {
    return parseDuration(value, '-ttl');
  } catch (err) {
    throw new CliError((err as Error).message);
  }
}

function capWarning(what: string, expiresAt: bigint, ttl: number): string | undefined {
  const remaining = Number(expiresAt) - Date.now() / 1000;
  if (ttl > 0 && remaining < ttl - 1) {
    return `${what} lifetime was capped shorter than specified ttl; expires "${new Date(Number(expiresAt) * 1000).toISOString().replace('.000Z', 'Z')}"\n`;
  }
  return undefined;
}

interface X509Options extends CommonOptions {
  spiffeID?: string;
  ttl?: string;
  dns?: string[];
  write?: string;
}

interface JwtOptions extends CommonOptions {
  spiffeID?: string;
  ttl?: string;
  audience?: string[];
  write?: string;
}

export function register(program: Command): void {
  const x509 = program.command('x509').description('Mint X509-SVIDs');
  addCommonOptions(
    x509
      .command('mint')
      .description('Mints an X509-SVID')
      .addOption(requiredFlag(new Option('--spiffeID <id>', 'SPIFFE ID of the X509-SVID')))
      .option('--ttl <duration>', 'TTL of the X509-SVID (e.g. 1h, 90s; default: the server default)')
      .option('--dns <name>', 'DNS name that will be included in SVID. Can be used more than once', collect)
      .option('--write <dir>', 'Directory to write output to instead of stdout'),
  ).action(
    action<X509Options>(async (o, ctx) => {
      if ((o.spiffeID ?? '') === '') throw new CliError('spiffeID must be specified: set -spiffeID');
      const id = idFlag('spiffeID', o.spiffeID!);
      const ttl = ttlFlag(o.ttl);
      // Loaded here: the X.509 module is the CLI's heaviest and only this command needs it.
      const { createCsr } = await import('../../spiffe/x509/index.js');
      const keys = await generateKeyPair('ec-p256');
      const csr = createCsr(keys.privateKey);
      const resp = await ctx.withClient((c) =>
        c.call(c.svid.mintX509Svid, { csr, spiffeId: id, ttl, dnsNames: o.dns ?? [] }),
      );
      const svid = resp.svid;
      if (svid === undefined || svid.certChain.length === 0) throw new CliError('server response missing SVID chain');
      if (resp.bundle.length === 0) throw new CliError('server response missing X509 Authorities');
      const warning = capWarning('X509-SVID', svid.expiresAt, ttl);
      if (warning !== undefined) ctx.io.err.write(warning);

      const keyDer = exportPrivateKeyPkcs8(keys.privateKey);
      if (o.write === undefined) {
        if (ctx.format === 'json') {
          writeJson(ctx.io.out, {
            x509_svid: svid.certChain.map((d) => d.toString('base64')),
            private_key: keyDer.toString('base64'),
            root_cas: resp.bundle.map((d) => d.toString('base64')),
          });
        } else {
          ctx.io.out.write(`X509-SVID:\n${certificatesToPem(svid.certChain)}\n`);
          ctx.io.out.write(`Private key:\n${privateKeyToPem(keyDer)}\n`);
          ctx.io.out.write(`Root CAs:\n${certificatesToPem(resp.bundle)}\n`);
        }
        return;
      }
      prepareWriteDirectory(o.write);
      const svidPath = join(o.write, 'svid.pem');
      const keyPath = join(o.write, 'key.pem');
      const bundlePath = join(o.write, 'bundle.pem');
      writeFileWithMode(svidPath, certificatesToPem(svid.certChain), 0o644);
      ctx.io.out.write(`X509-SVID written to ${svidPath}\n`);
      writeFileWithMode(keyPath, privateKeyToPem(keyDer), 0o600);
      ctx.io.out.write(`Private key written to ${keyPath}\n`);
      writeFileWithMode(bundlePath, certificatesToPem(resp.bundle), 0o644);
      ctx.io.out.write(`Root CAs written to ${bundlePath}\n`);
    }),
  );

  const jwt = program.command('jwt').description('Mint JWT-SVIDs');
  addCommonOptions(
    jwt
      .command('mint')
      .description('Mints a JWT-SVID')
      .addOption(requiredFlag(new Option('--spiffeID <id>', 'SPIFFE ID of the JWT-SVID')))
      .option('--ttl <duration>', 'TTL of the JWT-SVID (e.g. 5m; default: the server default)')
      .addOption(requiredFlag(new Option('--audience <aud>', 'Audience claim that will be included in the SVID. Can be used more than once').argParser(collect)))
      .option('--write <file>', 'File to write token to instead of stdout'),
  ).action(
    action<JwtOptions>(async (o, ctx) => {
      if ((o.spiffeID ?? '') === '') throw new CliError('spiffeID must be specified: set -spiffeID');
      if ((o.audience?.length ?? 0) === 0) throw new CliError('at least one audience must be specified: set -audience');
      const id = idFlag('spiffeID', o.spiffeID!);
      const ttl = ttlFlag(o.ttl);
      const resp = await ctx.withClient((c) => c.call(c.svid.mintJwtsvid, { spiffeId: id, audience: o.audience ?? [], ttl }));
      const token = resp.svid?.token ?? '';
      if (token === '') throw new CliError('server response missing token');
      const warning = capWarning('JWT-SVID', resp.svid!.expiresAt, ttl);
      if (warning !== undefined) ctx.io.err.write(warning);
      if (o.write !== undefined) {
        prepareWriteDirectory(dirname(o.write));
        writeFileWithMode(o.write, token, 0o600);
        ctx.io.out.write(`JWT-SVID written to ${o.write}\n`);
        return;
      }
      if (ctx.format === 'json') writeJson(ctx.io.out, MintJWTSVIDResponse.toJSON(resp));
      else ctx.io.out.write(`${token}\n`);
    }),
  );
}
