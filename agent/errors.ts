/**
 * spindle-agent's operator-facing messages, in one place: what the server's gRPC errors mean for
 * the operator (a bundle that does not match the server, the wrong trust domain, an unreachable
 * server, a refused join token, an evicted agent), the trust bundle file, and the checks `run`
 * makes before it spends a join token (log file, data directory, Workload API socket).
 * Messages name the file, flag or address concerned and say what to do; no raw gRPC status
 * text ("14 UNAVAILABLE: ...") reaches the operator.
 */
import { readFileSync } from 'node:fs';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { checkLogFile, checkSocketPath, checkWritableDirectory, describeFsError, PreflightError, type SocketNames } from '../common/preflight.js';
import { grpcCodeName } from '../common/output.js';
import { pemToCertificates } from '../spiffe/pem.js';
import type { AgentConfig } from './config/types.js';

/**
 * Exit code of an agent the server no longer accepts (evicted or banned) and that cannot attest
 * again by itself (join_token): distinct from 1 (could not start) so a supervisor can tell that
 * restarting it unchanged will not help.
 */
export const EXIT_MUST_REATTEST = 3;

export const LOG_FILE = { setting: '-logFile / log_file' } as const;

export const WORKLOAD_SOCKET: SocketNames = {
  what: 'Workload API socket',
  setting: '-socketPath / socket_path',
  // As the listener creates it (agent/endpoints/listener.ts WORKLOAD_SOCKET_DIR_MODE).
  dirMode: 0o755,
  inUse: (path) => `another process is already serving on ${path} (is spindle-agent already running?); stop it or choose another -socketPath / socket_path`,
};

/** The PEM certificates of the -trustBundle file; errors name the flag, the path and the problem. */
export function readTrustBundleFile(path: string): Buffer[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new PreflightError(
      `cannot read the trust bundle ${path} (-trustBundle / trust_bundle_path): ${describeFsError(err)}; write it with \`spindle-server bundle show > ${path}\` on the server, or fix the path`,
    );
  }
  let certs: Buffer[] = [];
  try {
    certs = pemToCertificates(text);
  } catch {
    // counted as none below
  }
  if (certs.length === 0) {
    throw new PreflightError(
      `the trust bundle ${path} (-trustBundle / trust_bundle_path) holds no PEM certificate ("-----BEGIN CERTIFICATE-----" block); write it with \`spindle-server bundle show > ${path}\` on the server`,
    );
  }
  return certs;
}

/** What `validate` can check without creating anything: the log file and the trust bundle file. */
export function checkAgentConfigFiles(config: AgentConfig): void {
  if (config.logFile) checkLogFile(config.logFile, LOG_FILE);
  if (config.trustBundlePath) readTrustBundleFile(config.trustBundlePath);
}

/**
 * Everything `run` can check before it attests (a join token is single-use): the data
 * directory is writable (or creatable), the Workload API socket path is free and its directory
 * usable. (The log file was opened and the trust bundle read already.)
 */
export async function checkAgentCanStart(config: AgentConfig): Promise<void> {
  checkWritableDirectory(config.dataDir, `agent data directory ${config.dataDir} (-dataDir / data_dir)`, 'choose another -dataDir / data_dir, or fix its permissions or mount');
  await checkSocketPath(config.socketPath, WORKLOAD_SOCKET);
}

/** Where the agent is talking to and with what, for the messages below. */
export interface ServerErrorContext {
  /** host:port of the server, or of every server when server_address lists several (`a:p, b:p`). */
  address: string;
  trustDomain: string;
  /** The bundle the server was verified with: the -trustBundle file or the stored bundle. */
  bundle: string;
  /** The join token used for this attestation, if any. */
  joinToken?: string | undefined;
}

interface GrpcLikeError {
  code: number;
  details: string;
}

function isGrpcError(err: unknown): err is GrpcLikeError {
  return typeof err === 'object' && err !== null && typeof (err as GrpcLikeError).code === 'number' && typeof (err as GrpcLikeError).details === 'string';
}

/** TLS verification failures meaning "not signed by the bundle we trust". */
const UNTRUSTED_CHAIN = /self[- ]signed certificate|unable to get (local )?issuer certificate|unable to verify the first certificate|certificate signature failure|unable to get issuer/i;
const WRONG_ID = /server presented (\S+?),? expected (\S+?)\.?(?:\s|$)/;
const NOT_REACHABLE = /ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|Failed to connect|No connection established/i;

/**
 * The operator-facing text for an error of a call to the server (attestation, renewal, sync):
 * never the raw "N CODE: details" form. Errors that are not gRPC errors keep their message.
 */
export function describeServerError(err: unknown, ctx: ServerErrorContext): string {
  if (!isGrpcError(err)) return err instanceof Error ? err.message : String(err);
  const { code, details } = err;
  if (code === GrpcStatus.UNAVAILABLE || code === GrpcStatus.DEADLINE_EXCEEDED) {
    if (UNTRUSTED_CHAIN.test(details)) {
      return `the server's certificate at ${ctx.address} is not signed by the trust bundle ${ctx.bundle}: the bundle belongs to another server or is out of date; get the current one with \`spindle-server bundle show\` on the server and give it with -trustBundle`;
    }
    const id = WRONG_ID.exec(details);
    if (id) {
      return `the server at ${ctx.address} identifies as ${id[1]}, but this agent expects ${id[2]} (trust domain ${ctx.trustDomain}): check -trustDomain / trust_domain and -serverAddress / server_address`;
    }
    if (code === GrpcStatus.DEADLINE_EXCEEDED || NOT_REACHABLE.test(details)) {
      const why = /ECONNREFUSED/.test(details)
        ? 'connection refused'
        : /ENOTFOUND|EAI_AGAIN/.test(details)
          ? 'the host name does not resolve'
          : code === GrpcStatus.DEADLINE_EXCEEDED || /ETIMEDOUT/.test(details)
            ? 'no answer in time'
            : 'no connection';
      if (ctx.address.includes(', ')) {
        return `cannot reach any spindle-server at ${ctx.address} (${why}): check that at least one of them is running and that -serverAddress / server_address and -serverPort / server_port point at them`;
      }
      return `cannot reach spindle-server at ${ctx.address} (${why}): check that it is running and that -serverAddress / server_address and -serverPort / server_port point at it`;
    }
  }
  if (code === GrpcStatus.PERMISSION_DENIED && ctx.joinToken !== undefined && /join token/.test(details)) {
    const why = /expired/.test(details) ? 'it has expired' : /malformed/.test(details) ? 'it is malformed' : 'it does not exist or was already used';
    return `the server at ${ctx.address} refused join token ${ctx.joinToken}: ${why}; create a new one with \`spindle-server token generate\` and pass it with -joinToken`;
  }
  if (code === GrpcStatus.PERMISSION_DENIED || code === GrpcStatus.UNAUTHENTICATED) {
    return `the server at ${ctx.address} refused this agent: ${details}`;
  }
  return `the call to spindle-server at ${ctx.address} failed (${grpcCodeName(code)}): ${details}`;
}

/** Whether a refusal means the server no longer knows this agent (evicted) or banned it. */
export function refusalKind(err: unknown): 'evicted' | 'banned' | undefined {
  if (!isGrpcError(err) || err.code !== GrpcStatus.PERMISSION_DENIED) return undefined;
  if (/is banned/.test(err.details)) return 'banned';
  if (/has been evicted|is not attested/.test(err.details)) return 'evicted';
  return undefined;
}

/** Said once, as the agent exits with EXIT_MUST_REATTEST. */
export function mustReattestMessage(agentId: string, kind: 'evicted' | 'banned', dataDir: string): string {
  const what = kind === 'banned' ? 'banned' : 'evicted';
  const joinToken = agentId.includes('/spire/agent/join_token/');
  return (
    `the server has ${what} this agent (${agentId}) and it cannot attest again by itself` +
    (joinToken ? ' (its join token was used up)' : '') +
    `; its stored agent SVID was removed from ${dataDir}. ` +
    (joinToken
      ? 'Create a new join token with `spindle-server token generate` and restart the agent with -joinToken <token>.'
      : 'Restart the agent so that it attests again with its node attestor' + (kind === 'banned' ? ', once `spindle-server agent evict` has removed the ban.' : '.')) +
    ` Exiting with code ${EXIT_MUST_REATTEST}.`
  );
}
