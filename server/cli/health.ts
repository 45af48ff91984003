/**
 * `healthcheck [-shallow] [-verbose]`: asks the admin socket's grpc.health.v1 service; without
 * `-shallow` also fetches the bundle (SPIRE's deeper check: the CA is serving). Prints
 * "Server is healthy." or, on stderr, "Server is unhealthy: <why>" with exit code 1.
 */
import type { Command } from 'commander';
import {
  HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
  healthCheckResponse_ServingStatusToJSON,
} from '../../proto/gen/grpc/health/v1/health.js';
import { parseOutputFormat, processStreams, writeJson } from '../../common/output.js';
import { reportCommandError } from '../../common/cli.js';
import { AdminClient } from './client.js';
import { addCommonOptions, type CommonOptions } from './common.js';

export const HEALTHCHECK_TIMEOUT_MS = 5000;

interface HealthOptions extends CommonOptions {
  shallow?: boolean;
  verbose?: boolean;
}

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('healthcheck')
      .description('Determines server health status')
      .option('--shallow', 'Perform a less stringent health check')
      .option('--verbose', 'Print verbose information'),
  ).action(async (o: HealthOptions) => {
    const io = processStreams;
    let format;
    try {
      format = parseOutputFormat(o.output);
    } catch (err) {
      reportCommandError(io, err);
      return;
    }
    const client = new AdminClient(o.socketPath, { timeoutMs: HEALTHCHECK_TIMEOUT_MS });
    const verbose = (s: string): void => {
      if (o.verbose) io.out.write(s);
    };
    try {
      verbose('Checking server health...\n');
      const health = await client.call(client.health.check, { service: '' });
      if (health.status !== HealthCheckResponse_ServingStatus.SERVING) {
        throw new Error(`the server reports ${healthCheckResponse_ServingStatusToJSON(health.status)}`);
      }
      if (!o.shallow) {
        verbose('Fetching bundle via Bundle API...\n');
        await client.call(client.bundle.getBundle, {});
        verbose('Successfully fetched bundle.\n');
      }
      if (format === 'json') writeJson(io.out, HealthCheckResponse.toJSON(health));
      else io.out.write('Server is healthy.\n');
    } catch (err) {
      io.err.write(`Server is unhealthy: ${(err as Error).message}\n`);
      process.exitCode = 1;
    } finally {
      client.close();
    }
  });
}
