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
import { parseJsonConfig } from './configjson.js';
import { parseYamlConfig } from './configyaml.js';

export type ConfigFormat = 'yaml' | 'json';

/** Parses the text of one format; `source` (a path) names it in errors. */
export type ConfigTextReader = (text: string, source: string) => unknown;

export const CONFIG_READERS: Readonly<Record<ConfigFormat, ConfigTextReader>> = {
  yaml: parseYamlConfig,
  json: parseJsonConfig,
};

/** The format a file name's extension names (`.yaml`/`.yml`, `.json`), or undefined. */
export function configFormatOf(path: string): ConfigFormat | undefined {
  const ext = extname(path).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  if (ext === '.json') return 'json';
  return undefined;
}

/**
 * The format of text whose name does not tell (`.conf`, no extension): JSON when it starts with
 * `{` or `[` (so its errors are JSON errors, even where YAML would swallow them), else YAML.
 */
export function sniffConfigFormat(text: string): ConfigFormat {
  const trimmed = text.trimStart();
  return trimmed.startsWith('{') || trimmed.startsWith('[') ? 'json' : 'yaml';
}

/**
 * Parses config text; `source` (a path) names it in errors and picks the format by extension,
 * else the text picks it (sniffConfigFormat).
 */
export function parseConfigText(text: string, source: string, format: ConfigFormat | undefined = configFormatOf(source)): unknown {
  return CONFIG_READERS[format ?? sniffConfigFormat(text)](text, source);
}
