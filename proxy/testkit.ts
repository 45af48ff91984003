/**
 * Test-only helpers for the proxy's in-process listener tests (no production module imports this).
 */
import { LISTENER_DEFAULTS, type ListenerConfig } from './config.js';

/** An `http: true` inbound listener named `api` on an ephemeral loopback port, forwarding to 127.0.0.1:`servicePort`, with short timeouts. */
export function httpInboundConfig(servicePort: number): ListenerConfig {
  return {
    name: 'api',
    mode: 'inbound',
    listen: { host: '127.0.0.1', port: 0 },
    forward: { kind: 'tcp', host: '127.0.0.1', port: servicePort },
    http: true,
    maxConnections: LISTENER_DEFAULTS.maxConnections,
    maxPendingHandshakes: LISTENER_DEFAULTS.maxPendingHandshakes,
    maxPendingPerAddress: LISTENER_DEFAULTS.maxPendingPerAddress,
    handshakeTimeoutMs: 5000,
    headerTimeoutMs: 5000,
    idleTimeoutMs: 30_000,
    where: 'test',
  };
}
