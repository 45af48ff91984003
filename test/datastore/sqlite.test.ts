// The datastore contract (contract.ts) run against the SQLite backend, opened through the
// server's factory on real files, one fresh file per store.
import { after } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DataStore } from '../../server/datastore/types.js';
import { openTestDataStore } from '../support/datastore.js';
import { datastoreContract } from './contract.js';

const root = mkdtempSync(join(tmpdir(), 'spindle-contract-'));
after(() => rmSync(root, { recursive: true, force: true }));
const files = new WeakMap<DataStore, string>();
let n = 0;

async function openAt(path: string): Promise<DataStore> {
  const store = await openTestDataStore(path);
  files.set(store, path);
  return store;
}

datastoreContract(
  'sqlite',
  () => openAt(join(root, `t${++n}`, 'datastore.sqlite3')),
  (store) => {
    const path = files.get(store);
    if (path === undefined) throw new Error('reopen: the store was not opened by this runner');
    return openAt(path);
  },
);
