/**
 * `api watch [-socketPath P]`: SPIRE's `spire-agent api watch`. Holds FetchX509SVID open and
 * prints every update as it arrives ("Received 1 svid after <time since the previous update>",
 * then the SVID block, federated CAs labelled by bare trust domain as SPIRE's watch does).
 * Stream failures are printed on stderr and the watch reconnects with backoff (the SDK's
 * watchX509Context); PERMISSION_DENIED, INVALID_ARGUMENT and UNIMPLEMENTED end it with
 * `Error: ...` and exit 1. SIGINT/SIGTERM end it cleanly with exit 0.
 */
import type { Command } from 'commander';
import { addApiOptions, apiAction, type ApiOptions } from './common.js';
import { printX509Svids, svidViews, watchLabel } from './printer.js';

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

export function register(api: Command): void {
  addApiOptions(api.command('watch').description("Attaches to the Workload API and prints updates as they're received"), {
    timeout: false,
    output: false,
  }).action(
    apiAction<ApiOptions>(async (_o, ctx) => {
      let last = process.hrtime.bigint();
      const watch = ctx.client().watchX509Context(
        (x509) => {
          const now = process.hrtime.bigint();
          printX509Svids(ctx.io.out, svidViews(x509), now - last, watchLabel);
          last = now;
        },
        (err, info) => {
          if (!info.final) ctx.io.err.write(`${err.message}${info.retryInMs === undefined ? '' : ` (retrying in ${seconds(info.retryInMs)})`}\n`);
        },
      );
      const stop = (): void => watch.close();
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      try {
        const err = await watch.done;
        if (err !== undefined) throw err;
      } finally {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
      }
    }),
  );
}
