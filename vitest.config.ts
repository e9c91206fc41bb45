import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{shared,webhook,daemon,test}/**/*.test.ts'],
    exclude: ['**/node_modules/**', 'test/kernel/**'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Suites that touch network namespaces and the kernel share global state; keep files serial.
    fileParallelism: false,
  },
});
