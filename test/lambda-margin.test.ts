import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/core/errors.js';
import { deadlineMargin } from '../src/lambda.js';

describe('lambda: CLOUD_BOUNCER_DEADLINE_MARGIN_MS', () => {
  it('reads a whole number of milliseconds, and defaults to 10 s (half the time left when that is less)', () => {
    expect(deadlineMargin('20000', 60_000)).toBe(20_000);
    expect(deadlineMargin(' 0 ', 60_000)).toBe(0);
    expect(deadlineMargin(undefined, 60_000)).toBe(10_000);
    expect(deadlineMargin(undefined, 10_900)).toBe(10_000);
    expect(deadlineMargin('', 8_000)).toBe(4_000);
  });

  it.each([
    ['20s', /expected a whole number of milliseconds \(e\.g\. 20000\), got "20s"/],
    ['-1', /got "-1"/],
    ['1e4', /got "1e4"/],
    ['60000', /60000 ms leaves no time for a pass: the function has 60000 ms left/],
  ])('refuses %s with an error naming the variable', (value, message) => {
    let err: unknown;
    try {
      deadlineMargin(value, 60_000);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/^config: CLOUD_BOUNCER_DEADLINE_MARGIN_MS: /);
    expect((err as Error).message).toMatch(message);
  });
});
