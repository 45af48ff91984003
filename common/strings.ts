/** String helpers shared across layers (no dependencies). */

/**
 * Orders strings by Unicode code point (= SQLite's BINARY order of their UTF-8), not by UTF-16
 * code unit as `<` and the default `sort` do.
 */
export function compareCodePoints(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // UTF-16 order differs from code point order only between surrogates and U+E000..U+FFFF.
    if (x >= 0xd800 && y >= 0xd800) {
      x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
      y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    }
    return x - y;
  }
  return a.length - b.length;
}

/**
 * Characters that end or break a line for some reader, or move the cursor: C0 controls (line
 * feed, carriage return, vertical tab, form feed, the file/group/record separators, ESC), DEL,
 * C1 controls (NEL U+0085 among them) and the Unicode line and paragraph separators
 * U+2028/U+2029. Text logs and CLI output must not print these raw: a value carrying one could
 * split a record into two or forge a second one.
 */
const LINE_BREAKING = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** Whether `s` holds a character escapeControls() would escape. */
export function hasControls(s: string): boolean {
  LINE_BREAKING.lastIndex = 0;
  const found = LINE_BREAKING.test(s);
  LINE_BREAKING.lastIndex = 0;
  return found;
}

/**
 * `s` with every control character and Unicode line separator written as `\uXXXX` (the JSON
 * escape, so the result is still valid inside a JSON string); other text is unchanged.
 */
export function escapeControls(s: string): string {
  return s.replace(LINE_BREAKING, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `text` with every occurrence of each secret replaced by `***` (longest first, so one cannot leave part of another). */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of [...secrets].filter((x) => x !== '').sort((x, y) => y.length - x.length)) out = out.split(s).join('***');
  return out;
}
