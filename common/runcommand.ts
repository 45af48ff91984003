/**
 * What `spindle-server run` and `spindle-agent run` share: load the config (printing every
 * problem and exiting 1 when it is invalid), start the service, and stop it cleanly on SIGTERM
 * or SIGINT (exit 0 when everything closed, 1 otherwise).
 */
import { isConfigError } from './configfile.js';

export function failAndExit(err: unknown): never {
  if (isConfigError(err)) process.stderr.write(`${err.problems.join('\n')}\n`);
  else process.stderr.write(`Error: ${(err as Error).message}\n`);
  process.exit(1);
}

interface Service {
  logger: { info(obj: object, msg: string): void };
  stop(): Promise<void>;
}

export async function runService<C>(load: () => Promise<C>, start: (config: C) => Promise<Service>): Promise<void> {
  let service: Service;
  try {
    service = await start(await load());
  } catch (err) {
    failAndExit(err);
  }
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    service.logger.info({ signal }, 'shutting down');
    service.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

export async function validateConfig(load: () => Promise<unknown>): Promise<void> {
  try {
    await load();
  } catch (err) {
    failAndExit(err);
  }
  process.stdout.write('Configuration is valid.\n');
}
