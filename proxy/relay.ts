/**
 * Byte relay between two sockets (TCP listeners, outbound listeners): both directions piped with
 * backpressure, half-close passed on (one side's end ends the other's writable side), counted,
 * and torn down together when either side errors or both have closed. The idle timeout runs on
 * the caller's socket, where reads and writes both count as activity.
 */
import type { Socket } from 'node:net';

export interface RelayResult {
  /** Bytes read from the caller (forwarded to the target). */
  bytesIn: number;
  /** Bytes read from the target (forwarded to the caller). */
  bytesOut: number;
  /** Why it ended early, if it did (`idle timeout`, `upstream: ECONNREFUSED`, ...). */
  error?: string;
}

export function relay(caller: Socket, target: Socket, idleTimeoutMs: number, done: (r: RelayResult) => void): void {
  const r: RelayResult = { bytesIn: 0, bytesOut: 0 };
  let closed = 0;
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    done(r);
  };
  const teardown = (why: string | undefined): void => {
    if (why !== undefined && r.error === undefined) r.error = why;
    caller.destroy();
    target.destroy();
  };
  // Small writes go out at once (TCP_NODELAY, as Envoy and Go do): a relay must not add Nagle's delay.
  caller.setNoDelay(true);
  target.setNoDelay(true);
  caller.on('data', (d: Buffer) => (r.bytesIn += d.length));
  target.on('data', (d: Buffer) => (r.bytesOut += d.length));
  caller.pipe(target);
  target.pipe(caller);
  caller.on('error', (err: NodeJS.ErrnoException) => teardown(`caller: ${err.code ?? err.message}`));
  target.on('error', (err: NodeJS.ErrnoException) => teardown(`upstream: ${err.code ?? err.message}`));
  caller.setTimeout(idleTimeoutMs, () => teardown('idle timeout'));
  // One side gone for good: the other is ended gracefully (what was piped to it is flushed
  // first); the idle timeout bounds a peer that never closes its half.
  const onClose = (other: Socket) => (): void => {
    if (++closed === 2) finish();
    else other.end();
  };
  caller.once('close', onClose(target));
  target.once('close', onClose(caller));
}
