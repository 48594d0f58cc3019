/**
 * The provider-agnostic reliability harness. A `TargetAdapter` wraps one
 * provider and its fake (or, for the `file` target, its file); the runners
 * here drive the real `runPass` against it and check the invariants of
 * issue 8 at every state the target goes through:
 *
 * - no whitelisted address is covered by any deny rule;
 * - no foreign rule changes;
 * - after at most K passes, the target equals the desired state.
 *
 * "Every state" is literal: each adapter registers a hook that its fake calls
 * from inside the request handler right after a write changed the state, and
 * the check runs there, before the client sees the answer.
 *
 * Adding a provider is one adapter file in `adapters/` and one line in
 * `adapters/index.ts`.
 */
import { pino } from 'pino';
import { runPass, type PassMode, type PassResult } from '../../src/core/reconcile.js';
import type { Provider } from '../../src/providers/provider.js';
import type { FaultConfig, Faults } from '../fakes/faults.js';
import { NOW } from '../helpers/bans.js';
import { addressSet, coveredAddresses, duplicatedAddresses, sameSet, toRange, type AddressRange } from './addresses.js';
import type { FaultCase, FaultId, InstalledOverlay, ProviderTuning } from './fault-plans.js';
import { MemorySource, WHITELISTED, WHITELIST_INPUT, scenario, type DesiredSet, type StreamItem } from './scenario.js';

/** Passes allowed to converge (issue 8: "after at most K passes"). */
export const K = 8;

export const log = pino({ level: 'silent' });

export interface Problem {
  /** `invalid`: a rule in our space that is not a well-formed rule of ours (corruption, or a conflict that stops the target). `leftover`: a state the next pass repairs (a claim without its entry, an operation still settling). */
  kind: 'invalid' | 'leftover';
  message: string;
}

export interface BuildOptions extends ProviderTuning {
  /**
   * `second` builds the provider as a separate process would: nothing shared
   * in memory with the first (the azure-nsg provider serialises writes per
   * NSG inside one process; two CronJob runs are two processes).
   */
  instance?: 'first' | 'second';
}

export interface TargetAdapter {
  readonly kind: string;
  /** The faults this target can be given (the `file` target has no server: only `kill`). */
  readonly supports: ReadonlySet<FaultId>;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** A new target with the foreign rules seeded; it becomes the current one. */
  newTarget(): Promise<void>;
  /** A provider for the current target, as a new process would build it. */
  provider(opts?: BuildOptions): Promise<Provider>;
  /** Faults for everything that reaches the target from now on; `{}` clears them. */
  setFaults(cfg: FaultConfig): void;
  /** The fake's fault state, for schedules laid over it; undefined without a server. */
  faultState(): Faults | undefined;
  /** Lets work the target accepted finish (Azure operations settle), as time passing between runs would. */
  settle(): Promise<void>;
  /** The raw state, for failure messages. */
  snapshot(): unknown;
  /** Every CIDR in our rules (duplicates kept). */
  ownedCidrs(): string[];
  /** Every CIDR any deny rule holds, ours or foreign, except the cloud's built-in catch-all rules. */
  denyCidrs(): string[];
  /** One canonical string per foreign rule (and per foreign tag), to compare byte for byte. */
  foreignRules(): string[];
  problems(): Problem[];
  /** Requests the target received (faulted ones included). */
  apiCalls(): number;
  /** Faults injected so far (throttled, 5xx, dropped, failed late, or writes lost to a crash). */
  faultsInjected(): number;
  /** Changes a foreign rule behind the provider's back: only for the harness's own tests, to show the watch sees it. */
  tamperForeign(): void;
  /** Called after every change to the target's state. */
  observe(fn: (() => void) | undefined): void;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface PassOptions extends BuildOptions {
  /** A run configured without any whitelist: only for the harness's own tests. */
  ignoreWhitelist?: boolean;
  /** Called once the run has planned, before it writes (or when it ends without writing); the run writes when this resolves. */
  beforeApply?: () => Promise<void>;
}

/** Holds each run's first write until every party has planned, so all of them write from the same stale state. */
export class Rendezvous {
  private arrived = 0;
  private open!: () => void;
  private readonly opened = new Promise<void>((resolve) => (this.open = resolve));
  constructor(private readonly parties: number) {}

  arrive(): Promise<void> {
    if (++this.arrived >= this.parties) this.open();
    return this.opened;
  }
}

function holdWrites(inner: Provider, beforeApply: () => Promise<void>): Provider {
  return {
    kind: inner.kind,
    target: inner.target,
    read: () => inner.read(),
    apply: async (changes, ctx) => {
      await beforeApply();
      return inner.apply(changes, ctx);
    },
    describeSlot: inner.describeSlot ? (pool, slot) => inner.describeSlot!(pool, slot) : undefined,
    stats: () => inner.stats(),
    close: inner.close ? () => inner.close!() : undefined,
  };
}

/** One pass of the real reconcile loop with a fresh provider (a new process). */
export async function pass(adapter: TargetAdapter, items: StreamItem[], mode: PassMode, opts: PassOptions = {}): Promise<PassResult> {
  const built = await adapter.provider(opts);
  let held = false;
  const hold = opts.beforeApply
    ? () => {
        held = true;
        return opts.beforeApply!();
      }
    : undefined;
  const provider = hold ? holdWrites(built, hold) : built;
  try {
    return await runPass(
      {
        sources: [new MemorySource(items, !opts.ignoreWhitelist)],
        targets: [{ provider, maxWritesPerRun: 1000 }],
        log,
        now: () => NOW,
        resolve: async () => [],
        whitelist: opts.ignoreWhitelist ? { cidrs: [], neverBan: [], hostnames: [] } : WHITELIST_INPUT,
      },
      mode,
    );
  } finally {
    // A run with nothing to write still counts as having planned.
    if (hold && !held) void hold();
    await provider.close?.();
  }
}

/**
 * Watches every state: counts the whitelisted addresses any deny rule ever
 * covered, and the foreign rules ever seen different from the seeded ones.
 */
export class Watch {
  readonly covered = new Set<string>();
  /** `-rule` (a seeded foreign rule missing or changed) and `+rule` (a foreign rule that appeared). */
  readonly foreignChanges = new Set<string>();
  states = 0;
  private readonly seeded: Set<string>;

  constructor(private readonly adapter: TargetAdapter) {
    this.seeded = new Set(adapter.foreignRules());
    adapter.observe(() => this.check());
    this.check();
  }

  check(): void {
    this.states++;
    const now = new Set(this.adapter.foreignRules());
    for (const r of this.seeded) if (!now.has(r)) this.foreignChanges.add(`-${r}`);
    for (const r of now) if (!this.seeded.has(r)) this.foreignChanges.add(`+${r}`);
    const deny = this.adapter.denyCidrs().map(toRange).filter((r): r is AddressRange => r !== undefined);
    for (const a of coveredAddresses(WHITELISTED, deny)) this.covered.add(a);
  }

  stop(): void {
    this.check();
    this.adapter.observe(undefined);
  }
}

export interface Convergence {
  converged: boolean;
  why: string;
}

/** The target equals the desired state: exactly its addresses, once each, clean rules, and a fresh plan with nothing to do. */
export async function convergence(adapter: TargetAdapter, desired: DesiredSet): Promise<Convergence> {
  const owned = adapter.ownedCidrs();
  const held = addressSet(owned);
  if (!sameSet(held, desired.addresses)) return { converged: false, why: `holds ${held.size} addresses, ${desired.addresses.size} desired` };
  const dup = duplicatedAddresses(owned);
  if (dup > 0) return { converged: false, why: `${dup} addresses held twice` };
  const problems = adapter.problems();
  if (problems.length > 0) return { converged: false, why: problems.map((p) => p.message).join('; ') };
  const check = await pass(adapter, desired.items, 'plan');
  const t = check.plan.targets[0]!;
  if (t.error || check.errors.length > 0) return { converged: false, why: t.error ?? check.errors.join('; ') };
  if (t.changes.length > 0) return { converged: false, why: `a fresh plan still has ${t.changes.length} changes` };
  return { converged: true, why: '' };
}

export interface ScenarioOutcome {
  seed: number;
  converged: boolean;
  /** Passes run until the target equalled the desired state (K + 1 when it never did). */
  passes: number;
  foreignTouched: number;
  whitelistCovered: number;
  /** Requests the target received during the passes (setup and convergence checks excluded). */
  apiCalls: number;
  faultsInjected: number;
  states: number;
  /** For kill scenarios: the write after which the process died. */
  killedAfter?: number | undefined;
  errors: string[];
  why: string;
}

/** Seeds the target with the scenario's initial state, without faults. */
async function prepare(adapter: TargetAdapter, initial: DesiredSet): Promise<void> {
  await adapter.newTarget();
  adapter.setFaults({});
  const setup = await pass(adapter, initial.items, 'apply');
  await adapter.settle();
  const ok = await convergence(adapter, initial);
  if (setup.errors.length > 0 || !ok.converged) throw new Error(`${adapter.kind}: could not seed the initial state: ${setup.errors.join('; ')} ${ok.why}`);
}

/**
 * One fault scenario: seed foreign rules and an initial state, then run
 * passes towards the desired state with the fault on (the first pass only,
 * for a crash or latency; every pass, for a storm) until the target equals
 * the desired state, at most K passes.
 */
export async function runScenario(adapter: TargetAdapter, fault: FaultCase, seed: number): Promise<ScenarioOutcome> {
  const sc = scenario(seed);
  await prepare(adapter, sc.initial);
  const watch = new Watch(adapter);
  const state = adapter.faultState();
  let cfg = fault.config(seed);
  let killedAfter: number | undefined;
  if (fault.id === 'kill') {
    // Die after write k, with k anywhere from before the first write to past the last one.
    const planned = (await pass(adapter, sc.desired.items, 'plan')).plan.targets[0]!.changes.length;
    // A change costs one write (aws-nacl adds one to three claim-tag writes per apply).
    killedAfter = Math.floor(sc.rand() * (planned + 1));
    cfg = { ...cfg, failAfterWrites: killedAfter };
  }
  const errors: string[] = [];
  let calls = 0;
  const injectedBefore = adapter.faultsInjected();
  let passes = K + 1;
  let why = '';
  let overlay: InstalledOverlay | undefined;
  try {
    for (let i = 1; i <= K; i++) {
      const on = i === 1 || fault.persistent;
      if (on) {
        adapter.setFaults({ ...cfg, seed: (cfg.seed ?? seed) * 31 + i });
        if (i === 1 && fault.overlay && state) overlay = fault.overlay(seed)(state);
      }
      if (overlay) overlay.active = on;
      const before = adapter.apiCalls();
      const r = await pass(adapter, sc.desired.items, 'apply', { requestTimeoutMs: fault.tuning?.requestTimeoutMs });
      calls += adapter.apiCalls() - before;
      errors.push(...r.errors);
      // Between runs: faults off for the check (a storm resumes with the next pass), late requests land, operations settle.
      adapter.setFaults({});
      if (overlay) overlay.active = false;
      await overlay?.settled();
      await adapter.settle();
      const c = await convergence(adapter, sc.desired);
      why = c.why;
      if (c.converged) {
        passes = i;
        break;
      }
    }
  } finally {
    overlay?.undo();
    adapter.setFaults({});
    watch.stop();
  }
  return {
    seed,
    converged: passes <= K,
    passes,
    foreignTouched: watch.foreignChanges.size,
    whitelistCovered: watch.covered.size,
    apiCalls: calls,
    faultsInjected: adapter.faultsInjected() - injectedBefore + (overlay?.injected() ?? 0),
    states: watch.states,
    killedAfter,
    errors,
    why,
  };
}

export interface OverlapOutcome {
  seed: number;
  /** Rules in our space that are not well-formed rules of ours, right after the overlap. */
  invalid: string[];
  /** Addresses held by more than one of our rules, right after the overlap. */
  duplicates: number;
  /** Overlapping runs that refused some write because the target changed under them (fail safe). */
  runsRefused: number;
  /** Passes after the overlap until the target equalled the second run's desired state. */
  passesAfter: number;
  converged: boolean;
  foreignTouched: number;
  whitelistCovered: number;
  errors: string[];
  why: string;
}

/**
 * Two runs at once on one target (a CronJob that overlaps), each with its
 * own provider as a separate process would have, and different desired
 * sets; then passes with the second set until it converges.
 */
export async function runOverlap(adapter: TargetAdapter, seed: number): Promise<OverlapOutcome> {
  const sc = scenario(seed);
  await prepare(adapter, sc.initial);
  const watch = new Watch(adapter);
  const errors: string[] = [];
  let runsRefused = 0;
  let invalid: string[];
  let duplicates: number;
  let passesAfter = K + 1;
  let why = '';
  try {
    // Both runs plan from the same state before either writes; a little latency, varied per seed,
    // makes their writes interleave differently.
    const both = new Rendezvous(2);
    adapter.setFaults({ latencyMs: 1 + (seed % 4), seed });
    const runs = await Promise.all([
      pass(adapter, sc.desired.items, 'apply', { instance: 'first', beforeApply: () => both.arrive() }),
      pass(adapter, sc.other.items, 'apply', { instance: 'second', beforeApply: () => both.arrive() }),
    ]);
    adapter.setFaults({});
    await adapter.settle();
    for (const r of runs) {
      errors.push(...r.errors);
      if (r.errors.length > 0) runsRefused++;
    }
    invalid = adapter.problems().filter((p) => p.kind === 'invalid').map((p) => p.message);
    duplicates = duplicatedAddresses(adapter.ownedCidrs());
    for (let i = 1; i <= K; i++) {
      const r = await pass(adapter, sc.other.items, 'apply');
      errors.push(...r.errors);
      await adapter.settle();
      const c = await convergence(adapter, sc.other);
      why = c.why;
      if (c.converged) {
        passesAfter = i;
        break;
      }
    }
  } finally {
    adapter.setFaults({});
    watch.stop();
  }
  return {
    seed,
    invalid,
    duplicates,
    runsRefused,
    passesAfter,
    converged: passesAfter <= K,
    foreignTouched: watch.foreignChanges.size,
    whitelistCovered: watch.covered.size,
    errors,
    why,
  };
}
