/**
 * Configuration: YAML with `${ENV}` expansion, or environment variables
 * alone (Lambda, Cloud Run). Validated at startup; every error names the key,
 * what was expected and what was found.
 *
 * Sources of configuration, later ones win:
 * 1. the YAML file given with `--config` (or `CLOUD_BOUNCER_CONFIG_FILE`),
 *    or inline YAML/JSON in `CLOUD_BOUNCER_CONFIG`;
 * 2. `CLOUD_BOUNCER__<key>__<key>…` variables, e.g.
 *    `CLOUD_BOUNCER__TARGETS__0__REGION=eu-west-1` (keys lower-cased, numbers
 *    index lists, values parsed as YAML scalars).
 *
 * `${VAR}` and `${VAR:-default}` are expanded inside string values (after
 * parsing, so a value can never inject YAML). A missing variable without a
 * default is an error naming the key.
 */
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './core/errors.js';
import { OWNER_PATTERN } from './core/marker.js';
import { DEFAULT_ORIGIN_CLASSES } from './core/decisions.js';
import { LOG_LEVELS } from './log.js';
import { cidr, duration } from './schema.js';
import { lapiSourceSchema } from './sources/lapi.js';
import { fileSourceSchema } from './sources/file.js';
import { loadProvider, providerNames } from './providers/registry.js';

const targetCommonSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'expected a name of letters, digits, dot, dash or underscore'),
    provider: z.string(),
    /** Writes allowed per run for this target; what is left converges on the next run. */
    max_writes_per_run: z.number().int().min(1).max(100_000).default(500),
  })
  .loose();

const sourceSchema = z.discriminatedUnion('type', [lapiSourceSchema, fileSourceSchema]);

export const configSchema = z
  .object({
    owner: z.string().regex(OWNER_PATTERN, 'expected 1-30 lower-case letters, digits or dashes').default('default'),
    log_level: z.enum(LOG_LEVELS).default('info'),
    sources: z.array(z.unknown()).min(1, 'expected at least one source'),
    whitelist: z
      .object({
        cidrs: z.array(cidr()).default([]),
        hostnames: z.array(z.string().regex(/^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$/, 'expected a DNS hostname')).default([]),
      })
      .strict()
      .default({ cidrs: [], hostnames: [] }),
    /** Admin ranges that must never be banned (keep your own access). Honoured before anything else. */
    never_ban: z.array(cidr()).default([]),
    guards: z
      .object({
        // Never 0: a /0 deny rule cuts off every address (DESIGN: "a 0.0.0.0/0 ban is never written").
        min_prefix_v4: z.number().int().min(1).max(32).default(16),
        min_prefix_v6: z.number().int().min(1).max(128).default(48),
        max_ttl: duration().default(7 * 24 * 3_600_000),
      })
      .strict()
      .default({ min_prefix_v4: 16, min_prefix_v6: 48, max_ttl: 7 * 24 * 3_600_000 }),
    priority: z
      .object({
        manual_origins: z.array(z.string()).default(DEFAULT_ORIGIN_CLASSES.manual),
        local_origins: z.array(z.string()).default(DEFAULT_ORIGIN_CLASSES.local),
      })
      .strict()
      .default({ manual_origins: DEFAULT_ORIGIN_CLASSES.manual, local_origins: DEFAULT_ORIGIN_CLASSES.local }),
    expiry: z
      .object({ refresh_margin: duration().default(600_000) })
      .strict()
      .default({ refresh_margin: 600_000 }),
    targets: z.array(targetCommonSchema).min(1, 'expected at least one target'),
    daemon: z
      .object({
        interval: duration().default(60_000),
        listen: z
          .string()
          .regex(/^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, like "127.0.0.1:9090" or "[::1]:9090"')
          .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65_535, 'expected a port from 0 to 65535 (0: any free port)')
          .default('127.0.0.1:9090'),
        /** Let LAPI sources poll deltas between full resyncs. */
        delta: z.boolean().default(true),
      })
      .strict()
      .default({ interval: 60_000, listen: '127.0.0.1:9090', delta: true }),
  })
  .strict();

type Parsed = z.infer<typeof configSchema>;
export type SourceConfig = z.infer<typeof sourceSchema>;

export interface TargetConfig {
  name: string;
  provider: string;
  max_writes_per_run: number;
  /** The provider-specific keys, validated by the provider's schema. */
  settings: unknown;
}

export interface Config extends Omit<Parsed, 'sources' | 'targets'> {
  sources: SourceConfig[];
  targets: TargetConfig[];
}

// ---------------------------------------------------------------------------

function describe(v: unknown): string {
  if (v === undefined) return 'nothing (the key is missing)';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return `${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)} (string)`;
  return `${String(v)} (${typeof v})`;
}

function keyPath(path: ReadonlyArray<PropertyKey>, prefix = ''): string {
  let out = prefix;
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(root)';
}

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let v: unknown = root;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/** Turns the first zod issue into a ConfigError naming the key, what was expected and what was found. */
export function toConfigError(error: z.ZodError, input: unknown, prefix = ''): ConfigError {
  const issue = error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = keyPath([...issue.path, issue.keys[0]!], prefix);
    return new ConfigError(key, `unknown key (check the spelling; see the config reference in README.md)`);
  }
  if (issue.code === 'invalid_union') {
    // Report the most specific branch error.
    const branches = (issue as unknown as { errors: z.core.$ZodIssue[][] }).errors ?? [];
    const best = branches.map((b) => b[0]).filter((b): b is z.core.$ZodIssue => !!b).sort((a, b) => b.path.length - a.path.length)[0];
    if (best) return toConfigError(new z.ZodError([{ ...best, path: [...issue.path, ...best.path] }]), input, prefix);
  }
  const key = keyPath(issue.path, prefix);
  // A secret of the wrong type (an all-digit key is a number to YAML) is described by its type only.
  const secret = SECRET_KEYS.has(String(issue.path.at(-1)));
  const found = secret ? undefined : valueAt(input, issue.path);
  if (secret && issue.code === 'invalid_type') return new ConfigError(key, `expected ${issue.expected}, got a ${typeof valueAt(input, issue.path)} (value not shown: it is a secret; quote it in YAML)`);
  if (issue.code === 'invalid_type') return new ConfigError(key, `expected ${issue.expected}, got ${describe(found)}`);
  if ((issue.code === 'too_small' || issue.code === 'too_big') && /^Too (small|big)/.test(issue.message)) {
    // zod's own wording ("Too small: expected number to be >=1") in the config's terms.
    const b = issue as { origin?: string; minimum?: number | bigint; maximum?: number | bigint; inclusive?: boolean };
    const small = issue.code === 'too_small';
    const bound = `${small ? '>' : '<'}${b.inclusive === false ? '' : '='} ${String(small ? b.minimum : b.maximum)}`;
    const what = b.origin === 'array' ? `a list of ${bound} items` : b.origin === 'string' ? `text of ${bound} characters` : `a number ${bound}`;
    return new ConfigError(key, `expected ${what}, got ${describe(found)}`);
  }
  return new ConfigError(key, `${issue.message}${found !== undefined && issue.code !== 'custom' ? `, got ${describe(found)}` : ''}`);
}

const SECRET_KEYS = new Set(['api_key', 'token', 'password']);

/** List indexes in CLOUD_BOUNCER__* names; a larger one is a typo, and would build a huge sparse list. */
const MAX_ENV_INDEX = 999;

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Expands `${VAR}` / `${VAR:-default}` in every string value. */
export function expandEnv(value: unknown, env: NodeJS.ProcessEnv, path: PropertyKey[] = [], keep?: (path: PropertyKey[]) => boolean): unknown {
  if (typeof value === 'string') {
    return value.replace(ENV_REF, (ref: string, name: string, def: string | undefined) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (def !== undefined) return def;
      // A command that never reads this value (status and flush never contact a source) keeps the reference as text.
      if (keep?.(path)) return ref;
      throw new ConfigError(keyPath(path), `environment variable ${name} is not set (referenced as \${${name}})`);
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, [...path, i], keep));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnv(v, env, [...path, k], keep)]));
  }
  return value;
}

/** Applies `CLOUD_BOUNCER__A__B__0__C=value` overrides onto `base`. */
export function applyEnvOverrides(base: Record<string, unknown>, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const root = structuredClone(base);
  const keys = Object.keys(env)
    .filter((k) => k.startsWith('CLOUD_BOUNCER__'))
    // Numeric order for list indices (…__2__ before …__10__), so items are appended in order.
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  for (const name of keys) {
    const parts = name.slice('CLOUD_BOUNCER__'.length).split('__').map((p) => p.toLowerCase());
    if (parts.some((p) => p === '')) throw new ConfigError(name, 'malformed variable name (empty key between "__")');
    let node: Record<string, unknown> | unknown[] = root;
    parts.forEach((part, i) => {
      const last = i === parts.length - 1;
      const idx = /^\d+$/.test(part) ? Number(part) : undefined;
      if (idx !== undefined && idx > MAX_ENV_INDEX) throw new ConfigError(name, `list index ${idx} is too large (at most ${MAX_ENV_INDEX})`);
      const key = idx ?? part;
      if (idx !== undefined && Array.isArray(node) && idx > node.length) {
        const list = parts.slice(0, i).join('.') || 'the config';
        throw new ConfigError(name, `list index ${idx} skips items: ${list} has ${node.length} item${node.length === 1 ? '' : 's'}, so the next one is index ${node.length}`);
      }
      if (last) {
        let v: unknown;
        try {
          v = parseYaml(env[name] ?? '');
        } catch {
          v = env[name];
        }
        (node as Record<PropertyKey, unknown>)[key] = v;
        return;
      }
      const nextIsIndex = /^\d+$/.test(parts[i + 1]!);
      const cur = (node as Record<PropertyKey, unknown>)[key];
      if (cur === undefined || cur === null || typeof cur !== 'object') {
        (node as Record<PropertyKey, unknown>)[key] = nextIsIndex ? [] : {};
      }
      node = (node as Record<PropertyKey, unknown>)[key] as Record<string, unknown>;
    });
  }
  return root;
}

export interface LoadOptions {
  path?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /**
   * The command reads no source (status, flush): a `${VAR}` under `sources` whose variable is unset
   * is left as text instead of failing, and the sources are not validated (the config returned has
   * none), so a lost LAPI secret or URL never blocks removing rules.
   */
  sourcesUnused?: boolean | undefined;
}

/** Reads the raw config document (before validation). */
export async function readRawConfig(opts: LoadOptions): Promise<Record<string, unknown>> {
  const env = opts.env ?? process.env;
  const path = opts.path ?? env.CLOUD_BOUNCER_CONFIG_FILE;
  let text: string | undefined;
  let where = 'CLOUD_BOUNCER_CONFIG';
  if (path) {
    where = path;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new ConfigError(opts.path ? '--config' : 'CLOUD_BOUNCER_CONFIG_FILE', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  } else if (env.CLOUD_BOUNCER_CONFIG) {
    text = env.CLOUD_BOUNCER_CONFIG;
  }
  let doc: unknown = {};
  if (text !== undefined) {
    try {
      doc = parseYaml(text) ?? {};
    } catch (err) {
      throw new ConfigError(where, `not valid YAML: ${(err as Error).message.split('\n')[0]!.replace(/:\s*$/, '')}`, { cause: err });
    }
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new ConfigError(where, `expected a mapping at the top level, got ${describe(doc)}`);
  }
  const withEnv = applyEnvOverrides(doc as Record<string, unknown>, env);
  if (!path && !env.CLOUD_BOUNCER_CONFIG && Object.keys(withEnv).length === 0) {
    throw new ConfigError('--config', 'no configuration: pass --config FILE, or set CLOUD_BOUNCER_CONFIG or CLOUD_BOUNCER__* variables');
  }
  return expandEnv(withEnv, env, [], opts.sourcesUnused ? (p) => p[0] === 'sources' : undefined) as Record<string, unknown>;
}

/** Validates a raw config document, provider keys included. */
export async function validateConfig(raw: unknown, opts: { skipSources?: boolean | undefined } = {}): Promise<Config> {
  const res = configSchema.safeParse(raw);
  if (!res.success) throw toConfigError(res.error, raw);
  const parsed = res.data;
  const sources: SourceConfig[] = [];
  // (status and flush read no source: theirs are not validated, and the config they get has none.)
  if (!opts.skipSources) parsed.sources.forEach((s, i) => {
    const r = sourceSchema.safeParse(s);
    if (!r.success) throw toConfigError(r.error, s, `sources[${i}]`);
    sources.push(r.data);
  });
  const dup = (names: string[]) => names.find((n, i) => names.indexOf(n) !== i);
  const dupSource = dup(sources.map((s) => s.name));
  if (dupSource) throw new ConfigError('sources', `source name ${JSON.stringify(dupSource)} is used twice; names must be unique`);
  const dupTarget = dup(parsed.targets.map((t) => t.name));
  if (dupTarget) throw new ConfigError('targets', `target name ${JSON.stringify(dupTarget)} is used twice; names must be unique`);

  const targets: TargetConfig[] = [];
  const written = new Map<string, string>();
  for (const [i, t] of parsed.targets.entries()) {
    if (!providerNames().includes(t.provider)) {
      throw new ConfigError(`targets[${i}].provider`, `unknown provider ${JSON.stringify(t.provider)}; expected one of ${providerNames().join(', ')}`);
    }
    const mod = await loadProvider(t.provider);
    const { name, provider, max_writes_per_run, ...rest } = t;
    const r = mod.configSchema.safeParse(rest);
    if (!r.success) throw toConfigError(r.error, rest, `targets[${i}]`);
    targets.push({ name, provider, max_writes_per_run, settings: r.data });
    // Every target of a config writes as its one owner: two on the same resource remove each other's rules.
    const res = mod.resource?.(r.data);
    if (res) {
      const key = `${provider}\u0000${res.key}`;
      const first = written.get(key);
      if (first !== undefined) {
        throw new ConfigError(
          `targets[${i}]`,
          `target ${JSON.stringify(name)} writes to ${res.what}, as target ${JSON.stringify(first)} does, with the same owner (${parsed.owner}): each would remove the other's rules; use ${res.merge ?? 'one target'}, or run a second bouncer with its own owner`,
        );
      }
      written.set(key, name);
    }
  }
  return { ...parsed, sources, targets };
}

export async function loadConfig(opts: LoadOptions): Promise<Config> {
  return validateConfig(await readRawConfig(opts), { skipSources: opts.sourcesUnused });
}
