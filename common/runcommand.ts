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
  /**
   * Resolves when the service must exit by itself (spindle-agent evicted with no way to attest
   * again): it is stopped and the process exits with `exitCode`, printing `Error: <message>`
   * unless the message already went to stderr through the log.
   */
  exited?: Promise<{ exitCode: number; message: string; onStderr: boolean }>;
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
    // Exit as soon as everything closed (stop() drains in-flight calls itself); the log file is
    // flushed first, or process.exit would drop its last lines ("... stopped").
    // (logging.ts is imported here, not at the top: admin commands load this module too.)
    const exit = (code: number): Promise<never> =>
      import('./logging.js').then(({ flushLogger }) => flushLogger(service.logger)).then(() => process.exit(code), () => process.exit(code));
    service.stop().then(
      () => exit(0),
      () => exit(1),
    );
  };
  void service.exited?.then(({ exitCode, message, onStderr }) => {
    if (stopping) return;
    stopping = true;
    if (!onStderr) process.stderr.write(`Error: ${message}\n`);
    const exit = (): never => process.exit(exitCode);
    service.stop().then(exit, exit);
  });
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
