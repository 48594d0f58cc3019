/**
 * What the API benchmark needs from each provider: a fake to run against, a
 * fresh target on it, and the fake's own count of the calls it received
 * (the wire is the ground truth; the provider's `stats()` is cross-checked
 * against it).
 */
import type { Provider } from '../../../src/providers/provider.js';
import type { Family } from '../../../src/core/types.js';

export interface WireCount {
  reads: number;
  writes: number;
  /** By operation (EC2 action, ARM method + resource...). */
  byOp: Record<string, number>;
}

export interface BenchSession {
  provider: Provider;
  /** Calls the fake has received for this session so far (cumulative). */
  wire(): WireCount;
  /** The CIDRs our rules hold on the fake, sorted (duplicates kept). */
  enforced(): Promise<string[]>;
}

export interface BenchFake {
  /** A new, empty target on the fake, and a provider for it as a new process would create it. */
  session(now: () => number): Promise<BenchSession>;
  close(): Promise<void>;
}

export interface BenchTarget {
  kind: string;
  /** The capacity the bench uses, for the table. */
  shape: string;
  /** Bans per family that the bench keeps active (at most the capacity). */
  bans: Record<Family, number>;
  /** What the table should say about this provider's call pattern (why it writes or reads more than the plan). */
  note?: string;
  /**
   * Writes a pass with `planned` rule changes cannot avoid beyond one per
   * rule: metadata the cloud keeps outside the rule (aws-nacl's expiry and
   * ownership tags). Default 0.
   */
  metadataWrites?: (planned: number) => number;
  start(): Promise<BenchFake>;
}

/** Sum of `byOp` entries whose key passes `pick`. */
export function sumOps(byOp: Record<string, number>, pick: (op: string) => boolean): number {
  let n = 0;
  for (const [op, v] of Object.entries(byOp)) if (pick(op)) n += v;
  return n;
}

export const OWNER = 'bench';
