/**
 * Logging through pino. `json` writes pino's JSON lines; `text` writes one readable line per
 * record (`time LEVEL [subsystem] message key=value ...`), as SPIRE's text format does. Field
 * names live in one place (LogField); keys, tokens and full SVIDs are never logged.
 *
 * A text line is one line whatever the values hold: control characters (C0, DEL, C1 such as
 * NEL U+0085) and the Unicode line separators U+2028/U+2029 in the message, field names and
 * values are written as `\uXXXX` escapes (values holding any are quoted), so a workload or entry
 * value cannot split a record or forge another.
 */
import { createWriteStream } from 'node:fs';
import { Writable } from 'node:stream';
import { format } from 'node:util';
import { setLogger } from '@grpc/grpc-js';
import pino, { type Logger } from 'pino';
import { escapeControls, hasControls } from './strings.js';
import { openLogFile } from './preflight.js';

export type LogLevel = 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
export type LogFormat = 'text' | 'json';

/** Log field names used across components. */
export const LogField = {
  subsystem: 'subsystem',
  agentId: 'agent_id',
  entryId: 'entry_id',
  spiffeId: 'spiffe_id',
  method: 'method',
  serial: 'serial',
  trustDomain: 'trust_domain',
} as const;

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'subsystem', 'name']);

function formatValue(v: unknown): string {
  // JSON.stringify escapes C0 controls; escapeControls the rest (DEL, C1, U+2028/U+2029).
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' || hasControls(v) ? escapeControls(JSON.stringify(v)) : v;
  if (v instanceof Object && 'message' in v && 'stack' in v) return escapeControls(JSON.stringify((v as Error).message));
  return escapeControls(JSON.stringify(v) ?? String(v));
}

/** Turns pino JSON lines into text lines. */
export function textLine(json: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const time = new Date(typeof rec['time'] === 'number' ? rec['time'] : Date.now()).toISOString();
  const level = LEVEL_NAMES[rec['level'] as number] ?? String(rec['level']);
  const sub = rec['subsystem'] ? ` [${escapeControls(String(rec['subsystem']))}]` : '';
  const fields = Object.entries(rec)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => ` ${escapeControls(k)}=${k === 'err' && v && typeof v === 'object' ? formatValue((v as { message?: unknown }).message) : formatValue(v)}`)
    .join('');
  return `${time} ${level.padEnd(5)}${sub} ${escapeControls(String(rec['msg'] ?? ''))}${fields}\n`;
}

class TextStream extends Writable {
  readonly #out: NodeJS.WritableStream;
  #buf = '';
  constructor(out: NodeJS.WritableStream) {
    super();
    this.#out = out;
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      this.#out.write(textLine(this.#buf.slice(0, nl)));
      this.#buf = this.#buf.slice(nl + 1);
    }
    cb();
  }
}

/** How to flush what a logger made by createLogger still buffers (a -logFile stream). */
const flushers = new WeakMap<object, () => Promise<void>>();

/** Waits for `stream` to finish after end(), at most `ms` (a stuck disk must not hold up exit). */
function endStream(stream: NodeJS.WritableStream, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    stream.end(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * Writes out everything `logger` (from createLogger) still buffers and closes its log file, so a
 * `process.exit` right after loses no line. stderr needs nothing (its writes are synchronous for
 * files and pipes). The logger must not be used afterwards. Waits at most 1 s per stream.
 */
export async function flushLogger(logger: object): Promise<void> {
  await flushers.get(logger)?.();
}

const FLUSH_WAIT_MS = 1000;

/**
 * The log file (when `file` is set) is opened here, synchronously: a file that cannot be opened
 * throws a PreflightError naming it and the -logFile / log_file setting, before the caller does
 * anything else. A write error later (disk full, file system gone) is reported once on stderr;
 * it does not stop the process.
 */
export function createLogger(opts: { level: LogLevel; format: LogFormat; file?: string | undefined; name: string }): Logger {
  let out: NodeJS.WritableStream = process.stderr;
  if (opts.file) {
    const file = opts.file;
    const stream = createWriteStream(file, { fd: openLogFile(file, { setting: '-logFile / log_file' }), flags: 'a' });
    let reported = false;
    stream.on('error', (err) => {
      if (reported) return;
      reported = true;
      process.stderr.write(`${opts.name}: cannot write the log file ${file} (-logFile / log_file): ${err.message}; further log lines are lost\n`);
    });
    out = stream;
  }
  const dest = opts.format === 'json' ? out : new TextStream(out);
  const logger = pino(
    {
      name: opts.name,
      level: opts.level.toLowerCase(),
      base: undefined,
      serializers: { err: pino.stdSerializers.err },
    },
    dest as pino.DestinationStream,
  );
  if (opts.file) {
    flushers.set(logger, async () => {
      if (dest !== out) await endStream(dest, FLUSH_WAIT_MS);
      await endStream(out, FLUSH_WAIT_MS);
    });
  }
  return logger;
}

/**
 * grpc-js's own log lines (by default its errors, as `E No address added ...` on stderr) go to
 * `logger` at DEBUG with subsystem "grpc" instead: the operator sees our messages, and can
 * still see grpc-js's with -logLevel DEBUG (GRPC_VERBOSITY and GRPC_TRACE still choose which
 * it produces). grpc-js has one logger per process: the last call wins.
 */
export function routeGrpcLogs(logger: Logger): void {
  const child = logger.child({ subsystem: 'grpc' });
  const write = (...args: unknown[]): void => child.debug(format(...args).trimEnd());
  setLogger({ error: write, info: write, debug: write });
}
