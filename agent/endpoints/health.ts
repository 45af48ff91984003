/**
 * grpc.health.v1.Health on the Workload API socket: SERVING for the server as a whole ('') and
 * for `SpiffeWorkloadAPI` (plus any other service served there); NOT_FOUND (Check) or
 * SERVICE_UNKNOWN (Watch) for other names. No security header (health is not the Workload API).
 * Watch sends the status once and stays open until the client goes away. Watch streams have their
 * own per-process budget (`streams`, as large as the Workload API's), so a process that holds
 * its full budget of Workload API or SDS streams can still watch its health, and health watches
 * cannot starve those APIs either. Check and Watch are not rate limited: they cost no
 * attestation and must keep answering while a flooding process is being refused.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { HealthCheckResponse_ServingStatus, type HealthServer } from '../../proto/gen/grpc/health/v1/health.js';
import type { PeerOf } from './types.js';
import { LIMIT_CONFIG_KEYS, type StreamLimiter } from './limits.js';

export function createWorkloadHealthService(serviceNames: readonly string[], peerOf: PeerOf, streams: StreamLimiter): HealthServer {
  const known = new Set(['', ...serviceNames]);
  return {
    check(call, callback) {
      if (!known.has(call.request.service)) {
        callback({ code: GrpcStatus.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service.slice(0, 200))}` });
        return;
      }
      callback(null, { status: HealthCheckResponse_ServingStatus.SERVING });
    },
    watch(call) {
      const peer = peerOf(call);
      const release = peer === undefined ? undefined : streams.acquire(peer.processKey);
      if (release === undefined) {
        call.emit('error', {
          code: peer === undefined ? GrpcStatus.UNAVAILABLE : GrpcStatus.RESOURCE_EXHAUSTED,
          details: peer === undefined ? 'caller connection is not tracked (closed?)' : `too many open health Watch streams for this process (limit ${streams.max}, ${LIMIT_CONFIG_KEYS.maxStreamsPerPid})`,
        });
        return;
      }
      call.once('cancelled', release);
      call.once('close', release);
      const status = known.has(call.request.service) ? HealthCheckResponse_ServingStatus.SERVING : HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN;
      call.write({ status });
    },
  };
}
