/**
 * PostgreSQL: the DataStore's connection_string (and ro_connection_string), in either of libpq's
 * two forms: a URI (`postgresql://user@host:5432/db?sslmode=verify-full`) or keyword/value pairs
 * (`host=/run/postgresql dbname=spire user=spire sslmode=disable`, values single-quoted when they
 * hold spaces, `\'` and `\\` escaped inside quotes). Both are turned into one URI, which
 * node-postgres parses (pg-connection-string: it reads sslmode, sslrootcert, sslcert, sslkey,
 * application_name, host for a Unix socket directory, ...). pg-connection-string only parses
 * URIs, hence the keyword/value parser here. Errors are DataStoreError('invalid') naming the
 * key (the password is never echoed: not even where a value is quoted back, connectionStringSecrets).
 */
import { parse as parseUri } from 'pg-connection-string';
import { scrubSecrets } from '../../../common/strings.js';
import { DataStoreError } from '../types.js';

/** Keywords accepted in the keyword/value form: those node-postgres honours. */
const KEYWORDS = new Set([
  'host',
  'port',
  'dbname',
  'user',
  'password',
  'sslmode',
  'sslrootcert',
  'sslcert',
  'sslkey',
  'connect_timeout',
  'application_name',
  'options',
  'keepalives',
]);

const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'];

function bad(key: string, message: string): DataStoreError {
  return new DataStoreError('invalid', `DataStore "sql" ${key}: ${message}`);
}

/** Splits libpq keyword/value text into pairs; throws naming the position of a syntax error. */
export function parseKeywordValue(text: string, key = 'connection_string'): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  const n = text.length;
  const ws = (c: string | undefined): boolean => c === ' ' || c === '\t' || c === '\n' || c === '\r';
  for (;;) {
    while (i < n && ws(text[i])) i++;
    if (i >= n) break;
    const start = i;
    while (i < n && text[i] !== '=' && !ws(text[i])) i++;
    const keyword = text.slice(start, i);
    while (i < n && ws(text[i])) i++;
    if (text[i] !== '=') throw bad(key, `missing "=" after ${JSON.stringify(keyword)} at offset ${start} (expected keyword=value pairs or a postgresql:// URI)`);
    i++;
    while (i < n && ws(text[i])) i++;
    let value = '';
    if (text[i] === "'") {
      i++;
      let closed = false;
      while (i < n) {
        const c = text[i]!;
        if (c === '\\' && i + 1 < n) {
          value += text[i + 1];
          i += 2;
        } else if (c === "'") {
          closed = true;
          i++;
          break;
        } else {
          value += c;
          i++;
        }
      }
      if (!closed) throw bad(key, `unterminated quoted value for ${JSON.stringify(keyword)}`);
    } else {
      while (i < n && !ws(text[i])) {
        if (text[i] === '\\' && i + 1 < n) i++;
        value += text[i];
        i++;
      }
    }
    if (!KEYWORDS.has(keyword)) {
      throw bad(key, `unknown keyword ${JSON.stringify(keyword)}; supported: ${[...KEYWORDS].join(', ')}`);
    }
    if (out.has(keyword)) throw bad(key, `keyword ${JSON.stringify(keyword)} is given twice`);
    out.set(keyword, value);
  }
  if (out.size === 0) throw bad(key, 'is empty; expected keyword=value pairs or a postgresql:// URI');
  return out;
}

const URI_SCHEME = /^postgres(ql)?:\/\//i;

/**
 * The connection string as a URI node-postgres parses, after checking it: a URI must parse and a
 * keyword/value string must use known keywords; sslmode and port must be valid.
 */
export function normalizeConnectionString(text: string, key = 'connection_string'): string {
  try {
    return checkedUri(text, key);
  } catch (err) {
    // A message may quote a value back (sslmode "..."): never the password, even reused there.
    if (err instanceof DataStoreError) throw new DataStoreError(err.reason, scrubSecrets(err.message, connectionStringSecrets(text)), { cause: err.cause });
    throw err;
  }
}

function checkedUri(text: string, key: string): string {
  if (typeof text !== 'string' || text.trim() === '') throw bad(key, 'is empty; expected keyword=value pairs or a postgresql:// URI');
  let uri: string;
  if (URI_SCHEME.test(text)) {
    uri = text;
  } else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw bad(key, `URI scheme ${JSON.stringify(text.slice(0, text.indexOf(':')))} is not postgresql:// or postgres://`);
  } else {
    const kv = parseKeywordValue(text, key);
    const enc = encodeURIComponent;
    const user = kv.get('user');
    const password = kv.get('password');
    // A password without a user stays (libpq then uses the default user name): `:password@`.
    const auth = user === undefined && password === undefined ? '' : `${enc(user ?? '')}${password === undefined ? '' : `:${enc(password)}`}@`;
    const query = new URLSearchParams();
    for (const [k, v] of kv) if (!['user', 'password', 'dbname'].includes(k)) query.set(k, v);
    const qs = query.toString();
    uri = `postgresql://${auth}/${enc(kv.get('dbname') ?? '')}${qs === '' ? '' : `?${qs}`}`;
  }
  let parsed: ReturnType<typeof parseUri>;
  try {
    parsed = parseUri(uri);
    // pg-connection-string is lenient; the WHATWG parser catches malformed URIs.
    if (URI_SCHEME.test(text)) new URL(text);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (typeof e?.code === 'string' && typeof e.path === 'string') {
      // pg-connection-string reads sslrootcert / sslcert / sslkey while parsing.
      throw bad(key, `cannot read the file ${JSON.stringify(e.path)} it names (sslrootcert, sslcert or sslkey): ${e.code}`);
    }
    throw bad(key, `is not a valid PostgreSQL URI: ${err instanceof Error ? err.message : String(err)}`);
  }
  const sslmode = (parsed as { sslmode?: unknown }).sslmode;
  if (typeof sslmode === 'string' && !SSL_MODES.includes(sslmode)) {
    throw bad(key, `sslmode ${JSON.stringify(sslmode)} is not one of ${SSL_MODES.join(', ')}`);
  }
  if (parsed.port !== undefined && parsed.port !== null && parsed.port !== '' && !/^[0-9]{1,5}$/.test(String(parsed.port))) {
    throw bad(key, `port ${JSON.stringify(parsed.port)} is not a port number`);
  }
  return uri;
}

/**
 * The password of a connection string, as written and as it may appear decoded or
 * percent-encoded, found without parsing it fully (so even a malformed string gives up its
 * password): for scrubbing from text that is shown.
 */
export function connectionStringSecrets(text: string): string[] {
  const secrets = new Set<string>();
  const add = (v: string | undefined): void => {
    if (v === undefined || v === '') return;
    secrets.add(v);
    secrets.add(encodeURIComponent(v));
    try {
      secrets.add(decodeURIComponent(v));
    } catch {
      // Not percent-encoded text: the raw form is there already.
    }
  };
  if (typeof text !== 'string') return [];
  // The userinfo of a URI (user:password@), up to the last @ before the path.
  add(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*?:([^/?#]*)@[^@/?#]*(?:[/?#]|$)/i.exec(text)?.[1]);
  // password=... in keyword/value form (quoted or not), and ?password= in a URI's query.
  if (!URI_SCHEME.test(text)) {
    try {
      add(parseKeywordValue(text).get('password'));
    } catch {
      // Malformed: the pattern below still finds a password=... pair.
    }
  }
  for (const m of text.matchAll(/(?:^|[\s?&])password\s*=\s*(?:'((?:\\.|[^'\\])*)'|([^\s&]*))/gi)) add((m[1] ?? m[2])?.replace(/\\(.)/g, '$1'));
  return [...secrets].filter((v) => v !== '');
}

/**
 * What a connection string names, for messages: `host=... port=... dbname=... user=...` (the
 * parts that are set), never the password, and its `secrets` (connectionStringSecrets) so a
 * caller can scrub them from any text it prints. A malformed string throws as
 * normalizeConnectionString does.
 */
export function describeConnectionString(text: string, key = 'connection_string'): { description: string; secrets: string[] } {
  const secrets = connectionStringSecrets(text);
  const uri = normalizeConnectionString(text, key);
  const parsed = parseUri(uri);
  const parts: string[] = [];
  const add = (k: string, v: unknown): void => {
    if ((typeof v === 'string' && v !== '') || typeof v === 'number') parts.push(`${k}=${String(v)}`);
  };
  add('host', parsed.host);
  add('port', parsed.port);
  add('dbname', parsed.database);
  add('user', parsed.user);
  const password = parsed.password;
  const all = new Set(secrets);
  if (typeof password === 'string' && password !== '') {
    all.add(password);
    all.add(encodeURIComponent(password));
  }
  return { description: parts.length === 0 ? 'the default server' : parts.join(' '), secrets: [...all] };
}
