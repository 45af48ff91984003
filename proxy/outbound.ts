/**
 * Outbound listeners: a local process connects in plain TCP on loopback; the proxy opens mTLS to
 * `connect` with our current X509-SVID as client certificate (the SDK's mtlsClientOptions) and
 * requires the target to present an X509-SVID of its trust domain whose ID matches `expect`.
 * Nothing the local process sent reaches the network before the target passed those checks; a
 * refused target closes the local connection and is logged with the reason.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { mtlsClientOptions, peerIdOf } from '../spiffe/sdk/tlsconfig.js';
import { authorizePatterns } from './allowlist.js';
import type { ListenerConfig } from './config.js';
import type { ListenerDeps, RunningListener } from './inbound.js';
import { relay } from './relay.js';

export async function startOutbound(l: ListenerConfig, deps: ListenerDeps): Promise<RunningListener> {
  const { source, metrics, access } = deps;
  const target = l.connect!;
  const clientOpts = mtlsClientOptions(source, source, authorizePatterns(l.expect!));
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
    const own = (): string | undefined => {
      try {
        return source.getX509Svid().id;
      } catch {
        return undefined;
      }
    };
    const remote = `${c.remoteAddress ?? '?'}:${c.remotePort ?? '?'}`;
    let up: tls.TLSSocket;
    try {
      // Spread per connection: key, cert and ca are getters reading the current SVID and bundles.
      up = tls.connect({ ...clientOpts, host: target.host, port: target.port, ...(net.isIP(target.host) ? {} : { servername: target.host }) });
    } catch (err) {
      c.destroy();
      deps.log.warn({ listener: l.name, err: (err as Error).message }, 'cannot start the TLS connection');
      return;
    }
    sockets.add(up);
    up.once('close', () => sockets.delete(up));
    const timer = setTimeout(() => up.destroy(Object.assign(new Error(`no TLS handshake with ${target.host}:${target.port} within ${l.handshakeTimeoutMs} ms`), { reason: 'timeout' })), l.handshakeTimeoutMs);
    const refuse = (err: Error & { reason?: string; code?: string }): void => {
      clearTimeout(timer);
      const reason = err.reason ?? err.code ?? 'tls';
      metrics.handshakeErrors.inc({ listener: l.name, reason });
      metrics.connections.inc({ listener: l.name, source: 'local', decision: 'deny' });
      metrics.refusals.inc({ listener: l.name, source: 'local', rule: 'expect' });
      c.destroy();
      up.destroy();
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
    up.once('error', refuse);
    up.once('secureConnect', () => {
      clearTimeout(timer);
      up.off('error', refuse);
      let dest: string;
      try {
        dest = peerIdOf(up);
      } catch (err) {
        refuse(err as Error);
        return;
      }
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
    });
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
