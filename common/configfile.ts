/**
 * Config files and their validation, shared by spindle-server and spindle-agent.
 *
 * Files have SPIRE's structure (sections, key names, plugin blocks) written as HCL (SPIRE's own
 * files load unchanged), YAML or JSON. Loading gives a raw `unknown`; a `ConfigReader` then
 * walks it with typed getters and reports every problem at once. This module reads the file; the parts live beside
 * it and are re-exported here:
 *   configformat.ts   text -> plain object: format by extension or content, one reader per format
 *                     (configyaml.ts, configjson.ts, confighcl.ts)
 *   configenv.ts      `$VAR` / `${VAR}` expansion of the text (SPIRE's -expandEnv)
 *   configreader.ts   ConfigReader: the key-tracking walker and its contract
 *   configplugins.ts  plugin blocks under `plugins`
 *   configmessages.ts ConfigError, how values are shown, unknown-key suggestions
 * Nothing here reads `process.env`: `expandEnv` takes the environment as an argument.
 */
import { readFileSync } from 'node:fs';
import { expandEnv } from './configenv.js';
import { parseConfigText } from './configformat.js';
import { ConfigError } from './configmessages.js';

export { expandEnv } from './configenv.js';
export { configFormatOf, parseConfigText, type ConfigFormat } from './configformat.js';
export { ConfigError, closestKey, describeValue, isConfigError } from './configmessages.js';
export { ConfigReader, isPlainMap, type DurationOptions, type IntOptions } from './configreader.js';
export { pluginSections, type PluginSection } from './configplugins.js';

export interface LoadConfigOptions {
  /** When given, `$VAR` / `${VAR}` in the file text are expanded from it before parsing. */
  env?: Readonly<Record<string, string | undefined>>;
}

/**
 * Reads and parses a config file: `.yaml`/`.yml` as YAML, `.json` as JSON, `.hcl` as HCL,
 * anything else (`.conf`, no extension) by its first line: JSON when it starts with `{` or `[`
 * (so its errors are JSON errors), HCL when it is an HCL attribute or block (`server {`), else
 * YAML (see sniffConfigFormat). Throws `ConfigError` naming the path, with line and column for syntax
 * errors. An empty file is `{}`. With `options.env`, the text is run through `expandEnv` first.
 */
export function loadConfigFile(path: string, options: LoadConfigOptions = {}): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a directory' : String((err as Error).message);
    throw new ConfigError([`config: cannot read config file ${path}: ${why}`], { cause: err });
  }
  if (options.env !== undefined) text = expandEnv(text, options.env);
  return parseConfigText(text, path);
}
