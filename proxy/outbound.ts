/**
 * Outbound listeners: a local process connects in plain TCP on loopback; the proxy opens mTLS to
 * `connect` with our current X509-SVID as client certificate (the SDK's dialMtls) and
 * requires the target to present an X509-SVID of its trust domain whose ID matches `expect`.
 * Nothing the local process sent reaches the network before the target passed those checks; a
 * refused target closes the local connection and is logged with the reason.
 */
import * as net from 'node:net';
import type { AddressInfo } from 'node:net';
import { dialMtls, peerIdOf } from '../spiffe/sdk/tlsconfig.js';
import { authorizePatterns } from './allowlist.js';
import type { ListenerConfig } from './config.js';
import type { ListenerDeps, RunningListener } from './inbound.js';
import { ownIdReader } from './ownid.js';
import { relay } from './relay.js';

export async function startOutbound(l: ListenerConfig, deps: ListenerDeps): Promise<RunningListener> {
  const { source, metrics, access } = deps;
  const target = l.connect!;
  const authorizer = authorizePatterns(l.expect!);
  const own = ownIdReader(source);
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true });
  server.maxConnections = l.maxConnections;
  server.on('drop', () => metrics.overCapacity.inc({ listener: l.name }));
  server.on('connection', (c: net.Socket) => {
    const start = Date.now();
    sockets.add(c);
    metrics.activeConnections.inc({ listener: l.name });
    c.once('close', () => {
      sockets.delete(c);
      metrics.activeConnections.dec({ listener: l.name });
    });
    c.on('error', () => c.destroy());
    c.pause();
    const remote = `${c.remoteAddress ?? '?'}:${c.remotePort ?? '?'}`;
    const refuse = (err: Error & { reason?: string; code?: string }): void => {
      const reason = err.reason ?? err.code ?? 'tls';
      metrics.handshakeErrors.inc({ listener: l.name, reason });
      metrics.connections.inc({ listener: l.name, source: 'local', decision: 'deny' });
      metrics.refusals.inc({ listener: l.name, source: 'local', rule: 'expect' });
      c.destroy();
      const o = own();
      access({
        kind: 'connection',
        listener: l.name,
        mode: 'outbound',
        ...(o === undefined ? {} : { own_id: o }),
        decision: 'deny',
        rule: 'expect',
        reason: `${reason}: ${err.message}`,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: Date.now() - start,
        remote,
      });
    };
    // The SDK's dial: our current SVID as client certificate, the target verified the SPIFFE way
    // and authorized before the socket is handed over (nothing of the client's is sent before).
    const abort = new AbortController();
    c.once('close', () => abort.abort(new Error('the local client went away')));
    dialMtls(target, source, source, authorizer, { timeoutMs: l.handshakeTimeoutMs, signal: abort.signal }).then(
      (up) => {
        if (c.destroyed) {
          up.destroy();
          return;
        }
        sockets.add(up);
        up.once('close', () => sockets.delete(up));
        const dest = peerIdOf(up);
        metrics.connections.inc({ listener: l.name, source: 'local', decision: 'allow' });
        c.resume();
        relay(c, up, l.idleTimeoutMs, (r) => {
          metrics.bytesReceived.inc({ listener: l.name, source: 'local' }, r.bytesIn);
          metrics.bytesSent.inc({ listener: l.name, source: 'local' }, r.bytesOut);
          metrics.connectionDuration.observe({ listener: l.name, source: 'local', decision: 'allow' }, (Date.now() - start) / 1000);
          const o = own();
          access({
            kind: 'connection',
            listener: l.name,
            mode: 'outbound',
            ...(o === undefined ? {} : { own_id: o }),
            destination_id: dest,
            decision: 'allow',
            rule: 'expect',
            reason: r.error === undefined ? `${dest} is expected` : `${dest} is expected; ${r.error}`,
            bytes_in: r.bytesIn,
            bytes_out: r.bytesOut,
            duration_ms: Date.now() - start,
            remote,
          });
        });
      },
      (err: Error) => {
        if (abort.signal.aborted) return; // the local client left first: nothing to refuse
        refuse(err);
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(l.listen.port, l.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  deps.log.info({ listener: l.name, mode: 'outbound', address: server.address(), connect: `${target.host}:${target.port}` }, 'listening');
  return {
    name: l.name,
    address: () => server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}
