/**
 * `healthcheck [-socketPath P] [-shallow] [-verbose]`: SPIRE's `spire-agent healthcheck`.
 * Asks grpc.health.v1 Check (service "") on the Workload API socket; unless `-shallow`, also
 * opens FetchX509Bundles to prove the Workload API itself answers after attesting the caller (a
 * PERMISSION_DENIED answer counts as serving: this caller just has no identity). Every call
 * carries the Workload API security header and a 5 s deadline.
 * Prints "Agent is healthy." (stdout, exit 0) or "Agent is unhealthy: <why>" (stderr, exit 1);
 * `-verbose` narrates the steps and, on failure, the underlying error.
 */
import { credentials, Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import type { Command } from 'commander';
import { parseEndpointAddress, toGrpcTarget } from '../../spiffe/endpoint.js';
import { createWorkloadApiClient, isWorkloadApiError, SECURITY_HEADER } from '../../spiffe/workloadapi/index.js';
import { fromServiceError } from '../../spiffe/workloadapi/errors.js';
import {
  HealthCheckResponse_ServingStatus,
  HealthClient,
  healthCheckResponse_ServingStatusToJSON,
  type HealthCheckResponse,
} from '../../proto/gen/grpc/health/v1/health.js';
import { processStreams } from '../../common/output.js';
import { cliEnv, endpointAddressFor, socketOption } from './common.js';

export const HEALTHCHECK_TIMEOUT_MS = 5000;

interface HealthOptions {
  socketPath?: string;
  shallow?: boolean;
  verbose?: boolean;
}

function check(address: string): Promise<HealthCheckResponse> {
  const client = new HealthClient(toGrpcTarget(parseEndpointAddress(address)), credentials.createInsecure());
  const md = new Metadata();
  md.set(SECURITY_HEADER, 'true');
  return new Promise<HealthCheckResponse>((resolve, reject) => {
    client.check({ service: '' }, md, { deadline: Date.now() + HEALTHCHECK_TIMEOUT_MS }, (err: ServiceError | null, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res);
    });
  });
}

export function register(program: Command): void {
  program
    .command('healthcheck')
    .description('Determines agent health status')
    .addOption(socketOption())
    .option('--shallow', 'Perform a less stringent health check')
    .option('--verbose', 'Print verbose information')
    .action(async (o: HealthOptions) => {
      const io = processStreams;
      const verbose = (s: string): void => {
        if (o.verbose) io.out.write(s);
      };
      try {
        const address = endpointAddressFor(o.socketPath, cliEnv());
        verbose('Checking agent health...\n');
        let health: HealthCheckResponse;
        try {
          health = await check(address);
        } catch (err) {
          if (o.verbose) io.err.write(`Failed to check health: ${(err as Error).message}\n`);
          const why = fromServiceError('Check', address, err, HEALTHCHECK_TIMEOUT_MS).message.replace(/^Check:? /, '');
          throw new Error(`unable to determine health: ${why}`);
        }
        if (health.status !== HealthCheckResponse_ServingStatus.SERVING) {
          throw new Error(`agent returned status "${healthCheckResponse_ServingStatusToJSON(health.status)}"`);
        }
        if (!o.shallow) {
          verbose('Fetching X.509 bundles via the Workload API...\n');
          const client = createWorkloadApiClient({ address, timeoutMs: HEALTHCHECK_TIMEOUT_MS });
          try {
            await client.fetchX509Bundles();
            verbose('Successfully fetched X.509 bundles.\n');
          } catch (err) {
            if (!isWorkloadApiError(err, Status.PERMISSION_DENIED)) throw new Error(`the Workload API is not serving: ${(err as Error).message}`);
            verbose('The Workload API answered (this caller has no identity).\n');
          } finally {
            client.close();
          }
        }
        io.out.write('Agent is healthy.\n');
      } catch (err) {
        io.err.write(`Agent is unhealthy: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
