/**
 * Lambda cold start: the time to import the bundled handler
 * (`build/lambda/index.mjs`, from `npm run build:lambda`) with one
 * provider, and the bundle's size.
 *
 * Each measurement is a fresh `node` process that imports the handler, then
 * what a target of one provider loads: the provider's module (through the
 * bundle's `loadProvider` when it exports one, else the registry's chunk
 * itself) and the SDK chunks its client imports lazily. The chunk graph is
 * read from the bundle's own import statements. Median of 5 runs per
 * provider (1 with `--smoke`). Prints one JSON line per provider, then one with a `markdown`
 * table. Asserts nothing about time.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const DIR = resolve('build/lambda');
const INDEX = 'index.mjs';
/** Runs per provider; a smoke run only checks that the measurement still works. */
const RUNS = process.argv.includes('--smoke') ? 1 : 5;
/** Issue 7: importing the Lambda handler with one provider. */
const TARGET_MS = 300;

interface ChildTimes {
  /** ms to import the handler (`index.mjs` and its static chunks). */
  handler: number;
  /** ms to load the provider module after that. */
  module: number;
  /** ms to import the SDK chunks the provider's client imports lazily. */
  sdk: number;
  /** ms from process start to everything loaded (Node's own start-up included). */
  sinceStart: number;
  via: 'loadProvider' | 'chunk' | 'none';
  /** Set when an import threw: the message's first line (a minified chunk makes the rest unreadable). */
  error?: string;
}

// --- Child: one fresh process, one measurement --------------------------------

async function child(args: string[]): Promise<void> {
  const [dir, provider, chunk, sdkJson] = args as [string, string, string, string];
  const url = (f: string) => pathToFileURL(join(dir, f)).href;
  const out: ChildTimes = { handler: NaN, module: NaN, sdk: NaN, sinceStart: NaN, via: 'none' };
  try {
    const t0 = performance.now();
    const handler = (await import(url(INDEX))) as { loadProvider?: (name: string) => Promise<unknown> };
    out.handler = performance.now() - t0;
    if (provider !== '-') {
      const t1 = performance.now();
      if (typeof handler.loadProvider === 'function') {
        await handler.loadProvider(provider);
        out.via = 'loadProvider';
      } else {
        await import(url(chunk));
        out.via = 'chunk';
      }
      out.module = performance.now() - t1;
    }
    const t2 = performance.now();
    await Promise.all((JSON.parse(sdkJson) as string[]).map((f) => import(url(f))));
    out.sdk = performance.now() - t2;
    out.sinceStart = performance.now();
  } catch (err) {
    out.error = String((err as Error)?.message ?? err).split('\n')[0]!.slice(0, 200);
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

// --- Parent: build if needed, read the chunk graph, run the children ----------

/** Newest modification time under `dir` (files only). */
function newest(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

function ensureBuilt(): boolean {
  const index = join(DIR, INDEX);
  const stale = !existsSync(index) || statSync(index).mtimeMs < Math.max(newest('src'), existsSync('package-lock.json') ? statSync('package-lock.json').mtimeMs : 0);
  // The same script as `npm run build:lambda`, with this same Node.
  if (stale) execFileSync(process.execPath, ['scripts/build-lambda.mjs'], { stdio: ['ignore', 'ignore', 'inherit'] });
  return stale;
}

interface Chunk {
  file: string;
  bytes: number;
  statics: string[];
  dynamics: string[];
}

function readGraph(): Map<string, Chunk> {
  const graph = new Map<string, Chunk>();
  for (const file of readdirSync(DIR).filter((f) => f.endsWith('.mjs'))) {
    const text = readFileSync(join(DIR, file), 'utf8');
    // esbuild writes chunk specifiers as `from"./x.mjs"`, `import"./x.mjs"` and `import("./x.mjs")`.
    const statics = [...text.matchAll(/\b(?:from|import)\s*["']\.\/([^"']+\.mjs)["']/g)].map((m) => m[1]!);
    const dynamics = [...text.matchAll(/\bimport\(\s*["']\.\/([^"']+\.mjs)["']\s*\)/g)].map((m) => m[1]!);
    graph.set(file, { file, bytes: Buffer.byteLength(text), statics: [...new Set(statics)], dynamics: [...new Set(dynamics)] });
  }
  return graph;
}

/** `from` and every chunk it imports statically, transitively. */
function staticClosure(graph: Map<string, Chunk>, from: string): Set<string> {
  const seen = new Set<string>();
  const todo = [from];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    for (const s of graph.get(f)?.statics ?? []) todo.push(s);
  }
  return seen;
}

/** Chunks `roots` can reach, statically or lazily, that are not in `loaded`. */
function reachable(graph: Map<string, Chunk>, roots: readonly string[], loaded: Set<string>): Set<string> {
  const seen = new Set<string>();
  const todo = [...roots];
  while (todo.length > 0) {
    const f = todo.pop()!;
    if (seen.has(f) || loaded.has(f)) continue;
    seen.add(f);
    const c = graph.get(f);
    if (c) todo.push(...c.statics, ...c.dynamics);
  }
  return seen;
}

const bytesOf = (graph: Map<string, Chunk>, files: Iterable<string>) => [...files].reduce((n, f) => n + (graph.get(f)?.bytes ?? 0), 0);
const mib = (b: number) => (b / 1024 / 1024).toFixed(2);

interface ProviderLoad {
  name: string;
  chunk: string;
  /** SDK entry chunks the provider's code imports lazily. */
  sdk: string[];
  /** Chunks a target of this provider loads beyond the handler's own. */
  loads: Set<string>;
  /** Chunks the SDKs may import later, on demand (not timed). */
  onDemand: Set<string>;
}

function providerLoads(graph: Map<string, Chunk>): { handler: Set<string>; providers: ProviderLoad[] } {
  const index = graph.get(INDEX);
  if (!index) throw new Error(`${DIR}/${INDEX} is missing`);
  const handler = staticClosure(graph, INDEX);
  const indexText = [...handler].map((f) => readFileSync(join(DIR, f), 'utf8')).join('\n');
  const providers: ProviderLoad[] = [];
  // The registry's lazy imports are the handler's only dynamic imports; esbuild names each chunk after the provider's folder.
  const registryChunks = [...handler].flatMap((f) => graph.get(f)!.dynamics);
  for (const chunk of registryChunks) {
    const m = /^(.+)-[A-Z0-9]{8}\.mjs$/.exec(chunk);
    const name = m?.[1];
    if (!name || !indexText.includes(`"${name}"`)) throw new Error(`cannot tell which provider ${chunk} is: the registry names no "${name}"`);
    const moduleChunks = new Set([...staticClosure(graph, chunk)].filter((f) => !handler.has(f)));
    const sdk = [...new Set([...moduleChunks].flatMap((f) => graph.get(f)!.dynamics))].filter((f) => !handler.has(f) && !moduleChunks.has(f));
    const loads = new Set(moduleChunks);
    for (const s of sdk) for (const f of staticClosure(graph, s)) if (!handler.has(f)) loads.add(f);
    const onDemand = reachable(graph, sdk.flatMap((s) => [...staticClosure(graph, s)].flatMap((f) => graph.get(f)!.dynamics)), new Set([...handler, ...loads]));
    providers.push({ name, chunk, sdk, loads, onDemand });
  }
  return { handler, providers: providers.sort((a, b) => a.name.localeCompare(b.name)) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function measure(self: string, p: ProviderLoad | undefined): ChildTimes {
  const out = execFileSync(process.execPath, [self, '--child', DIR, p?.name ?? '-', p?.chunk ?? '-', JSON.stringify(p?.sdk ?? [])], {
    encoding: 'utf8',
    // The bundle must not find this machine's cloud settings; the imports make no calls anyway.
    env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out.trim().split('\n').pop()!) as ChildTimes;
}

async function parent(): Promise<void> {
  const rebuilt = ensureBuilt();
  const graph = readGraph();
  const { handler, providers } = providerLoads(graph);
  const self = fileURLToPath(import.meta.url);
  const total = readdirSync(DIR).reduce((n, f) => n + statSync(join(DIR, f)).size, 0);

  const runs = new Map<string, ChildTimes[]>([['-', []], ...providers.map((p) => [p.name, []] as [string, ChildTimes[]])]);
  // Round-robin, so a noisy moment on this shared machine spreads over every provider.
  for (let i = 0; i < RUNS; i++) {
    runs.get('-')!.push(measure(self, undefined));
    for (const p of providers) runs.get(p.name)!.push(measure(self, p));
  }

  const rows: string[] = [];
  const handlerOnly = runs.get('-')!;
  rows.push(`| (handler only) | ${median(handlerOnly.map((r) => r.handler)).toFixed(0)} | – | – | ${median(handlerOnly.map((r) => r.handler)).toFixed(0)} | ${median(handlerOnly.map((r) => r.sinceStart)).toFixed(0)} | ${mib(bytesOf(graph, handler))} | – | – |`);
  const failures: string[] = [];
  for (const p of providers) {
    const r = runs.get(p.name)!;
    const failed = r.find((x) => x.error !== undefined);
    if (failed) {
      failures.push(`${p.name}: importing its chunks fails: \`${failed.error}\``);
      console.log(JSON.stringify({ bench: 'cold-start', provider: p.name, error: failed.error, chunks: { module: p.chunk, sdk: p.sdk } }));
      rows.push(`| ${p.name} | ${median(r.map((x) => x.handler)).toFixed(0)} | ${Number.isNaN(r[0]!.module) ? 'fails' : median(r.map((x) => x.module)).toFixed(0)} | fails | – | – | ${mib(bytesOf(graph, handler) + bytesOf(graph, p.loads))} | – | no (does not load) |`);
      continue;
    }
    const sum = r.map((x) => x.handler + x.module + x.sdk);
    const figures = {
      handlerMs: median(r.map((x) => x.handler)),
      moduleMs: median(r.map((x) => x.module)),
      sdkMs: median(r.map((x) => x.sdk)),
      totalMs: median(sum),
      sinceStartMs: median(r.map((x) => x.sinceStart)),
      via: r[0]!.via,
      loadedBytes: bytesOf(graph, handler) + bytesOf(graph, p.loads),
      providerBytes: bytesOf(graph, p.loads),
      onDemandBytes: bytesOf(graph, p.onDemand),
      chunks: { module: p.chunk, sdk: p.sdk },
    };
    console.log(JSON.stringify({ bench: 'cold-start', provider: p.name, runs: RUNS, ...figures, samplesMs: sum.map((x) => Math.round(x)) }));
    rows.push(
      `| ${p.name} | ${figures.handlerMs.toFixed(0)} | ${figures.moduleMs.toFixed(0)} | ${p.sdk.length ? figures.sdkMs.toFixed(0) : '– (no SDK)'} | ${figures.totalMs.toFixed(0)} | ${figures.sinceStartMs.toFixed(0)} | ${mib(figures.loadedBytes)} (${mib(figures.providerBytes)} for the provider) | ${p.onDemand.size ? mib(figures.onDemandBytes) : '–'} | ${figures.totalMs <= TARGET_MS ? 'yes' : 'no'} |`,
    );
  }
  const via = runs.get(providers[0]?.name ?? '-')?.[0]?.via;
  const markdown = [
    `## Lambda cold start (build/lambda, ${RUNS === 1 ? 'one fresh process' : `median of ${RUNS} fresh processes`} on node ${process.version})`,
    '',
    `Bundle: ${mib(total)} MiB in ${readdirSync(DIR).length} files${rebuilt ? ' (rebuilt for this run)' : ''}. The handler itself loads ${mib(bytesOf(graph, handler))} MiB; each provider's module and SDK load only when a target uses it.`,
    '',
    `| provider | handler import ms | provider module ms | SDK import ms | handler + provider ms | process start → ready ms | loaded MiB | more on demand MiB | ≤ ${TARGET_MS} ms |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---|',
    ...rows,
    '',
    `- The provider module is loaded ${via === 'loadProvider' ? "through the bundle's `loadProvider`" : "by importing the registry's chunk for it (the bundle exports no `loadProvider`)"}; the SDK chunks are the ones its client imports lazily. "More on demand" are chunks the SDK may import later, at call time (not timed).`,
    '- Process start → ready includes Node\'s own start-up; Lambda\'s runtime start-up differs.',
    ...failures.map((f) => `- ${f}`),
  ].join('\n');
  console.log(JSON.stringify({ bench: 'cold-start', bundleBytes: total, handlerBytes: bytesOf(graph, handler), markdown }));
}

if (process.argv[2] === '--child') await child(process.argv.slice(3));
else await parent();
