/**
 * Fault injection shared by the fake cloud servers. Deterministic: every
 * decision comes from a seeded PRNG, so a failing seed can be replayed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface FaultConfig {
  /** Fraction (0..1) of mutating calls answered with the cloud's throttling error. */
  throttleRate?: number;
  /** Fraction (0..1) of calls (reads too) answered with a 5xx. */
  serverErrorRate?: number;
  /** Delay added before answering every request, in ms. */
  latencyMs?: number;
  /** Fraction (0..1) of requests whose connection is destroyed without an answer. */
  dropRate?: number;
  /**
   * After this many successful mutating calls, every later request has its
   * connection destroyed: the client sees what it would see if it crashed
   * right after write k. Reset with `setFaults({})`.
   */
  failAfterWrites?: number;
  /** GCP/Azure: fraction (0..1) of long-running operations that end with an error. */
  lateFailureRate?: number;
  /** Seed of the PRNG (default 1). */
  seed?: number;
}

/** mulberry32: small, fast, good enough to spread faults. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type FaultVerdict = 'ok' | 'throttle' | 'server_error' | 'drop';

/** Per-server fault state. Call `decide` once per request. */
export class Faults {
  private cfg: FaultConfig = {};
  private random: () => number = prng(1);
  private successfulWrites = 0;
  /** Requests answered with an injected fault, by kind. */
  readonly injected: Record<FaultVerdict, number> = { ok: 0, throttle: 0, server_error: 0, drop: 0 };

  set(cfg: FaultConfig): void {
    this.cfg = { ...cfg };
    this.random = prng(cfg.seed ?? 1);
    this.successfulWrites = 0;
  }

  get config(): Readonly<FaultConfig> {
    return this.cfg;
  }

  /** Decides the fate of one request. `mutating` marks writes. */
  decide(mutating: boolean): FaultVerdict {
    const c = this.cfg;
    let v: FaultVerdict = 'ok';
    if (c.failAfterWrites !== undefined && this.successfulWrites >= c.failAfterWrites) v = 'drop';
    else if (c.dropRate && this.random() < c.dropRate) v = 'drop';
    else if (c.serverErrorRate && this.random() < c.serverErrorRate) v = 'server_error';
    else if (mutating && c.throttleRate && this.random() < c.throttleRate) v = 'throttle';
    this.injected[v]++;
    return v;
  }

  /** Record that a mutating call succeeded (counts toward `failAfterWrites`). */
  wrote(): void {
    this.successfulWrites++;
  }

  /** True when an operation should end with an error (GCP/Azure late failures). */
  lateFailure(): boolean {
    return !!this.cfg.lateFailureRate && this.random() < this.cfg.lateFailureRate;
  }

  async delay(): Promise<void> {
    if (this.cfg.latencyMs) await new Promise((r) => setTimeout(r, this.cfg.latencyMs));
  }
}

/** Destroys the connection without an answer, as a dropped connection or crashed peer would. */
export function dropConnection(req: IncomingMessage, res: ServerResponse): void {
  res.socket?.destroy();
  req.socket.destroy();
}

/** Reads a request body with a cap (fakes refuse absurd bodies like the real APIs). */
export async function readBody(req: IncomingMessage, limit = 10 * 1024 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of req) {
    n += (chunk as Buffer).length;
    if (n > limit) throw new Error('request body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}
