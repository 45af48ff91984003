/**
 * SQLite: attested nodes (agents), their selectors (node_selectors rows serve the filters, the
 * canonical selectors_key the reads), listed by SPIFFE ID with page tokens. Creating, updating and
 * deleting a node appends node_created / node_updated / node_deleted to the change feed.
 */
import { isSpiffeId, type SpiffeId } from '../../../spiffe/id.js';
import { checkInt, checkString, describe, normalizeNode } from '../checks.js';
import { checkNodeFilter } from '../filters.js';
import { decodeToken, pageOf, pageSize } from '../paging.js';
import { DataStoreError, type AttestedNode, type NodeFilter, type Page, type Paged } from '../types.js';
import type { SqliteConnection } from './connection.js';
import { selectorsFromKey, selectorsStorageKey } from './encoding.js';
import { nodeWhere, whereSql } from './filters.js';

type NodeRow = [
  spiffeId: string,
  attestationType: string,
  certSerial: string,
  certNotAfter: number,
  newCertSerial: string,
  newCertNotAfter: number,
  banned: number,
  canReattest: number,
  createdAt: number,
  updatedAt: number,
  /** selectors_key: JSON [[type, value], ...]. */
  selectors: string,
];
const NODE_COLUMNS =
  'n.spiffe_id, n.attestation_type, n.cert_serial, n.cert_not_after, n.new_cert_serial, n.new_cert_not_after, ' +
  'n.banned, n.can_reattest, n.created_at, n.updated_at, n.selectors_key';

function prepare(c: SqliteConnection) {
  return {
    nodeById: c.raw<NodeRow>(`SELECT ${NODE_COLUMNS} FROM attested_nodes n WHERE n.spiffe_id = ?`),
    allNodes: c.raw<NodeRow>(`SELECT ${NODE_COLUMNS} FROM attested_nodes n ORDER BY n.spiffe_id`),
    nodeExists: c.pluck<number>('SELECT 1 FROM attested_nodes WHERE spiffe_id = ?'),
    insertNode: c.run(
      'INSERT INTO attested_nodes (spiffe_id, attestation_type, cert_serial, cert_not_after, new_cert_serial, ' +
        'new_cert_not_after, selectors_key, selector_count, banned, can_reattest, created_at, updated_at) ' +
        'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    updateNode: c.run(
      'UPDATE attested_nodes SET cert_serial = ?, cert_not_after = ?, new_cert_serial = ?, new_cert_not_after = ?, ' +
        'selectors_key = ?, selector_count = ?, banned = ?, updated_at = ? WHERE spiffe_id = ?',
    ),
    deleteNode: c.run('DELETE FROM attested_nodes WHERE spiffe_id = ?'),
    insertNodeSelector: c.run('INSERT INTO node_selectors (spiffe_id, type, value) VALUES (?, ?, ?)'),
    deleteNodeSelectors: c.run('DELETE FROM node_selectors WHERE spiffe_id = ?'),
  };
}

export class SqliteNodes {
  private readonly s;

  constructor(private readonly c: SqliteConnection) {
    this.s = prepare(c);
  }

  private nodeFromRow(r: NodeRow): AttestedNode {
    const spiffeId = r[0];
    if (!isSpiffeId(spiffeId)) throw new DataStoreError('io', `sqlite datastore: stored node ${describe(spiffeId)} has an invalid SPIFFE ID`);
    return {
      spiffeId,
      attestationType: r[1],
      certSerial: r[2],
      certNotAfter: r[3],
      newCertSerial: r[4],
      newCertNotAfter: r[5],
      selectors: selectorsFromKey(r[10]),
      banned: r[6] === 1,
      canReattest: r[7] === 1,
      createdAt: r[8],
      updatedAt: r[9],
    };
  }

  private loadNode(id: string): AttestedNode | undefined {
    const row = this.s.nodeById.get(id);
    return row === undefined ? undefined : this.nodeFromRow(row);
  }

  /** Every node by SPIFFE ID, read inside the caller's read (one snapshot: the caller's). */
  loadAll(): AttestedNode[] {
    return this.s.allNodes.all().map((r) => this.nodeFromRow(r));
  }

  async createAttestedNode(node: Omit<AttestedNode, 'createdAt' | 'updatedAt'>, now: number): Promise<AttestedNode> {
    const n = normalizeNode(node);
    checkInt(now, 'now');
    return this.c.write('create attested node', (emit) => {
      if (this.s.nodeExists.get(n.spiffeId) !== undefined) {
        throw new DataStoreError('already_exists', `attested node ${describe(n.spiffeId)} already exists`);
      }
      this.s.insertNode.run(
        n.spiffeId,
        n.attestationType,
        n.certSerial,
        n.certNotAfter,
        n.newCertSerial,
        n.newCertNotAfter,
        selectorsStorageKey(n.selectors),
        n.selectors.length,
        n.banned ? 1 : 0,
        n.canReattest ? 1 : 0,
        now,
        now,
      );
      for (const s of n.selectors) this.s.insertNodeSelector.run(n.spiffeId, s.type, s.value);
      emit('node_created', n.spiffeId, now);
      return { ...n, createdAt: now, updatedAt: now };
    });
  }

  async getAttestedNode(id: SpiffeId): Promise<AttestedNode | undefined> {
    checkString(id, 'node id');
    return this.c.read('get attested node', () => this.loadNode(id));
  }

  async listAttestedNodes(filter?: NodeFilter, page?: Page): Promise<Paged<AttestedNode>> {
    const w = nodeWhere(checkNodeFilter(filter));
    const after = decodeToken('n', page?.token);
    const size = pageSize(page);
    const clauses = [...w.clauses];
    const params: Array<string | number> = [...w.params];
    if (after !== undefined) {
      clauses.push('n.spiffe_id > ?');
      params.push(after);
    }
    let sql = `SELECT ${NODE_COLUMNS} FROM attested_nodes n${whereSql(clauses)} ORDER BY n.spiffe_id`;
    if (size > 0) {
      sql += ' LIMIT ?';
      params.push(size + 1);
    }
    return this.c.read('list attested nodes', () => {
      const { items, nextToken } = pageOf('n', this.c.cached<NodeRow>(sql).all(...params), size, (r) => r[0]);
      return { items: items.map((r) => this.nodeFromRow(r)), nextToken };
    });
  }

  async countAttestedNodes(filter?: NodeFilter): Promise<number> {
    const w = nodeWhere(checkNodeFilter(filter));
    const sql = `SELECT count(*) FROM attested_nodes n${whereSql(w.clauses)}`;
    return this.c.read('count attested nodes', () => this.c.cached<[number]>(sql).get(...w.params)?.[0] ?? 0);
  }

  async updateAttestedNode(node: AttestedNode, now: number): Promise<AttestedNode> {
    const n = normalizeNode(node);
    checkInt(now, 'now');
    return this.c.write('update attested node', (emit) => {
      const changed = this.s.updateNode.run(
        n.certSerial,
        n.certNotAfter,
        n.newCertSerial,
        n.newCertNotAfter,
        selectorsStorageKey(n.selectors),
        n.selectors.length,
        n.banned ? 1 : 0,
        now,
        n.spiffeId,
      ).changes;
      if (changed === 0) throw new DataStoreError('not_found', `attested node ${describe(n.spiffeId)} not found`);
      this.s.deleteNodeSelectors.run(n.spiffeId);
      for (const s of n.selectors) this.s.insertNodeSelector.run(n.spiffeId, s.type, s.value);
      emit('node_updated', n.spiffeId, now);
      const updated = this.loadNode(n.spiffeId);
      if (updated === undefined) throw new Error(`node ${n.spiffeId} vanished during its update`);
      return updated;
    });
  }

  async deleteAttestedNode(id: SpiffeId, now: number): Promise<AttestedNode | undefined> {
    checkString(id, 'node id');
    checkInt(now, 'now');
    return this.c.write('delete attested node', (emit) => {
      const node = this.loadNode(id);
      if (node === undefined) return undefined;
      this.s.deleteNode.run(id);
      emit('node_deleted', id, now);
      return node;
    });
  }
}
