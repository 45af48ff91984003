// Shared loader for the bin/ executables: finds the compiled CLI next to this file, whatever the
// working directory, and explains what to do when the build is missing.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

export async function loadCli(which) {
  const root = dirname(dirname(fileURLToPath(import.meta.url)));
  const entry = join(root, 'dist', which, 'cli', 'main.js');
  if (!existsSync(entry)) {
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
  const mod = await import(pathToFileURL(entry).href);
  await mod.main(process.argv.slice(2));
}
