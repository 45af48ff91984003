/** Where the checkout and its binaries are, for tests that spawn them (from dist/test/support/). */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const serverBin = join(repoRoot, 'bin', 'spindle-server');
export const agentBin = join(repoRoot, 'bin', 'spindle-agent');
