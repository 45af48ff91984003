/**
 * A scanner over JSON text that JSON.parse already accepted: finds the raw source text of a
 * top-level member's value, so a number such as `spiffe_sequence` can be read with all its digits
 * (JSON.parse rounds integers above 2^53).
 */
import { bundleError } from './errors.js';

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

/** Index just after the string token starting at `i` (a `"`). Input is known-valid JSON. */
function skipString(text: string, i: number): number {
  i++;
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) i += 2;
    else if (c === 0x22) return i + 1;
    else if (Number.isNaN(c)) throw bundleError('json', 'unterminated JSON string');
    else i++;
  }
}

/** Index just after the value starting at `i`. Input is known-valid JSON. */
function skipValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === 0x22) return skipString(text, i);
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    while (i < text.length) {
      const d = text.charCodeAt(i);
      if (d === 0x22) {
        i = skipString(text, i);
        continue;
      }
      if (d === 0x7b || d === 0x5b) depth++;
      else if (d === 0x7d || d === 0x5d) {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    throw bundleError('json', 'unterminated JSON value');
  }
  // number, true, false, null: runs to the next delimiter
  while (i < text.length) {
    const d = text.charCodeAt(i);
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d)) break;
    i++;
  }
  return i;
}

/**
 * The raw source text of a top-level member's value (the last one, as JSON.parse keeps the last
 * duplicate), or undefined. Only called on text JSON.parse accepted as an object. Keys are
 * compared after JSON unescaping, so `"spiffe\u005fsequence"` is found too.
 */
export function rawTopLevelMember(text: string, member: string): string | undefined {
  let i = 0;
  const ws = (): void => {
    while (i < text.length && isWs(text.charCodeAt(i))) i++;
  };
  ws();
  if (text.charCodeAt(i) !== 0x7b) return undefined;
  i++;
  let found: string | undefined;
  for (;;) {
    ws();
    const c = text.charCodeAt(i);
    if (c === 0x7d || Number.isNaN(c)) return found;
    if (c === 0x2c) {
      i++;
      continue;
    }
    const keyEnd = skipString(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = keyEnd;
    ws();
    i++; // ':'
    ws();
    const start = i;
    i = skipValue(text, i);
    if (key === member) found = text.slice(start, i);
  }
}
