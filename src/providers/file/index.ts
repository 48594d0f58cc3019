/**
 * The `file` target: a JSON file that stands for a firewall with a declared
 * capacity. It is the embedded default for the quick start and the demo, and
 * it keeps the same semantics as the cloud targets:
 *
 * - rules are evaluated in file order, first match wins; ours are deny rules;
 * - one family per rule, `capacity.cidrs_per_rule` CIDRs per rule,
 *   `capacity.rules` rules and `capacity.total_cidrs` CIDRs in all (foreign
 *   rules count);
 * - owned rules are named `<name_prefix>-<owner>-NNN` and carry the marker
 *   `cloud-bouncer owner=<owner> exp=<unix>` in their description; a rule with
 *   our name but no marker is a conflict;
 * - every write replaces the file atomically (write a temp file, fsync,
 *   rename), under an exclusive lock file so overlapping runs cannot
 *   interleave; each change is its own write, so a crash leaves a valid file.
 *
 * File shape:
 * ```json
 * { "capacity": { "rules": 8, "cidrs_per_rule": 4, "total_cidrs": 32 },
 *   "rules": [ { "name": "allow-office", "action": "allow", "family": 4,
 *                "cidrs": ["203.0.113.7/32"], "description": "office" } ] }
 * ```
 */
import { mkdir, open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { createQueue, applyPhased } from '../../core/queue.js';
import { formatMarker, parseMarker } from '../../core/marker.js';
import { FatalError, RetryableError } from '../../core/errors.js';
import { overlaps, toNet, tryParseCidr } from '../../core/cidr.js';
import { countCall, emptyStats, assertPlanStillHolds } from '../provider.js';
import { duration, queueOptions, queueSchema } from '../../schema.js';
import type { ApplyContext, ApplyResult, CallStats, Provider, ProviderContext, ProviderModule } from '../provider.js';
import type { Change, Conflict, Family, ForeignRule, Pool, Rule, TargetState } from '../../core/types.js';

export const fileConfigSchema = z
  .object({
    path: z.string().min(1),
    /** Capacity used when the file does not exist yet; an existing file's own capacity wins. */
    rules: z.number().int().min(1).max(10_000).default(8),
    cidrs_per_rule: z.number().int().min(1).max(10_000).default(4),
    total_cidrs: z.number().int().min(1).max(10_000_000).optional(),
    name_prefix: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,30}$/, 'expected lower-case letters, digits and dashes, starting with a letter')
      .default('cloud-bouncer'),
    bucket: duration().default(3_600_000),
    lock_timeout: duration().default(30_000),
    /** Rate limit only: the whole file is rewritten per change, so writes run one at a time. */
    queue: queueSchema.extend({ concurrency: z.number().int().min(1).max(1, 'expected 1: the file provider writes one change at a time').optional() }).optional(),
  })
  .strict();

export type FileConfig = z.infer<typeof fileConfigSchema>;

/** One write at a time; the `queue` key can slow the writes down, to stand in for a cloud's rate limit. */
const DEFAULT_QUEUE = { concurrency: 1, intervalCap: 1_000, intervalMs: 1_000 };

const fileRuleSchema = z.object({
  name: z.string().min(1),
  action: z.enum(['allow', 'deny']),
  family: z.union([z.literal(4), z.literal(6)]),
  cidrs: z.array(z.string()),
  description: z.string().optional(),
});

const fileDocSchema = z.object({
  capacity: z.object({
    rules: z.number().int().min(1),
    cidrs_per_rule: z.number().int().min(1),
    total_cidrs: z.number().int().min(1).optional(),
  }),
  rules: z.array(fileRuleSchema),
});

export type FileDoc = z.infer<typeof fileDocSchema>;
export type FileRule = z.infer<typeof fileRuleSchema>;

const POOL = 'main';

export class FileProvider implements Provider {
  readonly kind = 'file';
  readonly target: string;
  private readonly path: string;
  private readonly calls: CallStats = emptyStats();

  constructor(
    private readonly cfg: FileConfig,
    private readonly ctx: ProviderContext,
  ) {
    this.target = ctx.target;
    this.path = resolve(cfg.path);
  }

  stats(): CallStats {
    return { ...this.calls, errors: { ...this.calls.errors } };
  }

  private slotName(i: number): string {
    return `${this.cfg.name_prefix}-${this.ctx.owner}-${String(i).padStart(3, '0')}`;
  }

  private get ownPrefix(): string {
    return `${this.cfg.name_prefix}-${this.ctx.owner}-`;
  }

  async load(): Promise<FileDoc> {
    countCall(this.calls, 'read');
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return { capacity: { rules: this.cfg.rules, cidrs_per_rule: this.cfg.cidrs_per_rule, total_cidrs: this.cfg.total_cidrs }, rules: [] };
      }
      throw new RetryableError(`target ${this.target}: cannot read ${this.path}: ${(err as Error).message}`, { cause: err });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new FatalError(`target ${this.target}: ${this.path} is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
    const parsed = fileDocSchema.safeParse(json);
    if (!parsed.success) {
      const i = parsed.error.issues[0]!;
      throw new FatalError(`target ${this.target}: ${this.path}: ${i.path.join('.')}: ${i.message}`);
    }
    return parsed.data;
  }

  toState(doc: FileDoc): TargetState {
    const rules: Rule[] = [];
    const foreign: ForeignRule[] = [];
    const conflicts: Conflict[] = [];
    const warnings: string[] = [];
    let foreignCidrs = 0;
    const used = new Set<string>();
    let firstOwnedIndex = -1;
    doc.rules.forEach((r, index) => {
      used.add(r.name);
      const marker = parseMarker(r.description);
      if (r.name.startsWith(this.ownPrefix)) {
        if (!marker || marker.owner !== this.ctx.owner || r.action !== 'deny') {
          conflicts.push({ slot: r.name, message: `rule ${r.name} uses our name but is not ours (no ownership marker for owner ${this.ctx.owner})` });
          return;
        }
        if (firstOwnedIndex < 0) firstOwnedIndex = index;
        const cidrs = r.cidrs.map((c) => tryParseCidr(c)?.cidr ?? c);
        rules.push({ pool: POOL, slot: r.name, family: r.family, cidrs, expiresAt: marker.expiresAt });
        return;
      }
      foreign.push({ slot: r.name, description: `${r.name} ${r.action} ${r.cidrs.join(',')}` });
      foreignCidrs += r.cidrs.length;
    });
    // A foreign allow rule evaluated before our deny rules makes them useless for the addresses it covers.
    const ownNets = rules.flatMap((r) => r.cidrs.map((c) => toNet(c)));
    doc.rules.forEach((r, index) => {
      if (r.action !== 'allow' || (firstOwnedIndex >= 0 && index > firstOwnedIndex)) return;
      const nets = r.cidrs.map((c) => tryParseCidr(c)).filter((p) => p !== undefined).map((p) => toNet(p.cidr));
      const broad = nets.some((n) => n.prefix === 0);
      if (broad || nets.some((n) => ownNets.some((o) => overlaps(n, o)))) {
        warnings.push(`foreign allow rule ${r.name} is evaluated before our deny rules and lets ${broad ? 'every address' : 'some banned addresses'} through`);
      }
    });
    const freeSlots: string[] = [];
    for (let i = 1; i <= doc.capacity.rules; i++) {
      const name = this.slotName(i);
      if (!used.has(name)) freeSlots.push(name);
    }
    const totalCidrs = doc.capacity.total_cidrs ?? doc.capacity.rules * doc.capacity.cidrs_per_rule;
    const pool: Pool = {
      id: POOL,
      families: [4, 6] as Family[],
      cidrsPerRule: doc.capacity.cidrs_per_rule,
      maxRules: Math.max(0, doc.capacity.rules - foreign.length),
      maxCidrs: Math.max(0, totalCidrs - foreignCidrs),
      freeSlots,
      bucketMs: this.cfg.bucket,
      totals: { rules: doc.capacity.rules, cidrs: totalCidrs },
    };
    return { pools: [pool], rules, foreign, conflicts, warnings };
  }

  async read(): Promise<TargetState> {
    return this.toState(await this.load());
  }

  describeSlot(_pool: string, slot: string): Record<string, string | number> {
    return { name: slot };
  }

  private async writeDoc(doc: FileDoc): Promise<void> {
    countCall(this.calls, 'write');
    await mkdir(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.${process.pid}.tmp`;
    const fh = await open(tmp, 'w', 0o644);
    try {
      await fh.writeFile(`${JSON.stringify(doc, null, 2)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.path);
  }

  /** Exclusive lock file next to the target; a lock older than `lock_timeout` is taken over. */
  private async lock(): Promise<() => Promise<void>> {
    const lockPath = `${this.path}.lock`;
    await mkdir(dirname(this.path), { recursive: true });
    const deadline = Date.now() + this.cfg.lock_timeout;
    for (;;) {
      try {
        await writeFile(lockPath, `${process.pid}\n`, { flag: 'wx' });
        return async () => {
          await unlink(lockPath).catch(() => undefined);
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const st = await stat(lockPath).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > this.cfg.lock_timeout) {
          await unlink(lockPath).catch(() => undefined);
          continue;
        }
        if (Date.now() > deadline) {
          throw new RetryableError(`target ${this.target}: ${lockPath} is held by another run`, { code: 'locked' });
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  async apply(changes: readonly Change[], ctx: ApplyContext): Promise<ApplyResult> {
    const before = this.calls.total;
    const unlock = await this.lock();
    try {
      const doc = await this.load();
      assertPlanStillHolds(this.target, changes, this.toState(doc));
      const queue = createQueue(queueOptions(this.cfg.queue, DEFAULT_QUEUE));
      const outcomes = await applyPhased(
        changes,
        async (c) => {
          const i = doc.rules.findIndex((r) => r.name === c.slot);
          if (c.kind === 'delete') {
            if (i >= 0) doc.rules.splice(i, 1);
          } else {
            const rule: FileRule = {
              name: c.slot,
              action: 'deny',
              family: c.family,
              cidrs: c.after!.cidrs,
              description: formatMarker({ owner: this.ctx.owner, expiresAt: c.after!.expiresAt }),
            };
            if (i >= 0) doc.rules[i] = rule;
            else doc.rules.push(rule);
          }
          await this.writeDoc(doc);
          this.ctx.log.debug({ target: this.target, kind: c.kind, slot: c.slot, added: c.added.length, removed: c.removed.length }, 'wrote rule');
        },
        { queue, budget: ctx.budget, signal: ctx.signal },
      );
      return { outcomes, calls: this.calls.total - before };
    } finally {
      await unlock();
    }
  }
}

export const provider: ProviderModule<FileConfig> = {
  kind: 'file',
  configSchema: fileConfigSchema as unknown as z.ZodType<FileConfig>,
  async create(config, ctx) {
    return new FileProvider(config, ctx);
  },
  resource: (config) => ({ key: resolve(config.path), what: `the file ${config.path}` }),
};
