/**
 * The faults of the matrix. Most are plain `FaultConfig` rates that every
 * fake applies through the shared `Faults`. Two need a shape the rates do not
 * give, so they are laid over a fake's `Faults` instance for one scenario:
 *
 * - 5xx bursts: runs of consecutive 5xx answers (3 to 8 requests) separated
 *   by 8 to 24 good ones, longer than one call's retries, so whole calls fail
 *   and the next pass has to finish the job;
 * - 10 s latency on a few requests only (two among the first six of the
 *   pass), so the suite stays within minutes while each target still waits
 *   through, or times out on, a 10 s answer.
 *
 * Both are seeded, so a failing scenario replays.
 */
import { prng, type FaultConfig, type Faults, type FaultVerdict } from '../fakes/faults.js';

export type FaultId = 'throttle' | 'server-errors' | 'latency' | 'latency-timeout' | 'drops' | 'late-failures' | 'kill';

export interface InstalledOverlay {
  /** While inactive, requests pass through untouched and do not advance the schedule (convergence checks). */
  active: boolean;
  undo(): void;
  /** Requests this overlay faulted so far. */
  injected(): number;
  /** Resolves once no request held by the overlay is still waiting. */
  settled(): Promise<void>;
}

/** A schedule laid over a fake's `Faults` for one scenario. */
export type Overlay = (faults: Faults) => InstalledOverlay;

export interface ProviderTuning {
  /** Per-request timeout the target is built with (ms). */
  requestTimeoutMs?: number;
}

export interface FaultCase {
  id: FaultId;
  label: string;
  /** Rates for the fake. */
  config(seed: number): FaultConfig;
  overlay?: ((seed: number) => Overlay) | undefined;
  /** Faults stay on for every pass (a storm), or only for the first (a crash). */
  persistent: boolean;
  tuning?: ProviderTuning | undefined;
  /** Only for targets whose operations can fail after being accepted. */
  needsLateFailures?: boolean;
}

/** Consecutive 5xx runs over every request the fake receives. */
export function burstOverlay(seed: number): Overlay {
  return (faults) => {
    const rand = prng(seed + 101);
    let n = 0;
    let hits = 0;
    let nextBurst = 4 + Math.floor(rand() * 8);
    let burstLeft = 0;
    const decide = faults.decide.bind(faults);
    const self: InstalledOverlay = {
      active: true,
      undo: () => {
        delete (faults as { decide?: unknown }).decide;
      },
      injected: () => hits,
      settled: async () => undefined,
    };
    faults.decide = (mutating: boolean): FaultVerdict => {
      if (!self.active) return decide(mutating);
      n++;
      if (burstLeft === 0 && n >= nextBurst) {
        burstLeft = 3 + Math.floor(rand() * 6);
        nextBurst = n + burstLeft + 8 + Math.floor(rand() * 17);
      }
      if (burstLeft > 0) {
        burstLeft--;
        hits++;
        faults.injected.server_error++;
        return 'server_error';
      }
      return decide(mutating);
    };
    return self;
  };
}

export const SLOW_MS = 10_000;

/** Two of the first six requests of a pass wait 10 s before they are answered (or processed, for a client that gave up). */
export function slowOverlay(seed: number): Overlay {
  return (faults) => {
    const rand = prng(seed + 202);
    const slow = new Set<number>();
    while (slow.size < 2) slow.add(1 + Math.floor(rand() * 6));
    let n = 0;
    let hits = 0;
    const waiting = new Set<Promise<unknown>>();
    const delay = faults.delay.bind(faults);
    const self: InstalledOverlay = {
      active: true,
      undo: () => {
        delete (faults as { delay?: unknown }).delay;
      },
      injected: () => hits,
      // A request the client gave up on is still processed when its wait ends: let those land.
      settled: async () => {
        while (waiting.size > 0) await Promise.all(waiting);
        await new Promise((r) => setTimeout(r, 50));
      },
    };
    faults.delay = async () => {
      if (!self.active) return delay();
      n++;
      if (!slow.has(n)) return delay();
      const wait = new Promise((r) => setTimeout(r, SLOW_MS));
      hits++;
      waiting.add(wait);
      await wait;
      waiting.delete(wait);
    };
    return self;
  };
}

export const FAULT_CASES: readonly FaultCase[] = [
  { id: 'throttle', label: 'throttling storm (50% of writes)', config: (seed) => ({ throttleRate: 0.5, seed }), persistent: true },
  { id: 'server-errors', label: '5xx bursts (3-8 requests in a row)', config: (seed) => ({ seed }), overlay: burstOverlay, persistent: true },
  { id: 'drops', label: 'dropped connections (20% of requests)', config: (seed) => ({ dropRate: 0.2, seed }), persistent: true },
  {
    id: 'late-failures',
    label: 'operations failing late (30%)',
    config: (seed) => ({ lateFailureRate: 0.3, seed }),
    persistent: true,
    needsLateFailures: true,
  },
  {
    id: 'latency',
    label: '10 s latency, timeout 15 s',
    config: (seed) => ({ seed }),
    overlay: slowOverlay,
    persistent: false,
    tuning: { requestTimeoutMs: 15_000 },
  },
  {
    id: 'latency-timeout',
    label: '10 s latency, timeout 4 s (late writes land)',
    config: (seed) => ({ seed }),
    overlay: slowOverlay,
    persistent: false,
    tuning: { requestTimeoutMs: 4_000 },
  },
  // `failAfterWrites` is drawn per seed by the runner, once it knows how many writes the pass plans.
  { id: 'kill', label: 'killed at a random write', config: (seed) => ({ seed }), persistent: false },
];

export function faultCase(id: FaultId): FaultCase {
  const c = FAULT_CASES.find((f) => f.id === id);
  if (!c) throw new Error(`no fault case ${id}`);
  return c;
}
