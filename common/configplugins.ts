/**
 * Plugin blocks of a config file's `plugins` section (SPIRE's `plugins { Kind "name" { ... } }`):
 * each plugin's name, path, `enabled` flag and its `plugin_data` as a reader of its own.
 */
import { describeValue } from './configmessages.js';
import { ConfigReader, isPlainMap, unwrapBlock } from './configreader.js';

export interface PluginSection {
  /** The plugin's name (`join_token`). */
  name: string;
  /** Dotted path of the plugin block (`plugins.NodeAttestor.join_token`). */
  path: string;
  /**
   * The plugin's `plugin_data` (empty when omitted), as a reader with ITS OWN problem list, so
   * the plugin validates it later: it reads its keys, then calls `data.throwIfInvalid()` (or
   * the caller `absorb`s it). Paths in its messages are full (`...join_token.plugin_data.x`).
   */
  data: ConfigReader;
  /** SPIRE's `enabled` (default true). */
  enabled: boolean;
}

/**
 * The plugins of one kind under a `plugins` section, in file order. Accepts SPIRE's shape as
 * YAML/JSON, `{ Kind: { name: { plugin_data: {...}, enabled } } }`, and the HCL-to-JSON list
 * shape `{ Kind: [ { name: {...} }, ... ] }`; the body and `plugin_data` may be omitted or
 * null. `plugin_cmd`/`plugin_checksum` (external plugins) and `plugin_data_file` are reported
 * as unsupported; a name given twice is a problem. Names are not checked here.
 */
export function pluginSections(plugins: ConfigReader, kind: string): PluginSection[] {
  const kindPath = plugins.keyPath(kind);
  const raw = plugins.raw(kind);
  if (raw === undefined) return [];
  const entries: Array<[string, unknown]> = [];
  if (Array.isArray(raw)) {
    raw.forEach((item, i) => {
      if (isPlainMap(item)) entries.push(...Object.entries(item));
      else plugins.problemLine(`config: ${kindPath}[${i}]: expected a map of plugin name to plugin settings, got ${describeValue(item)}`);
    });
  } else if (isPlainMap(raw)) {
    entries.push(...Object.entries(raw));
  } else {
    plugins.problem(kind, `expected a map of plugin name to plugin settings, got ${describeValue(raw)}`);
    return [];
  }

  const seen = new Set<string>();
  const out: PluginSection[] = [];
  for (const [name, body] of entries) {
    const path = `${kindPath}.${name}`;
    if (seen.has(name)) {
      plugins.problemLine(`config: ${path}: configured more than once`);
      continue;
    }
    seen.add(name);
    const block = plugins.nested(body, path);
    block.unsupported('plugin_cmd', 'external plugins are not supported; Spindle plugins are built in');
    block.unsupported('plugin_checksum', 'external plugins are not supported; Spindle plugins are built in');
    block.unsupported('plugin_data_file', 'is not supported yet; put the settings in plugin_data');
    const enabled = block.bool('enabled', true);
    const dataRaw = unwrapBlock(block.raw('plugin_data'));
    let data: ConfigReader;
    if (dataRaw === undefined || isPlainMap(dataRaw)) {
      data = new ConfigReader(dataRaw, `${path}.plugin_data`);
    } else {
      block.problem('plugin_data', `expected a map of plugin settings, got ${describeValue(dataRaw)}`);
      data = new ConfigReader(undefined, `${path}.plugin_data`);
    }
    out.push({ name, path, data, enabled });
  }
  return out;
}
