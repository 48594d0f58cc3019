/**
 * Decision pipeline benchmark: parse → desired → fit → plan for N decisions,
 * against a target that already holds the previous state (1% churn). Runs
 * in its own process so peak RSS is this workload's alone; the floor (a bare
 * JSON.parse of the same bytes) runs in a fresh process of its own (`floor`),
 * so both are measured cold. `run` then measures both again warm, in the same
 * process. The body is pushed to the reader in 64 KiB chunks, as the LAPI
 * source does with a response; `bench/stream.ts` measures the source itself
 * over HTTP. Prints one JSON line; asserts nothing about time.
 */
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { StreamBodyReader } from '../src/core/decisions.js';
import { computeDesired } from '../src/core/desired.js';
import { originClassOf } from '../src/core/decisions.js';
import { NetIndex, toNet } from '../src/core/cidr.js';
import { DEFAULT_GUARDS } from '../src/core/desired.js';
import { planTarget } from '../src/core/plan.js';
import type { Pool, Rule, TargetState } from '../src/core/types.js';
import { CHUNK_BYTES, body } from './lib/lapi-body.js';

const N = Number(process.argv[2] ?? 10_000);
const NOW = Date.UTC(2026, 10, 23, 8, 0, 0);
const opts = { source: 'bench', now: NOW };
const whitelist = new NetIndex(['11.0.0.5/32', '2001:db8::/64', '150.1.1.0/28'].map(toNet));

const phases = { parse: 0, desired: 0, plan: 0 };
/** Bytes the reader held for JSON.parse: the body without its `deleted` history. */
let held = 0;
function pipeline(text: Buffer, state: TargetState) {
  let t0 = performance.now();
  // Chunk by chunk, as the LAPI source reads a response.
  const reader = new StreamBodyReader(opts);
  for (let i = 0; i < text.length; i += CHUNK_BYTES) reader.push(text.subarray(i, i + CHUNK_BYTES));
  held = reader.heldBytes;
  const parsed = reader.finish();
  let t1 = performance.now();
  phases.parse = t1 - t0;
  const desired = computeDesired(parsed.decisions, whitelist, DEFAULT_GUARDS, NOW, originClassOf);
  t0 = performance.now();
  phases.desired = t0 - t1;
  const plan = planTarget({ target: 'bench', provider: 'file', bans: desired.bans, bansIndex: desired.index, state, now: NOW });
  t1 = performance.now();
  phases.plan = t1 - t0;
  return plan;
}

const RANGES = 5000;
const maxRules = Math.ceil((N * 1.2) / RANGES) + 8;
const pool: Pool = { id: 'main', families: [4, 6], cidrsPerRule: RANGES, maxRules, maxCidrs: maxRules * RANGES, freeSlots: Array.from({ length: maxRules }, (_, i) => `r${i}`), bucketMs: 3_600_000 * 24 };
const empty: TargetState = { pools: [pool], rules: [], foreign: [], conflicts: [], warnings: [] };

const mode = process.argv[3] ?? 'all';
const dir = process.argv[4] ?? 'build/bench';
const bodyPath = `${dir}/body-${N}.json`;
const statePath = `${dir}/state-${N}.json`;

if (mode === 'gen' || mode === 'all') {
  // Previous state: the plan of a snapshot that differs in 1% of its items.
  const previousBody = body(N, 0).replace(/"id":(\d*)01,"origin":"([^"]+)","scenario":"crowdsecurity\/ssh-bf","scope":"Ip","type":"ban","value":"(\d+)\./g, (_m, id, o, a) => `"id":${id}01,"origin":"${o}","scenario":"crowdsecurity/ssh-bf","scope":"Ip","type":"ban","value":"${200 + (Number(a) % 50)}.`);
  const prevPlan = pipeline(Buffer.from(previousBody), empty);
  const rules: Rule[] = prevPlan.changes.map((c) => ({ pool: c.pool, slot: c.slot, family: c.family, cidrs: c.after!.cidrs, expiresAt: c.after!.expiresAt }));
  writeFileSync(statePath, JSON.stringify(rules));
  writeFileSync(bodyPath, body(N, 0));
}

if (mode === 'clean') {
  unlinkSync(bodyPath);
  unlinkSync(statePath);
}

/** What a job process holds before it parses: the rules read from the target and the response bytes. */
function load(): { state: TargetState; text: Buffer } {
  const rules = JSON.parse(readFileSync(statePath, 'utf8')) as Rule[];
  const used = new Set(rules.map((r) => r.slot));
  const state: TargetState = { ...empty, pools: [{ ...pool, freeSlots: pool.freeSlots.filter((s) => !used.has(s)) }], rules };
  return { state, text: readFileSync(bodyPath) };
}

const gc = () => (globalThis as { gc?: () => void }).gc?.();

/** The floor: a bare JSON.parse of the same bytes (decoding included). */
function floor(text: Buffer): number {
  const t = performance.now();
  const parsed = JSON.parse(text.toString('utf8')) as { new: unknown[] };
  const ms = performance.now() - t;
  if (parsed.new.length !== N) throw new Error('bad synthetic body');
  return ms;
}

if (mode === 'floor') {
  // The floor in a fresh process that holds what the pipeline's process holds: the same conditions as the
  // pipeline's cold run (a floor measured after the pipeline gets a heap the pipeline already grew).
  const { text } = load();
  gc();
  console.log(JSON.stringify({ n: N, floorMs: Math.round(floor(text)) }));
}

if (mode === 'run' || mode === 'all') {
  const { state, text } = load();
  const bytes = text.length;
  gc();
  const rssBeforeMb = Math.round(process.memoryUsage().rss / 1024 / 1024);
  let t = performance.now();
  const plan = pipeline(text, state);
  const pipelineMs = performance.now() - t;
  const coldPhases = Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Math.round(v)]));
  const peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024);

  // Warm: the floor and the pipeline again in this process, as a daemon's later passes run
  // (after the objects above are collected, so they do not count in the peak RSS above).
  gc();
  const warmFloorMs = floor(text);
  gc();
  t = performance.now();
  pipeline(text, state);
  const warmPipelineMs = performance.now() - t;
  // `keep`: another run follows on the same files (the runner removes them with `clean`).
  if (process.argv[5] !== 'keep') {
    unlinkSync(bodyPath);
    unlinkSync(statePath);
  }
  console.log(
    JSON.stringify({
      n: N,
      bytes,
      heldBytes: held,
      pipelineMs: Math.round(pipelineMs),
      phasesMs: coldPhases,
      warmFloorMs: Math.round(warmFloorMs),
      warmPipelineMs: Math.round(warmPipelineMs),
      peakRssMb,
      rssBeforeMb,
      enforced: plan.summary.enforced,
      changes: plan.changes.length,
      changedCidrs: plan.changes.reduce((n, c) => n + c.added.length + c.removed.length, 0),
    }),
  );
}
