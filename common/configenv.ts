/**
 * Environment expansion in config file text (SPIRE's `-expandEnv`). Nothing here reads
 * `process.env`: the caller passes the environment.
 */

/**
 * SPIRE's `-expandEnv`: replaces `$NAME` and `${NAME}` (NAME = letter or `_`, then letters,
 * digits, `_`) with `env[NAME]`, or with "" when unset, as Go's os.ExpandEnv does. Unlike Go,
 * `$$` is a literal `$` (so a password can keep its dollar signs) and any other `$` not followed
 * by a name (`$1`, `${`, a trailing `$`) is left as it is.
 */
export function expandEnv(text: string, env: Readonly<Record<string, string | undefined>>): string {
  return text.replace(/\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_m, dollar?: string, braced?: string, bare?: string) => {
    if (dollar !== undefined) return '$';
    const name = braced ?? bare ?? '';
    return Object.hasOwn(env, name) ? (env[name] ?? '') : '';
  });
}
