import { describe, expect, it } from 'vitest';
import { ClaimWriter, type TagIo } from '../../../src/providers/aws-nacl/claim-writer.js';
import { emptyClaims } from '../../../src/providers/aws-nacl/mapping.js';
import { FatalError, RetryableError } from '../../../src/core/errors.js';
import { NOW } from '../../helpers/bans.js';

const exp = Math.ceil(NOW / 1000);

/** Records tag calls in order; `fail` makes the next call of that kind throw. */
function io() {
  const calls: string[] = [];
  const fail: { put?: Error; del?: Error } = {};
  const tagIo: TagIo = {
    async putTags(tags) {
      calls.push(`put ${tags.map((t) => `${t.key}=${t.value}`).join(',')}`);
      const e = fail.put;
      fail.put = undefined;
      if (e) throw e;
    },
    async deleteTags(keys) {
      calls.push(`delete ${keys.join(',')}`);
      const e = fail.del;
      fail.del = undefined;
      if (e) throw e;
    },
  };
  return { calls, fail, tagIo };
}

describe('providers/aws-nacl/claim-writer', () => {
  it('lets claims set in the same tick share one CreateTags', async () => {
    const { calls, tagIo } = io();
    const w = new ClaimWriter('test', emptyClaims(), new Map(), tagIo);
    const commits = [10, 11, 20].map((rule) => {
      w.set('ingress', rule, { cidr: `192.0.2.${rule}/32`, expiresAt: NOW });
      return w.commit({ dir: 'ingress', rule });
    });
    await Promise.all(commits);
    expect(calls).toEqual([`put cloud-bouncer:test:ingress:8=10=192.0.2.10/32@${exp} 11=192.0.2.11/32@${exp},cloud-bouncer:test:ingress:20=20=192.0.2.20/32@${exp}`]);
    // Already written: asking again costs nothing.
    await w.commit({ dir: 'ingress', rule: 10 });
    expect(calls).toHaveLength(1);
  });

  it('deletes a claim tag only after the CreateTags of the same flush, and only once it is empty', async () => {
    const { calls, tagIo } = io();
    const claims = emptyClaims();
    claims.ingress.set(10, { cidr: '192.0.2.10/32', expiresAt: NOW });
    claims.ingress.set(12, { cidr: '192.0.2.12/32', expiresAt: NOW });
    claims.ingress.set(13, { cidr: '192.0.2.13/32', expiresAt: NOW });
    const own = new Map([
      ['cloud-bouncer:test:ingress:8', `10=192.0.2.10/32@${exp}`],
      ['cloud-bouncer:test:ingress:12', `12=192.0.2.12/32@${exp} 13=192.0.2.13/32@${exp}`],
    ]);
    const w = new ClaimWriter('test', claims, own, tagIo);
    w.set('ingress', 10, undefined);
    w.set('ingress', 13, undefined);
    await w.commit();
    expect(calls).toEqual([`put cloud-bouncer:test:ingress:12=12=192.0.2.12/32@${exp}`, 'delete cloud-bouncer:test:ingress:8']);
  });

  it('fails the waiting claims when CreateTags fails, and rewrites the tags it may have left on the next flush', async () => {
    const { calls, fail, tagIo } = io();
    const w = new ClaimWriter('test', emptyClaims(), new Map(), tagIo);
    w.set('ingress', 10, { cidr: '192.0.2.10/32', expiresAt: NOW });
    fail.put = new RetryableError('timeout', { code: 'TimeoutError' });
    await expect(w.commit({ dir: 'ingress', rule: 10 })).rejects.toThrow('timeout');
    // The claim is withdrawn; the tag may exist after a timeout, so it is deleted.
    w.set('ingress', 10, undefined);
    await w.commit();
    expect(calls.slice(1)).toEqual(['delete cloud-bouncer:test:ingress:8']);
  });

  it('assumes nothing changed after a refused CreateTags (4xx)', async () => {
    const { calls, fail, tagIo } = io();
    const w = new ClaimWriter('test', emptyClaims(), new Map(), tagIo);
    w.set('ingress', 10, { cidr: '192.0.2.10/32', expiresAt: NOW });
    fail.put = new FatalError('denied', { code: 'UnauthorizedOperation' });
    await expect(w.commit()).rejects.toThrow('denied');
    w.set('ingress', 10, undefined);
    await w.commit();
    expect(calls).toHaveLength(1);
  });

  it('does not fail the claims it wrote when only the DeleteTags of an empty tag fails, and retries that delete', async () => {
    const { calls, fail, tagIo } = io();
    const claims = emptyClaims();
    claims.ingress.set(10, { cidr: '192.0.2.10/32', expiresAt: NOW });
    const w = new ClaimWriter('test', claims, new Map([['cloud-bouncer:test:ingress:8', `10=192.0.2.10/32@${exp}`]]), tagIo);
    w.set('ingress', 10, undefined);
    w.set('ingress', 20, { cidr: '192.0.2.20/32', expiresAt: NOW });
    fail.del = new RetryableError('throttled', { code: 'RequestLimitExceeded' });
    await w.commit({ dir: 'ingress', rule: 20 });
    expect(w.cleanupError).toBeInstanceOf(RetryableError);
    expect(w.dirty).toBe(true);
    await w.commit();
    expect(calls).toEqual([`put cloud-bouncer:test:ingress:20=20=192.0.2.20/32@${exp}`, 'delete cloud-bouncer:test:ingress:8', 'delete cloud-bouncer:test:ingress:8']);
    expect(w.dirty).toBe(false);
  });
});
