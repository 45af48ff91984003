/**
 * PostgreSQL: attested nodes (agents), their selectors (node_selectors rows serve the filters, the
 * canonical selectors_key the reads), listed by SPIFFE ID with page tokens. Creating, updating and
 * deleting a node appends node_created / node_updated / node_deleted to the change feed.
 */
import { isSpiffeId, type SpiffeId } from '../../../spiffe/id.js';
import { checkInt, checkString, describe, normalizeNode } from '../checks.js';
import { checkNodeFilter } from '../filters.js';
import { decodeToken, pageOf, pageSize } from '../paging.js';
import { DataStoreError, type AttestedNode, type NodeFilter, type Page, type Paged, type ReadOptions, type Selector } from '../types.js';
import type { PostgresConnection, Queryable } from './connection.js';
import { selectorsFromKey, selectorsStorageKey } from './encoding.js';
import { nodeWhere } from './filters.js';

export type NodeRow = [
  spiffeId: string,
  attestationType: string,
  certSerial: string,
  certNotAfter: number,
  newCertSerial: string,
  newCertNotAfter: number,
  banned: boolean,
  canReattest: boolean,
  createdAt: number,
  updatedAt: number,
  selectors: string,
];
export const NODE_COLUMNS =
  'n.spiffe_id, n.attestation_type, n.cert_serial, n.cert_not_after, n.new_cert_serial, n.new_cert_not_after, ' +
  'n.banned, n.can_reattest, n.created_at, n.updated_at, n.selectors_key';

export function nodeFromRow(r: NodeRow): AttestedNode {
  const spiffeId = r[0];
  if (!isSpiffeId(spiffeId)) throw new DataStoreError('io', `postgres datastore: stored node ${describe(spiffeId)} has an invalid SPIFFE ID`);
  return {
    spiffeId,
    attestationType: r[1],
    certSerial: r[2],
    certNotAfter: r[3],
    newCertSerial: r[4],
    newCertNotAfter: r[5],
    selectors: selectorsFromKey(r[10]),
    banned: r[6],
    canReattest: r[7],
    createdAt: r[8],
    updatedAt: r[9],
  };
}

async function loadNode(q: Queryable, id: string): Promise<AttestedNode | undefined> {
  const [row] = await q.rows<NodeRow>(`SELECT ${NODE_COLUMNS} FROM attested_nodes n WHERE n.spiffe_id = $1`, [id]);
  return row === undefined ? undefined : nodeFromRow(row);
}

async function insertSelectors(q: Queryable, id: string, selectors: Selector[]): Promise<void> {
  if (selectors.length === 0) return;
  await q.exec('INSERT INTO node_selectors (spiffe_id, type, value) SELECT $1, t, v FROM unnest($2::text[], $3::text[]) AS x(t, v)', [
    id,
    selectors.map((s) => s.type),
    selectors.map((s) => s.value),
  ]);
}

export class PostgresNodes {
  constructor(private readonly c: PostgresConnection) {}

  async createAttestedNode(node: Omit<AttestedNode, 'createdAt' | 'updatedAt'>, now: number): Promise<AttestedNode> {
    const n = normalizeNode(node);
    checkInt(now, 'now');
    return this.c.write('create attested node', async (q, emit) => {
      if ((await q.rows('SELECT 1 FROM attested_nodes WHERE spiffe_id = $1', [n.spiffeId])).length > 0) {
        throw new DataStoreError('already_exists', `attested node ${describe(n.spiffeId)} already exists`);
      }
      await q.exec(
        'INSERT INTO attested_nodes (spiffe_id, attestation_type, cert_serial, cert_not_after, new_cert_serial, ' +
          'new_cert_not_after, selectors_key, selector_count, banned, can_reattest, created_at, updated_at) ' +
          'VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)',
        [n.spiffeId, n.attestationType, n.certSerial, n.certNotAfter, n.newCertSerial, n.newCertNotAfter, selectorsStorageKey(n.selectors), n.selectors.length, n.banned, n.canReattest, now, now],
      );
      await insertSelectors(q, n.spiffeId, n.selectors);
      await emit('node_created', n.spiffeId, now);
      return { ...n, createdAt: now, updatedAt: now };
    });
  }

  async getAttestedNode(id: SpiffeId): Promise<AttestedNode | undefined> {
    checkString(id, 'node id');
    return this.c.read('get attested node', (q) => loadNode(q, id));
  }

  async listAttestedNodes(filter?: NodeFilter, page?: Page, opts?: ReadOptions): Promise<Paged<AttestedNode>> {
    const w = nodeWhere(checkNodeFilter(filter));
    const after = decodeToken('n', page?.token);
    const size = pageSize(page);
    if (after !== undefined) w.clauses.push(`n.spiffe_id > ${w.p(after)}`);
    let sql = `SELECT ${NODE_COLUMNS} FROM attested_nodes n${w.sql()} ORDER BY n.spiffe_id`;
    if (size > 0) sql += ` LIMIT ${w.p(size + 1)}`;
    return this.c.read(
      'list attested nodes',
      async (q) => {
        const { items, nextToken } = pageOf('n', await q.rows<NodeRow>(sql, w.params), size, (r) => r[0]);
        return { items: items.map(nodeFromRow), nextToken };
      },
      { replica: opts?.mayLag === true },
    );
  }

  async countAttestedNodes(filter?: NodeFilter, opts?: ReadOptions): Promise<number> {
    const w = nodeWhere(checkNodeFilter(filter));
    return this.c.read('count attested nodes', async (q) => (await q.rows<[number]>(`SELECT count(*) FROM attested_nodes n${w.sql()}`, w.params))[0]?.[0] ?? 0, {
      replica: opts?.mayLag === true,
    });
  }

  async updateAttestedNode(node: AttestedNode, now: number): Promise<AttestedNode> {
    const n = normalizeNode(node);
    checkInt(now, 'now');
    return this.c.write('update attested node', async (q, emit) => {
      const changed = await q.exec(
        'UPDATE attested_nodes SET cert_serial = $1, cert_not_after = $2, new_cert_serial = $3, new_cert_not_after = $4, ' +
          'selectors_key = $5, selector_count = $6, banned = $7, updated_at = $8 WHERE spiffe_id = $9',
        [n.certSerial, n.certNotAfter, n.newCertSerial, n.newCertNotAfter, selectorsStorageKey(n.selectors), n.selectors.length, n.banned, now, n.spiffeId],
      );
      if (changed === 0) throw new DataStoreError('not_found', `attested node ${describe(n.spiffeId)} not found`);
      await q.exec('DELETE FROM node_selectors WHERE spiffe_id = $1', [n.spiffeId]);
      await insertSelectors(q, n.spiffeId, n.selectors);
      await emit('node_updated', n.spiffeId, now);
      const updated = await loadNode(q, n.spiffeId);
      if (updated === undefined) throw new Error(`node ${n.spiffeId} vanished during its update`);
      return updated;
    });
  }

  async deleteAttestedNode(id: SpiffeId, now: number): Promise<AttestedNode | undefined> {
    checkString(id, 'node id');
    checkInt(now, 'now');
    return this.c.write('delete attested node', async (q, emit) => {
      const node = await loadNode(q, id);
      if (node === undefined) return undefined;
      await q.exec('DELETE FROM attested_nodes WHERE spiffe_id = $1', [id]);
      await emit('node_deleted', id, now);
      return node;
    });
  }
}
