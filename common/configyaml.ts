/**
 * The YAML reader of config files: text to a plain value (duplicate keys are errors, at most 100
 * alias expansions), with syntax errors reported as `config: <source>:<line>:<col>: invalid
 * YAML: <what>`. An empty document is `{}`.
 */
import { parseDocument } from 'yaml';
import { ConfigError } from './configmessages.js';

/** Parses YAML config text; throws `ConfigError` naming `source` and each error's position. */
export function parseYamlConfig(text: string, source: string): unknown {
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => {
        const at = e.linePos?.[0];
        const where = at ? `${source}:${at.line}:${at.col}` : source;
        // prettyErrors appends " at line L, column C:" and a code excerpt; the position is above.
        const message = (e.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
        return `config: ${where}: invalid YAML: ${message}`;
      }),
    );
  }
  const value = doc.toJS({ maxAliasCount: 100 }) as unknown;
  return value ?? {};
}
