// Shared loader for the bin/ executables: finds the compiled CLI next to this file, whatever the
// working directory, and explains what to do when the build is missing.
//
// spindle-server's admin commands (ADMIN_VERBS) run from the admin bundle
// dist/cli/spindle-server-admin.js (scripts/bundle-cli.js, part of `npm run build`): one file
// loads much faster than the few hundred modules grpc-js and the CLI are made of. The bundle is
// used only when it is at least as new as the tsc output (tsc rewrites every file it emits), so
// after a plain `tsc` rebuild the commands run the fresh dist/ code instead of a stale bundle.
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

/** spindle-server's admin command names; server/cli/commands.ts ADMIN_COMMAND_NAMES (a test keeps them equal). */
export const ADMIN_VERBS = ['entry', 'agent', 'token', 'bundle', 'federation', 'x509', 'jwt', 'healthcheck'];

/** The admin bundle when `argv` runs an admin command and the bundle is current, else undefined. */
function adminBundle(root, which, entry, argv) {
  if (which !== 'server' || !ADMIN_VERBS.includes(argv[0])) return undefined;
  const bundle = join(root, 'dist', 'cli', 'spindle-server-admin.js');
  try {
    return statSync(bundle).mtimeMs >= statSync(entry).mtimeMs ? bundle : undefined;
  } catch {
    return undefined;
  }
}

export async function loadCli(which) {
  const root = dirname(dirname(fileURLToPath(import.meta.url)));
  const argv = process.argv.slice(2);
  const entry = join(root, 'dist', which, 'cli', 'main.js');
  const target = adminBundle(root, which, entry, argv) ?? entry;
  if (target === entry && !existsSync(entry)) {
    process.stderr.write(`spindle-${which}: ${entry} is missing; run \`npm install\` (or \`npm run build\`) in ${root} first\n`);
    process.exit(2);
  }
  // `spindle-server entry show | head` closes the pipe early: that is not an error.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
  }
  const mod = await import(pathToFileURL(target).href);
  await mod.main(argv);
}
