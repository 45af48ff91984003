// npm's `preinstall` for this checkout: one line on stderr before the long, silent install of
// better-sqlite3, when it is not built yet. npm runs a project's own preinstall before its
// dependencies only from the npm release that restored that order (older npm runs it after
// them; by then SQLite is built and this prints nothing). Uses nothing but node:fs: no
// dependency is installed yet. Never fails the install.
import { existsSync } from 'node:fs';

try {
  if (!existsSync('node_modules/better-sqlite3/build/Release/better_sqlite3.node')) {
    process.stderr.write('spindle: npm install now installs SQLite (better-sqlite3: compiled from source with node-gyp unless a prebuilt binary can be downloaded, 1-3 minutes with no output), then builds a small addon and dist/.\n');
  }
} catch {
  // a note only
}
