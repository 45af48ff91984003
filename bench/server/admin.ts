/**
 * The admin API as the benchmarks use it: gRPC on the server's Unix socket (what the CLI
 * uses), promisified, without per-call CLI process spawning.
 */
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { AgentServiceClient, BundleServiceClient, EntryServiceClient, type BatchCreateEntryResponse } from '../../proto/gen/spindle/admin/v1/admin.js';
import { Entry } from '../../proto/gen/spindle/types/v1/types.js';
import { parseBundle } from '../../spiffe/bundle.js';
import { parseTrustDomain } from '../../spiffe/id.js';

const DEADLINE_MS = 120_000;
const opts = (): { deadline: number } => ({ deadline: Date.now() + DEADLINE_MS });

export interface BenchEntry {
  spiffeId: string;
  parentId: string;
  selectors: Array<{ type: string; value: string }>;
  x509SvidTtl?: number;
}

export function toProtoEntry(e: BenchEntry): Entry {
  // Every other field at its default (as an entry that leaves it out).
  return Entry.fromPartial({ spiffeId: e.spiffeId, parentId: e.parentId, selectors: e.selectors, x509SvidTtl: e.x509SvidTtl ?? 0 });
}

export class BenchAdmin {
  readonly entry: EntryServiceClient;
  readonly agent: AgentServiceClient;
  readonly bundle: BundleServiceClient;

  constructor(socketPath: string) {
    const target = `unix:${socketPath}`;
    this.entry = new EntryServiceClient(target, credentials.createInsecure());
    this.agent = new AgentServiceClient(target, credentials.createInsecure());
    this.bundle = new BundleServiceClient(target, credentials.createInsecure());
  }

  /** BatchCreateEntry; resolves with the created entry IDs, throws if any item failed. */
  createEntries(entries: BenchEntry[]): Promise<string[]> {
    return new Promise((resolve, reject) => {
      this.entry.batchCreateEntry({ entries: entries.map(toProtoEntry) }, new Metadata(), opts(), (err: ServiceError | null, res: BatchCreateEntryResponse) => {
        if (err) return reject(err);
        const ids: string[] = [];
        for (const r of res.results) {
          if (r.status?.code !== 0 || !r.entry) return reject(new Error(`entry create failed: ${r.status?.code} ${r.status?.message}`));
          ids.push(r.entry.id);
        }
        resolve(ids);
      });
    });
  }

  joinToken(ttlSeconds = 3600): Promise<string> {
    return new Promise((resolve, reject) => {
      this.agent.createJoinToken({ ttl: ttlSeconds, agentAliasSpiffeId: '' }, new Metadata(), opts(), (err, res) => (err ? reject(err) : resolve(res.value)));
    });
  }

  /** The server's X.509 authorities (DER). */
  x509Authorities(trustDomain: string): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      this.bundle.getBundle({}, new Metadata(), opts(), (err, res) => {
        if (err) return reject(err);
        try {
          resolve(parseBundle(parseTrustDomain(trustDomain), res.document).x509Authorities());
        } catch (e) {
          reject(e as Error);
        }
      });
    });
  }

  close(): void {
    this.entry.close();
    this.agent.close();
    this.bundle.close();
  }
}
