/**
 * The last line of defence for secrets: `scrub` hides a registered secret
 * and every piece of it at least 12 characters long, wherever it appears.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { registerSecret, scrub } from '../src/log.js';

const KEY = 'SuperSecretKey1234567890abcdef';
registerSecret(KEY);
registerSecret('short-k3y');

/** Every 12-character piece of `secret` found in `text`. */
function pieces(text: string, secret: string): string[] {
  const found: string[] = [];
  for (let i = 0; i + 12 <= secret.length; i++) if (text.includes(secret.slice(i, i + 12))) found.push(secret.slice(i, i + 12));
  return found;
}

describe('log/scrub', () => {
  it('replaces the whole secret and keeps the text around it', () => {
    expect(scrub(`x-api-key: ${KEY}; again ${KEY}.`)).toBe('x-api-key: [REDACTED]; again [REDACTED].');
  });

  it.each([
    ['a message that cut the key short', `expected a JSON object, got "key=${KEY.slice(0, 16)}"`, 'expected a JSON object, got "key=[REDACTED]"'],
    ['the key without its first characters', `token …${KEY.slice(9)} end`, 'token …[REDACTED] end'],
    ['a 12-character piece from the middle', `a${KEY.slice(7, 19)}b`, 'a[REDACTED]b'],
    ['two pieces that overlap the same run', `${KEY.slice(0, 20)}${KEY.slice(20)}!`, '[REDACTED]!'],
  ])('replaces %s', (_n, text, want) => {
    expect(scrub(text)).toBe(want);
  });

  it('leaves pieces shorter than 12 characters, and a short secret unless it is whole', () => {
    expect(scrub(`id ${KEY.slice(3, 14)} ok`)).toBe(`id ${KEY.slice(3, 14)} ok`);
    expect(scrub('short-k3 and short-k3y')).toBe('short-k3 and [REDACTED]');
  });

  it('leaves no 12-character piece of a secret in any text (200 runs)', () => {
    const alnum = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_'.split(''));
    const word = fc.array(alnum, { minLength: 12, maxLength: 64 }).map((a) => a.join(''));
    fc.assert(
      fc.property(word, fc.array(fc.tuple(fc.string({ maxLength: 20 }), fc.nat(), fc.nat()), { maxLength: 5 }), (secret, parts) => {
        registerSecret(secret);
        // Random text around random pieces (at least 12 long) of the secret, some of them overlapping.
        const text = parts
          .map(([pad, a, len]) => {
            const from = a % (secret.length - 11);
            return pad + secret.slice(from, from + 12 + (len % (secret.length - from - 11)));
          })
          .join('');
        expect(pieces(scrub(text), secret)).toEqual([]);
      }),
      { numRuns: 200 },
    );
  });
});
