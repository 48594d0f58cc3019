import { defineConfig } from 'vitest/config';

// `npm run test:reliability`: the fault matrix, bad-input fuzzing and overlap tests.
// RELIABILITY_SEEDS sets the number of kill-at-random-write seeds per provider (default 50).
export default defineConfig({
  test: {
    include: ['test/reliability/**/*.test.ts'],
    testTimeout: 600_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: false,
  },
});
