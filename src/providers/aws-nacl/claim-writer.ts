/**
 * The claims of one apply, in memory, and the writer that puts them in the
 * NACL's tags.
 *
 * The provider sets the claims of a whole apply at once and commits them in
 * one flush; later commits are group commits: changes that ask for a flush
 * while one is being prepared or is in flight share the next flush. A flush writes every claim tag whose
 * content differs from what the NACL holds, in ONE CreateTags call, and only
 * then deletes the claim tags that became empty (DeleteTags). Flushes never
 * overlap, so a later flush always carries the newer content.
 *
 * `commit()` resolves once a flush that started after the call has
 * succeeded, that is once the NACL's tags hold every claim set before the
 * call; `commit(rule)` once they hold that rule's claim. Callers rely on
 * exactly that: an entry is written only after its claim is committed.
 * `commitWith(tags)` also writes other tags (the apply lease) in the same
 * CreateTags, so taking or renewing the lease costs no call of its own.
 */
import { isRetryable } from '../../core/errors.js';
import { packClaims } from './mapping.js';
import type { Claim, Claims, Direction, NaclTag } from './mapping.js';

export interface TagIo {
  putTags(tags: readonly NaclTag[]): Promise<void>;
  deleteTags(keys: readonly string[]): Promise<void>;
}

/** Stands for a tag whose content is unknown after a failed write: it is rewritten (or deleted) on the next flush. */
const UNKNOWN = '\u0000unknown';

export class ClaimWriter {
  private version = 0;
  private committed = 0;
  private running = false;
  private waiters: Array<{ version: number; resolve: () => void; reject: (err: unknown) => void }> = [];
  /** Version at which each claim (`<direction>/<rule>`) was last set or dropped. */
  private readonly setAt = new Map<string, number>();
  /** Our claim tags as the NACL holds them (as far as we know). */
  private readonly cloud: Map<string, string>;
  /** Flushes that reached the API, for logs and tests. */
  flushes = 0;
  /** Why the last DeleteTags of empty claim tags failed, if it did. */
  cleanupError: unknown;
  /** Claim tag keys the last successful CreateTags wrote. */
  lastPut: readonly string[] = [];
  /** Tags that are not claims, for the next flush's CreateTags. */
  private extra: NaclTag[] = [];

  constructor(
    private readonly owner: string,
    private readonly claims: Claims,
    ownKeys: ReadonlyMap<string, string>,
    private readonly io: TagIo,
  ) {
    this.cloud = new Map(ownKeys);
  }

  get(dir: Direction, rule: number): Claim | undefined {
    return this.claims[dir].get(rule);
  }

  /** Rule numbers claimed in memory in one direction. */
  claimedRules(dir: Direction): number[] {
    return [...this.claims[dir].keys()];
  }

  /** Sets (or, with `undefined`, drops) a claim in memory. It reaches the NACL with the next flush. */
  set(dir: Direction, rule: number, claim: Claim | undefined): void {
    if (claim) this.claims[dir].set(rule, claim);
    else this.claims[dir].delete(rule);
    this.version++;
    this.setAt.set(`${dir}/${rule}`, this.version);
  }

  /** Our claim tags as the NACL holds them, as far as this writer knows (what a read-back must find). */
  get written(): ReadonlyMap<string, string> {
    return this.cloud;
  }

  /**
   * Like `commit()`, and the same CreateTags also writes `tags` (never
   * claim tags). Resolves once the call that carried them succeeded.
   */
  commitWith(tags: readonly NaclTag[]): Promise<void> {
    this.extra.push(...tags);
    this.version++;
    return this.commit();
  }

  /** True when memory holds claims the NACL may not have yet, or an empty claim tag is left to delete. */
  get dirty(): boolean {
    return this.committed < this.version || this.cleanupError !== undefined;
  }

  /**
   * Resolves when the NACL's tags hold every claim set before this call or,
   * given a rule, that rule's claim as last set (which an earlier flush may
   * already have written: then no call is made).
   */
  commit(rule?: { dir: Direction; rule: number }): Promise<void> {
    if (rule && this.committed >= (this.setAt.get(`${rule.dir}/${rule.rule}`) ?? 0)) return Promise.resolve();
    const version = this.version;
    if (this.committed >= version && this.cleanupError === undefined) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.waiters.push({ version, resolve, reject });
      if (!this.running) void this.loop();
    });
  }

  private async loop(): Promise<void> {
    this.running = true;
    try {
      // Let the other changes started in this tick set their claims, so they share this flush.
      await new Promise((r) => setImmediate(r));
      while (this.waiters.length > 0) {
        const version = this.version;
        const batch = this.waiters;
        this.waiters = [];
        try {
          await this.flush();
          this.committed = Math.max(this.committed, version);
          for (const w of batch) w.resolve();
        } catch (err) {
          for (const w of batch) w.reject(err);
        }
      }
    } finally {
      this.running = false;
    }
  }

  /** One flush: the content is taken synchronously, before the first await. */
  private async flush(): Promise<void> {
    const want = packClaims(this.owner, this.claims);
    const put: NaclTag[] = [];
    for (const [key, value] of want) if (this.cloud.get(key) !== value) put.push({ key, value });
    const drop = [...this.cloud.keys()].filter((k) => !want.has(k));
    const extra = this.extra;
    this.extra = [];
    if (put.length === 0 && drop.length === 0 && extra.length === 0) return;
    this.flushes++;
    if (put.length > 0 || extra.length > 0) {
      try {
        await this.io.putTags([...extra, ...put]);
      } catch (err) {
        // A refused call (4xx) changed nothing; a timeout or 5xx may have: rewrite those tags next time.
        if (isRetryable(err)) for (const t of put) this.cloud.set(t.key, UNKNOWN);
        throw err;
      }
      for (const t of put) this.cloud.set(t.key, t.value);
      this.lastPut = put.map((t) => t.key);
    }
    if (drop.length > 0) {
      // Only tags whose every claim is gone are dropped, after the new content is in place. A
      // failure here does not fail the flush: the claims it carried are written, and a leftover
      // tag only holds claims without entries, which the next pass drops.
      try {
        await this.io.deleteTags(drop);
        for (const k of drop) this.cloud.delete(k);
        this.cleanupError = undefined;
      } catch (err) {
        if (isRetryable(err)) for (const k of drop) this.cloud.set(k, UNKNOWN);
        this.cleanupError = err;
      }
    }
  }
}
