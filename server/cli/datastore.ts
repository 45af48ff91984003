/**
 * `spindle-server datastore migrate -from <SQLite file> -to <PostgreSQL connection string> [-force]`:
 * moves a SQLite deployment's records into PostgreSQL. Not an admin command: it opens both
 * datastores itself (through the factory) and needs no running server; the server must NOT be
 * running on the source.
 *
 * Contract (docs/server.md "Moving from SQLite to PostgreSQL"):
 * - The source must exist and be a Spindle SQLite datastore of this version that passes its
 *   integrity check. It is opened read-only and never written (sqlite/connection.ts readOnly).
 * - The lock of the source file's directory (the data directory in the default layout,
 *   common/datadirlock.ts) is held for the whole run: a server running there makes the command
 *   fail naming its pid, and no server can start there meanwhile. A datastore file configured
 *   outside its data directory is beyond this check: the operator stops the server.
 * - A target holding any entry, agent, bundle, join token or CA journal is refused unless
 *   -force is given; with -force those records (and its change feed) are deleted first.
 * - Everything is written in one PostgreSQL transaction (types.ts RecordImporter); afterwards the
 *   target is read back and compared with what was read from the source, record for record.
 * - Messages name the target by host, port, database and user; the connection string's password
 *   is never printed (it is also scrubbed from any error text). Failures are one `Error:` line,
 *   exit code 1.
 */
import { Option, type Command } from 'commander';
import { statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { reportCommandError, requiredFlag } from '../../common/cli.js';
import { DataDirLockedError, LOCK_FILE_NAME, lockDataDir } from '../../common/datadirlock.js';
import { processStreams, type OutputStreams } from '../../common/output.js';
import { compareCodePoints, scrubSecrets } from '../../common/strings.js';
import type { DataStoreConfig } from '../config/config.js';
import { describeDataStore, openRecordSource, openRecordTarget } from '../datastore/factory.js';
import { describeCounts, isEmptyCounts, type DataStoreRecords, type RecordCounts } from '../datastore/types.js';
import { CliError } from './errors.js';

interface MigrateOptions {
  from?: string;
  to?: string;
  force?: boolean;
}

/** Canonical JSON of exported records (bigint sequences as decimal text), for comparing two exports. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString(10) : v));
}

/** The first record where two exports differ (in words), or undefined when they are equal. */
function firstDifference(a: DataStoreRecords, b: DataStoreRecords): string | undefined {
  const byId = <T>(items: T[], key: (x: T) => string): T[] => [...items].sort((x, y) => compareCodePoints(key(x), key(y)));
  const kinds: Array<[string, unknown[], unknown[], (x: never) => string]> = [
    ['entry', byId(a.entries, (e) => e.id), byId(b.entries, (e) => e.id), (e: { id: string }) => e.id],
    ['agent', a.nodes, b.nodes, (n: { spiffeId: string }) => n.spiffeId],
    ['join token', a.joinTokens, b.joinTokens, (t: { hash: string }) => `with hash ${t.hash.slice(0, 12)}...`],
    ['bundle', a.bundles, b.bundles, (x: { trustDomain: string }) => x.trustDomain],
    ['federation relationship', a.federationRelationships, b.federationRelationships, (x: { trustDomain: string }) => x.trustDomain],
  ];
  for (const [what, xs, ys, name] of kinds) {
    if (xs.length !== ys.length) return `${xs.length} ${what} records in the source but ${ys.length} in the target`;
    for (let i = 0; i < xs.length; i++) {
      if (canonical(xs[i]) !== canonical(ys[i])) return `${what} ${name(xs[i] as never)} differs`;
    }
  }
  if (canonical(a.caJournals) !== canonical(b.caJournals)) return 'the CA journals differ';
  return undefined;
}

function countsOf(r: DataStoreRecords): RecordCounts {
  return { entries: r.entries.length, nodes: r.nodes.length, joinTokens: r.joinTokens.length, bundles: r.bundles.length, caJournals: r.caJournals.length, federationRelationships: r.federationRelationships.length };
}

/** The migration itself; `cwd` resolves a relative -from. */
export async function migrateDatastore(o: MigrateOptions, io: OutputStreams, cwd: string): Promise<void> {
  if (o.from === undefined || o.from === '') {
    throw new CliError('-from is required: the path of the SQLite datastore file to copy (data_dir/datastore.sqlite3 by default)');
  }
  if (o.to === undefined || o.to === '') {
    throw new CliError('-to is required: the connection string of the PostgreSQL database to copy into (a postgresql:// URI or libpq keyword=value pairs)');
  }
  const targetConfig: DataStoreConfig = { name: 'sql', databaseType: 'postgres', connectionString: o.to, maxOpenConns: 2, maxIdleConns: 0 };
  let target: { description: string; secrets: string[] };
  try {
    target = await describeDataStore(targetConfig);
  } catch (err) {
    throw new CliError(`-to is not a valid PostgreSQL connection string: ${(err as Error).message.replace(/^DataStore "sql" connection_string: /, '')}`);
  }

  const source = resolve(cwd, o.from);
  let isFile: boolean;
  try {
    isFile = statSync(source).isFile();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(
      code === 'ENOENT' || code === 'ENOTDIR'
        ? `the source datastore ${source} (-from) does not exist; give the path of the SQLite datastore file (data_dir/datastore.sqlite3 by default)`
        : `cannot read the source datastore ${source} (-from): ${(err as Error).message}`,
    );
  }
  if (!isFile) throw new CliError(`the source datastore ${source} (-from) is not a file; give the path of the SQLite datastore file (data_dir/datastore.sqlite3 by default)`);

  try {
    // The server must not run on the source: hold its directory's lock for the whole run.
    const dir = dirname(source);
    let lock: { release(): void };
    try {
      lock = lockDataDir(dir, 'datastore directory', ({ path, pid }) =>
        io.err.write(`Warning: took over a stale lock ${path} (${pid === undefined ? 'it held no pid' : `its process ${pid} is gone`})\n`),
      );
    } catch (err) {
      if (err instanceof DataDirLockedError) {
        throw new CliError(
          `the source datastore's directory ${err.dir} is in use by ${err.pid === undefined ? 'another process' : `process ${err.pid}`} ` +
            `(a spindle-server running on it?): stop it before migrating. If no such process runs, delete ${resolve(dir, LOCK_FILE_NAME)}`,
        );
      }
      throw err;
    }
    try {
      await copy(source, o.force === true, targetConfig, target.description, io);
    } finally {
      lock.release();
    }
  } catch (err) {
    if (target.secrets.length === 0 || !(err instanceof Error)) throw err;
    throw new CliError(scrubSecrets(err.message, target.secrets));
  }
}

/** Reads the source, writes the target in one transaction, reads the target back and compares. */
async function copy(source: string, force: boolean, targetConfig: DataStoreConfig, targetName: string, io: OutputStreams): Promise<void> {
  let records: DataStoreRecords;
  const from = await openRecordSource({ name: 'sql', databaseType: 'sqlite3', connectionString: source });
  try {
    const problems = await from.checkIntegrity();
    if (problems !== '') {
      throw new CliError(`the source datastore ${source} fails its integrity check; repair it or restore a backup before migrating:\n${problems}`);
    }
    records = await from.exportRecords();
  } finally {
    await from.close();
  }

  let to: Awaited<ReturnType<typeof openRecordTarget>>;
  try {
    to = await openRecordTarget(targetConfig);
  } catch (err) {
    throw new CliError(`cannot open the target ${targetName} (-to): ${(err as Error).message}`);
  }
  try {
    const present = await to.countRecords();
    if (!isEmptyCounts(present) && !force) {
      throw new CliError(
        `the target ${targetName} is not empty: it holds ${describeCounts(present)}. Copying into it would mix two deployments; ` +
          'pass -force to delete what it holds (and its change feed) and replace it with the source',
      );
    }
    try {
      await to.importRecords(records, { replace: force });
    } catch (err) {
      throw new CliError(`copying into the target ${targetName} failed, nothing was written: ${(err as Error).message}`);
    }
    // Read back what was committed and compare it with the source, record for record.
    const counts = await to.countRecords();
    const expected = countsOf(records);
    const back = await to.exportRecords();
    const diff = canonical(counts) !== canonical(expected) ? `the target holds ${describeCounts(counts)}` : firstDifference(records, back);
    if (diff !== undefined) {
      throw new CliError(
        `the copy in the target ${targetName} does not match the source ${source}: ${diff}. Do not start servers on it; ` +
          'run the migration again with -force',
      );
    }
    if (!isEmptyCounts(present)) io.err.write(`Replaced what the target held before (-force): ${describeCounts(present)}\n`);
    io.out.write(`migrated ${describeCounts(counts)} from ${source} to ${targetName}\n`);
    io.out.write('The change feed was not copied: the new database starts its own, and agents fetch their entries afresh when they reconnect.\n');
  } finally {
    await to.close();
  }
}

export function register(program: Command): void {
  const datastore = program.command('datastore').description('Works on a datastore directly (the server must not be running on it)');
  datastore
    .command('migrate')
    .description('Copies a SQLite datastore (entries, agents, bundles, join tokens, CA journal) into an empty PostgreSQL database')
    .addOption(requiredFlag(new Option('--from <path>', 'Path of the SQLite datastore file to copy (opened read-only)')))
    .addOption(requiredFlag(new Option('--to <connection string>', 'PostgreSQL connection string (postgresql:// URI or libpq keyword=value pairs) of the database to copy into')))
    .addOption(new Option('--force', 'Delete what the target database already holds and replace it with the source'))
    .action(async (o: MigrateOptions) => {
      try {
        await migrateDatastore(o, processStreams, process.cwd());
      } catch (err) {
        reportCommandError(processStreams, err);
      }
    });
}
