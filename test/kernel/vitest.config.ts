import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Kernel VM lab suites: every test boots a qemu VM (TCG), so runs are slow and must not overlap.
export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/kernel/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // A kernel suite must fail, never pass vacuously.
    passWithNoTests: false,
    allowOnly: false,
  },
});
