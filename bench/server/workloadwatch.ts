/**
 * A workload's open FetchX509SVID stream on an agent's Workload API socket, remembering when
 * each SPIFFE ID was first seen on it (performance.now() of the response that first carried it).
 */
import { credentials, Metadata, type ClientReadableStream } from '@grpc/grpc-js';
import { SpiffeWorkloadAPIClient, type X509SVIDResponse } from '../../proto/gen/workload/workload.js';

export interface WorkloadWatch {
  /** When each SPIFFE ID was first seen on the stream. */
  firstSeen: ReadonlyMap<string, number>;
  /** Resolves once every ID in `ids` has been seen; rejects after `timeoutMs`. */
  delivered(ids: readonly string[], timeoutMs: number): Promise<void>;
  close(): void;
}

export function watchWorkload(socketPath: string): WorkloadWatch {
  const firstSeen = new Map<string, number>();
  let waiter: { ids: Set<string>; done: () => void } | undefined;
  const check = (): void => {
    if (!waiter) return;
    for (const id of waiter.ids) if (!firstSeen.has(id)) return;
    const w = waiter;
    waiter = undefined;
    w.done();
  };
  const wl = new SpiffeWorkloadAPIClient(`unix:${socketPath}`, credentials.createInsecure(), { 'grpc.max_receive_message_length': 256 * 1024 * 1024 });
  const md = new Metadata();
  md.set('workload.spiffe.io', 'true');
  const stream = wl.fetchX509Svid({}, md) as ClientReadableStream<X509SVIDResponse>;
  let streamError: Error | undefined;
  stream.on('data', (resp: X509SVIDResponse) => {
    const t = performance.now();
    for (const s of resp.svids) if (!firstSeen.has(s.spiffeId)) firstSeen.set(s.spiffeId, t);
    check();
  });
  stream.on('error', (err: Error) => {
    streamError = err;
  });
  return {
    firstSeen,
    delivered: (ids, timeoutMs) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiter = undefined;
          const missing = ids.filter((id) => !firstSeen.has(id)).length;
          reject(new Error(`${missing} of ${ids.length} entries not delivered to the workload stream in ${timeoutMs} ms${streamError ? ` (stream error: ${streamError.message})` : ''}`));
        }, timeoutMs);
        waiter = {
          ids: new Set(ids),
          done: () => {
            clearTimeout(timer);
            resolve();
          },
        };
        check();
      }),
    close() {
      stream.cancel();
      wl.close();
    },
  };
}
