/**
 * Where a config file's text becomes a plain object: the format is chosen (by the file name's
 * extension, else by the text itself) and that format's reader parses the text. Readers take
 * `(text, source)`, return plain data (maps, lists, strings, numbers, booleans, null) and throw
 * `ConfigError` with `source`, line and column for syntax errors; everything after this point
 * (ConfigReader) is the same whatever the format was.
 *
 * A new format is a reader in its own file, an entry in CONFIG_READERS, and its extensions in
 * configFormatOf (plus a content rule in sniffConfigFormat if it can be told apart by its text).
 */
import { extname } from 'node:path';
import { parseHclConfig } from './confighcl.js';
import { parseJsonConfig } from './configjson.js';
import { parseYamlConfig } from './configyaml.js';

export type ConfigFormat = 'yaml' | 'json' | 'hcl';

/** Parses the text of one format; `source` (a path) names it in errors. */
export type ConfigTextReader = (text: string, source: string) => unknown;

export const CONFIG_READERS: Readonly<Record<ConfigFormat, ConfigTextReader>> = {
  yaml: parseYamlConfig,
  json: parseJsonConfig,
  hcl: parseHclConfig,
};

/**
 * The format a file name's extension names (`.yaml`/`.yml`, `.json`, `.hcl`), or undefined.
 * `.conf` (SPIRE's own name, whose files are HCL) and other names are undefined: their text
 * decides (sniffConfigFormat), so a `.conf` written as YAML or JSON keeps loading.
 */
export function configFormatOf(path: string): ConfigFormat | undefined {
  const ext = extname(path).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  if (ext === '.json') return 'json';
  if (ext === '.hcl') return 'hcl';
  return undefined;
}

/**
 * The first line of an HCL body: an attribute (`name =`) or a block (`name {`, `name "label" {`,
 * `name label {`). No YAML or JSON config starts like this: YAML has `name:` (a line
 * `name = x` or `name {` is a plain string to YAML, never a map of settings) and JSON has `{`.
 */
const HCL_FIRST_LINE = /^[A-Za-z_][\w-]*(?:[ \t]+(?:"[^"\n]*"|[A-Za-z_][\w-]*))*[ \t]*(?:\{|=(?!=))/;

/**
 * The format of text whose name does not tell (`.conf`, no extension), from its first line that
 * is neither blank nor a `#` comment: JSON when it starts with `{` or `[` (so its errors are JSON
 * errors, even where YAML would swallow them); HCL when it is a `//` or `/*` comment (not YAML)
 * or an HCL attribute or block (HCL_FIRST_LINE); else YAML. Text with no such line is YAML
 * (empty, so `{}` whatever the format).
 */
export function sniffConfigFormat(text: string): ConfigFormat {
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('{') || line.startsWith('[')) return 'json';
    if (line.startsWith('//') || line.startsWith('/*') || HCL_FIRST_LINE.test(line)) return 'hcl';
    return 'yaml';
  }
  return 'yaml';
}

/**
 * Parses config text; `source` (a path) names it in errors and picks the format by extension,
 * else the text picks it (sniffConfigFormat).
 */
export function parseConfigText(text: string, source: string, format: ConfigFormat | undefined = configFormatOf(source)): unknown {
  return CONFIG_READERS[format ?? sniffConfigFormat(text)](text, source);
}
