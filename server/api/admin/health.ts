/**
 * grpc.health.v1.Health on the admin socket: SERVING for the whole server ('') and for each
 * admin service name; NOT_FOUND for unknown names (Check) or SERVICE_UNKNOWN (Watch). Watch
 * sends the status once and keeps the stream open until the client goes away.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { HealthCheckResponse_ServingStatus, type HealthServer } from '../../../proto/gen/grpc/health/v1/health.js';

export function createHealthService(serviceNames: readonly string[]): HealthServer {
  const known = new Set(['', ...serviceNames]);
  return {
    check(call, callback) {
      if (!known.has(call.request.service)) {
        callback({ code: GrpcStatus.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
        return;
      }
      callback(null, { status: HealthCheckResponse_ServingStatus.SERVING });
    },
    watch(call) {
      const status = known.has(call.request.service)
        ? HealthCheckResponse_ServingStatus.SERVING
        : HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN;
      call.write({ status });
      // Nothing changes while the server runs; the stream ends when the client cancels or the
      // server shuts down.
      call.on('cancelled', () => call.end());
    },
  };
}
