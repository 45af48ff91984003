/**
 * Output helpers shared by the command lines: `-output pretty|json`, SPIRE's text conventions
 * (Go time strings, "1 entry" / "2 entries", gRPC code names, `%q` quoting), and writers that
 * can be swapped in tests.
 *
 * Contract:
 * - `pretty` is what SPIRE prints; `json` is the protobuf message as JSON (ts-proto `toJSON`),
 *   compact, one document per line, as SPIRE's `-output json` prints protojson.
 * - Times are printed as Go prints `time.Time` in UTC: `2006-01-02 15:04:05 +0000 UTC`.
 * - One value, one line: `field()`, `goQuote()` and `writeJson()` write control characters (C0, DEL, C1 such
 *   as NEL U+0085) and U+2028/U+2029 as `\uXXXX`, so a value (a selector, a hint, an error
 *   message from the server) cannot split a line or forge another. Values without them print
 *   exactly as SPIRE prints them.
 */
import { escapeControls } from './strings.js';

export const OUTPUT_FORMATS = ['pretty', 'json'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/** Parses an `-output` value; throws an Error naming the accepted values. */
export function parseOutputFormat(value: string): OutputFormat {
  const v = value.toLowerCase();
  if ((OUTPUT_FORMATS as readonly string[]).includes(v)) return v as OutputFormat;
  throw new Error(`invalid -output ${JSON.stringify(value)}: expected one of ${OUTPUT_FORMATS.join(', ')}`);
}

export interface Writer {
  write(text: string): void;
}

export interface OutputStreams {
  out: Writer;
  err: Writer;
}

export const processStreams: OutputStreams = {
  out: { write: (text) => void process.stdout.write(text) },
  err: { write: (text) => void process.stderr.write(text) },
};

/** Writes `value` as one line of compact JSON (DEL, C1 controls and U+2028/U+2029 escaped as well). */
export function writeJson(out: Writer, value: unknown): void {
  out.write(`${escapeControls(JSON.stringify(value))}\n`);
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** Unix seconds as Go's `time.Unix(s, 0).UTC().String()`: `2024-05-01 12:00:00 +0000 UTC`. */
export function goTimeString(unixSeconds: number | bigint): string {
  const d = new Date(Number(unixSeconds) * 1000);
  if (Number.isNaN(d.getTime())) return String(unixSeconds);
  return (
    `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ` +
    `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} +0000 UTC`
  );
}

/** `count` followed by the singular or plural noun, e.g. "1 entry", "3 entries". */
export function pluralize(count: number, singular: string, plural: string): string {
  return `${count} ${count === 1 ? singular : plural}`;
}

/** Go's `%q` for the strings we print (JSON escaping is the same for printable text; Go escapes C1 and U+2028/U+2029 too). */
export function goQuote(s: string): string {
  return escapeControls(JSON.stringify(s));
}

const GRPC_CODE_NAMES = [
  'OK',
  'Canceled',
  'Unknown',
  'InvalidArgument',
  'DeadlineExceeded',
  'NotFound',
  'AlreadyExists',
  'PermissionDenied',
  'ResourceExhausted',
  'FailedPrecondition',
  'Aborted',
  'OutOfRange',
  'Unimplemented',
  'Internal',
  'Unavailable',
  'DataLoss',
  'Unauthenticated',
] as const;

/** A gRPC status code's name as Go's `codes.Code.String()` prints it (`AlreadyExists`). */
export function grpcCodeName(code: number): string {
  return GRPC_CODE_NAMES[code] ?? `Code(${code})`;
}

/** A `Label : value` line with the label padded to `width` (SPIRE's aligned blocks). */
export function field(label: string, value: string | number | boolean, width: number): string {
  return `${label.padEnd(width)}: ${escapeControls(String(value))}\n`;
}

/**
 * Re-indents JSON text the way Go's `json.Indent` does (`": "` after keys, empty `{}`/`[]` kept
 * compact) without parsing numbers, so 64-bit integers keep every digit.
 */
export function indentJsonText(text: string, indent = '    '): string {
  let out = '';
  let depth = 0;
  let inString = false;
  const newline = (): string => `\n${indent.repeat(depth)}`;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      out += c;
      if (c === '\\') out += text[++i] ?? '';
      else if (c === '"') inString = false;
      continue;
    }
    switch (c) {
      case '"':
        inString = true;
        out += c;
        break;
      case '{':
      case '[': {
        const close = c === '{' ? '}' : ']';
        let j = i + 1;
        while (j < text.length && /\s/.test(text[j]!)) j++;
        if (text[j] === close) {
          out += c + close;
          i = j;
        } else {
          depth++;
          out += c + newline();
        }
        break;
      }
      case '}':
      case ']':
        depth--;
        out += newline() + c;
        break;
      case ',':
        out += c + newline();
        break;
      case ':':
        out += ': ';
        break;
      default:
        if (!/\s/.test(c)) out += c;
    }
  }
  return out;
}
