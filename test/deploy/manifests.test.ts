/**
 * Every file in deploy/ is checked here, offline:
 *
 * - Kubernetes: each kustomization (base, overlays) is rendered, and every
 *   object is validated against the Kubernetes OpenAPI schemas bundled in
 *   `kubernetes-models`, unknown fields included; the pods must meet the
 *   "restricted" Pod Security Standard plus our own rules (read-only root,
 *   resources, one writer per target); each container's command line and
 *   mounted config are run through the real `cloud-bouncer validate`.
 * - SAM template: parsed with the intrinsic tags; resource types, references,
 *   the schedule, the timeout and its deadline margin, the role (no wildcard
 *   actions, the same EC2 statements as deploy/iam/aws-nacl-policy.json), the
 *   Secrets Manager reference, and the inline config through the CLI.
 * - Cloud Run: the job against the Cloud Run Admin API v1 field list, the
 *   scheduler flags file against the gcloud command's flags, and the link
 *   between both (job name, project, region, timeout below the period).
 * - Dockerfile: syntax (dockerfile-utils), stages, pinned bases, non-root
 *   user, entrypoint = the package's bin, what the final stage copies, and the
 *   .dockerignore.
 * - IAM files (written with the providers): structure and no wildcards.
 * - Markdown: every relative link resolves.
 *
 * A file in deploy/ that no rule covers fails the run. Where `kubectl`,
 * `cfn-lint` or the Google Cloud SDK are installed, their own validators run
 * as well (reported as skipped otherwise).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DockerfileParser, type Instruction, type ModifiableInstruction } from 'dockerfile-ast';
import { validate as lintDockerfile } from 'dockerfile-utils';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { main } from '../../src/cli.js';
import { loadConfig, type Config } from '../../src/config.js';
import { evaluate, parseTemplate, PSEUDO_PARAMETERS, references, type EvalContext, type Template } from './cfn.js';
import { dig, objectId, parseK8sYaml, podSpecOf, readKustomization, renderKustomization, splitImage, validateK8s, type K8sObject, type Render } from './k8s.js';

const ROOT = realpathSync(fileURLToPath(new URL('../../', import.meta.url)));
const DEPLOY = join(ROOT, 'deploy');
const read = (rel: string) => readFileSync(join(ROOT, rel), 'utf8');
const pkg = JSON.parse(read('package.json')) as { version: string; bin: Record<string, string> };

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [relative(ROOT, p)];
  });
}
const DEPLOY_FILES = walk(DEPLOY).sort();

const asArray = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

// ---------------------------------------------------------------------------
// The command line the manifests call: its commands, parsed from the CLI's
// own usage text, and a way to run any manifest's command line as `validate`.

const COMMANDS = (() => {
  const src = read('src/cli.ts');
  const usage = src.slice(src.indexOf('const USAGE'), src.indexOf('`;', src.indexOf('const USAGE')));
  const block = usage.slice(usage.indexOf('Commands:'), usage.indexOf('Options:'));
  return [...block.matchAll(/^ {2}([a-z]+) {2,}/gm)].map((m) => m[1]!);
})();

const silent = pino({ level: 'silent' });

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a manifest's command line with its command replaced by `validate`,
 * files it reads mapped to temporary copies, and `$(VAR)` expanded the way
 * the kubelet does. Nothing is written to any target.
 */
async function validateCommandLine(
  args: readonly string[],
  opts: { env?: Record<string, string>; files?: ReadonlyMap<string, string>; secrets?: Iterable<string> } = {},
): Promise<CliRun> {
  const [command, ...rest] = args;
  if (!command || !COMMANDS.includes(command)) return { code: 1, stdout: '', stderr: `unknown command ${JSON.stringify(command)}; the CLI has ${COMMANDS.join(', ')}` };
  const dir = mkdtempSync(join(tmpdir(), 'cb-deploy-'));
  // Secret files the container has mounted (validate reads the key files a config names): each is a
  // file here, and the config and environment name it where it lies here.
  const moved: Array<[string, string]> = [];
  for (const [i, path] of [...(opts.secrets ?? [])].entries()) {
    const here = join(dir, `secret-${i}`);
    writeFileSync(here, 'test-key-0123456789abcdef\n');
    moved.push([path, here]);
  }
  const relocate = (text: string) => moved.reduce((t, [from, to]) => t.split(from).join(to), text);
  const env = Object.fromEntries(Object.entries(opts.env ?? {}).map(([k, v]) => [k, relocate(v)]));
  const argv = ['validate'];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string) => env[name] ?? m);
    argv.push(a);
    if ((a === '--config' || a === '-c') && i + 1 < rest.length) {
      const path = rest[++i]!;
      const content = opts.files?.get(path);
      if (content === undefined) return { code: 1, stdout: '', stderr: `--config ${path}: no such file is mounted in the container` };
      const tmp = join(dir, `config-${i}.yaml`);
      writeFileSync(tmp, relocate(content));
      argv.push(tmp);
    }
  }
  let stdout = '';
  let stderr = '';
  const code = await main(argv, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s), env, log: silent });
  return { code, stdout, stderr };
}

/** The config a manifest embeds, loaded by the real loader (for inspection). */
async function configFrom(text: string, env: Record<string, string> = {}): Promise<Config> {
  const dir = mkdtempSync(join(tmpdir(), 'cb-deploy-'));
  const p = join(dir, 'config.yaml');
  writeFileSync(p, text);
  return loadConfig({ path: p, env });
}

type LapiSettings = { api_key?: string; api_key_file?: string };

// ---------------------------------------------------------------------------
// Coverage: every file in deploy/ has a rule, and each rule's suite below
// checks every file it claims.

const RULES: Array<{ name: string; test: (p: string) => boolean }> = [
  { name: 'markdown links', test: (p) => p.endsWith('.md') },
  { name: 'kustomize render + Kubernetes schemas', test: (p) => p.startsWith('deploy/kubernetes/') && p.endsWith('.yaml') },
  { name: 'Dockerfile', test: (p) => p === 'deploy/docker/Dockerfile' },
  { name: '.dockerignore', test: (p) => p === 'deploy/docker/Dockerfile.dockerignore' },
  { name: 'SAM template', test: (p) => p === 'deploy/aws-lambda/template.yaml' },
  { name: 'Cloud Run job', test: (p) => p === 'deploy/gcp-cloud-run/job.yaml' },
  { name: 'Cloud Scheduler flags', test: (p) => p === 'deploy/gcp-cloud-run/scheduler-job.yaml' },
  { name: 'AWS IAM policy', test: (p) => /^deploy\/iam\/aws-[^/]+\.json$/.test(p) },
  { name: 'Azure role definition', test: (p) => /^deploy\/iam\/azure-[^/]+\.json$/.test(p) },
  { name: 'GCP custom role', test: (p) => /^deploy\/iam\/gcp-[^/]+\.yaml$/.test(p) },
];
const filesOf = (rule: string) => DEPLOY_FILES.filter((p) => RULES.find((r) => r.name === rule)!.test(p));

describe('deploy/', () => {
  it('has a check for every file', () => {
    // Prepare / Act
    const uncovered = DEPLOY_FILES.filter((p) => !RULES.some((r) => r.test(p)));

    // Assess
    expect(DEPLOY_FILES.length).toBeGreaterThan(10);
    expect(uncovered, 'files in deploy/ that no test checks: add a rule and a check in test/deploy/manifests.test.ts').toEqual([]);
  });

  it.each(filesOf('markdown links'))('%s: every relative link resolves', (file) => {
    const text = read(file);
    const links = [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((l) => !/^(https?:|mailto:|#)/.test(l));
    const broken = links.filter((l) => !existsSync(resolve(ROOT, dirname(file), l.split('#')[0]!)));
    expect(broken).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// Kubernetes

const KUSTOMIZATIONS = DEPLOY_FILES.filter((p) => p.startsWith('deploy/kubernetes/') && p.endsWith('/kustomization.yaml')).map((p) => dirname(p));
const WRITERS = new Set(['CronJob', 'Job', 'Deployment']);

interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  env?: Array<{ name: string; value?: string }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown>;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  livenessProbe?: { httpGet?: { path: string; port: number | string } };
  readinessProbe?: { httpGet?: { path: string; port: number | string } };
}

interface Volume {
  name: string;
  configMap?: { name: string; items?: Array<{ key: string; path: string }> };
  secret?: { secretName: string; items?: Array<{ key: string; path: string }>; defaultMode?: number };
  emptyDir?: Record<string, unknown>;
}

/** What a container sees on disk: configMap files with their content, secret files, emptyDir mounts. */
function mountedFiles(objects: readonly K8sObject[], pod: Record<string, unknown>, c: Container) {
  const volumes = (pod.volumes as Volume[] | undefined) ?? [];
  const files = new Map<string, string>();
  const secrets = new Set<string>();
  const emptyDirs = new Set<string>();
  const problems: string[] = [];
  for (const m of c.volumeMounts ?? []) {
    const v = volumes.find((x) => x.name === m.name);
    if (!v) {
      problems.push(`volumeMount ${m.name}: no such volume`);
      continue;
    }
    if (v.configMap) {
      const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === v.configMap!.name);
      if (!cm) {
        problems.push(`volume ${v.name}: ConfigMap ${v.configMap.name} is not part of the render`);
        continue;
      }
      const data = (cm.data as Record<string, string> | undefined) ?? {};
      const items = v.configMap.items ?? Object.keys(data).map((key) => ({ key, path: key }));
      for (const it of items) files.set(`${m.mountPath}/${it.path}`, data[it.key] ?? '');
    } else if (v.secret) {
      for (const it of v.secret.items ?? []) secrets.add(`${m.mountPath}/${it.path}`);
    } else if (v.emptyDir) {
      emptyDirs.add(m.mountPath);
    }
  }
  return { files, secrets, emptyDirs, problems };
}

/** The "restricted" Pod Security Standard (kubernetes.io/docs/concepts/security/pod-security-standards) plus our own rules. */
function podProblems(pod: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const psc = (pod.securityContext as Record<string, unknown> | undefined) ?? {};
  for (const k of ['hostNetwork', 'hostPID', 'hostIPC']) if (pod[k]) problems.push(`${k} is set`);
  for (const v of (pod.volumes as Array<Record<string, unknown>> | undefined) ?? []) {
    const type = Object.keys(v).find((k) => k !== 'name');
    if (!['configMap', 'secret', 'emptyDir', 'projected', 'downwardAPI'].includes(type ?? '')) problems.push(`volume ${String(v.name)} of type ${type} is not allowed`);
  }
  if (pod.automountServiceAccountToken !== false) problems.push('automountServiceAccountToken is not false (cloud-bouncer never calls the Kubernetes API)');
  if (!pod.serviceAccountName) problems.push('no serviceAccountName (the cloud identity is bound to it)');
  for (const c of (pod.containers as Container[] | undefined) ?? []) {
    const sc = c.securityContext ?? {};
    const where = `container ${c.name}`;
    if (sc.privileged) problems.push(`${where}: privileged`);
    if (sc.allowPrivilegeEscalation !== false) problems.push(`${where}: allowPrivilegeEscalation is not false`);
    if (sc.readOnlyRootFilesystem !== true) problems.push(`${where}: readOnlyRootFilesystem is not true`);
    if ((sc.runAsNonRoot ?? psc.runAsNonRoot) !== true) problems.push(`${where}: runAsNonRoot is not true`);
    const uid = sc.runAsUser ?? psc.runAsUser;
    if (uid === 0) problems.push(`${where}: runAsUser 0`);
    const caps = (sc.capabilities as { drop?: string[]; add?: string[] } | undefined) ?? {};
    if (!caps.drop?.includes('ALL')) problems.push(`${where}: capabilities do not drop ALL`);
    if ((caps.add ?? []).some((a) => a !== 'NET_BIND_SERVICE')) problems.push(`${where}: capabilities added`);
    const seccomp = (dig(sc, 'seccompProfile', 'type') ?? dig(psc, 'seccompProfile', 'type')) as string | undefined;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') problems.push(`${where}: seccompProfile is not RuntimeDefault`);
    for (const kind of ['requests', 'limits'] as const) {
      for (const r of ['cpu', 'memory']) if (!c.resources?.[kind]?.[r]) problems.push(`${where}: no ${r} ${kind}`);
    }
    const img = splitImage(c.image);
    if (!img.digest && (!img.tag || img.tag === 'latest')) problems.push(`${where}: image ${c.image} is not pinned`);
    if (!img.name.includes('/')) problems.push(`${where}: image ${c.image} has no registry (set images: in the kustomization)`);
  }
  return problems;
}

/** The uid the image runs as (USER in the Dockerfile's final stage). */
function imageUser(): { uid: number; gid: number } {
  const df = DockerfileParser.parse(read('deploy/docker/Dockerfile'));
  const froms = df.getFROMs();
  const last = froms[froms.length - 1]!;
  const users = df.getInstructions().filter((i) => i.getKeyword() === 'USER' && i.getRange().start.line > last.getRange().start.line);
  const [uid, gid] = (users[users.length - 1]?.getArgumentsContent() ?? '').split(':');
  return { uid: Number(uid), gid: Number(gid ?? uid) };
}

const HAS_KUBECTL = spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0;

/** Renders every kustomization once; a failed render is kept as its error and reported by its own test. */
const RENDERS = new Map<string, Render | Error>(
  KUSTOMIZATIONS.map((dir) => {
    try {
      return [dir, renderKustomization(join(ROOT, dir))];
    } catch (err) {
      return [dir, err as Error];
    }
  }),
);
const renders = {
  keys: () => RENDERS.keys(),
  values: () => [...RENDERS.values()].filter((r): r is Render => !(r instanceof Error)),
  get(dir: string): Render {
    const r = RENDERS.get(dir);
    if (!r) throw new Error(`${dir}: no such kustomization`);
    if (r instanceof Error) throw r;
    return r;
  },
};

describe('deploy/kubernetes', () => {

  it('has a base and the daemon and sharded overlays', () => {
    expect([...renders.keys()].sort()).toEqual(['deploy/kubernetes/base', 'deploy/kubernetes/overlays/daemon', 'deploy/kubernetes/overlays/sharded']);
  });

  it('reads every YAML file under deploy/kubernetes in some kustomization (resource or patch)', () => {
    // Prepare
    const used = new Set([...renders.values()].flatMap((r) => [...r.files]).map((f) => relative(ROOT, f)));

    // Act
    const unused = filesOf('kustomize render + Kubernetes schemas').filter((p) => !used.has(p));

    // Assess
    expect(unused).toEqual([]);
  });

  it('every resource and patch listed in a kustomization exists', () => {
    for (const dir of KUSTOMIZATIONS) {
      const k = readKustomization(join(ROOT, dir));
      for (const r of k.resources ?? []) expect(existsSync(join(ROOT, dir, r)), `${dir}: resource ${r}`).toBe(true);
      for (const p of k.patches ?? []) expect(existsSync(join(ROOT, dir, p.path)), `${dir}: patch ${p.path}`).toBe(true);
    }
  });

  it.each(KUSTOMIZATIONS)('%s renders: every patch matches an existing resource by kind and name', (dir) => {
    const r = RENDERS.get(dir);
    expect(r instanceof Error ? r.message : null).toBeNull();
  });

  it('the render refuses a patch that names no existing resource (it can fail)', () => {
    // Prepare: an overlay of the real base whose patch names a CronJob that does not exist.
    const dir = mkdtempSync(join(tmpdir(), 'cb-kustomize-'));
    const base = relative(dir, join(ROOT, 'deploy/kubernetes/base'));
    writeFileSync(join(dir, 'kustomization.yaml'), `apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [${base}]\npatches:\n  - path: p.yaml\n`);
    writeFileSync(join(dir, 'p.yaml'), '$patch: delete\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: cloud-bouncr\n');

    // Act / Assess
    expect(() => renderKustomization(dir)).toThrow(/batch\/v1 CronJob\/cloud-bouncr matches 0 resources, expected 1/);
  });

  it.each(KUSTOMIZATIONS)('%s renders to objects that pass the Kubernetes schemas, unknown fields included', (dir) => {
    const { objects } = renders.get(dir);
    const problems = objects.flatMap((o) => validateK8s(o).map((p) => `${objectId(o)} ${p}`));
    expect(problems).toEqual([]);
    expect(new Set(objects.map(objectId)).size, 'duplicate objects').toBe(objects.length);
  });

  it.each(KUSTOMIZATIONS)('%s puts every namespaced object in the cloud-bouncer namespace, with the image pinned to the package version', (dir) => {
    const { objects } = renders.get(dir);
    for (const o of objects) if (o.kind !== 'Namespace') expect(o.metadata.namespace, objectId(o)).toBe('cloud-bouncer');
    const images = objects.flatMap((o) => ((podSpecOf(o)?.containers as Container[] | undefined) ?? []).map((c) => splitImage(c.image)));
    expect(images.length).toBeGreaterThan(0);
    for (const i of images) expect(i.tag, 'the image tag follows package.json').toBe(pkg.version);
  });

  it.each(KUSTOMIZATIONS)('%s has exactly one writer workload, and its pods meet the restricted Pod Security Standard', (dir) => {
    // Prepare
    const { objects } = renders.get(dir);
    const writers = objects.filter((o) => WRITERS.has(o.kind));
    const user = imageUser();

    // Act
    const problems = writers.flatMap((o) => podProblems(podSpecOf(o)!).map((p) => `${objectId(o)}: ${p}`));

    // Assess
    expect(writers.map((o) => o.kind), 'two writers on one target must never run at once').toHaveLength(1);
    expect(problems).toEqual([]);
    const pod = podSpecOf(writers[0]!)!;
    expect(dig(pod, 'securityContext', 'runAsUser'), 'runAsUser is the image user').toBe(user.uid);
    expect(dig(pod, 'securityContext', 'fsGroup'), 'fsGroup lets the image user read the secret').toBe(user.gid);
    const sa = objects.find((o) => o.kind === 'ServiceAccount' && o.metadata.name === pod.serviceAccountName);
    expect(sa, `ServiceAccount ${String(pod.serviceAccountName)}`).toBeDefined();
  });

  it.each(KUSTOMIZATIONS)("%s: each container's command line and mounted config pass `cloud-bouncer validate`, the API key comes from the mounted Secret and /tmp is writable", async (dir) => {
    const { objects } = renders.get(dir);
    for (const w of objects.filter((o) => WRITERS.has(o.kind))) {
      const pod = podSpecOf(w)!;
      for (const c of pod.containers as Container[]) {
        // Prepare
        const mounts = mountedFiles(objects, pod, c);
        const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value ?? '']));
        const indexed = dig(w, 'spec', 'jobTemplate', 'spec', 'completionMode') === 'Indexed';
        if (indexed) env.JOB_COMPLETION_INDEX = '0';

        // Act
        const run = await validateCommandLine(c.args ?? [], { env, files: mounts.files, secrets: mounts.secrets });

        // Assess
        expect(mounts.problems).toEqual([]);
        expect(c.command, 'the image ENTRYPOINT is the CLI; only args are set').toBeUndefined();
        expect(run.stderr).toBe('');
        expect(run.code).toBe(0);
        const cfgPath = c.args![c.args!.indexOf('--config') + 1]!;
        const config = await configFrom(mounts.files.get(cfgPath)!);
        for (const s of config.sources) {
          const lapi = s as LapiSettings;
          expect(lapi.api_key, `${s.name}: no API key in a ConfigMap`).toBeUndefined();
          if ('api_key_file' in s) expect([...mounts.secrets], `${s.name}: api_key_file is a mounted secret file`).toContain(lapi.api_key_file);
        }
        expect([...mounts.emptyDirs]).toContain('/tmp');
        expect(env.HOME).toBe('/tmp');
      }
    }
  });

  it('base: the CronJob forbids overlapping runs and bounds every run', () => {
    const cron = renders.get('deploy/kubernetes/base').objects.find((o) => o.kind === 'CronJob')!;
    const spec = cron.spec as Record<string, unknown>;
    expect(spec.concurrencyPolicy).toBe('Forbid');
    expect(spec.startingDeadlineSeconds).toBeGreaterThan(0);
    expect(spec.successfulJobsHistoryLimit).toBeGreaterThanOrEqual(0);
    expect(dig(spec, 'jobTemplate', 'spec', 'backoffLimit')).toBe(0);
    expect(dig(spec, 'jobTemplate', 'spec', 'activeDeadlineSeconds')).toBeGreaterThan(0);
    expect(dig(spec, 'jobTemplate', 'spec', 'template', 'spec', 'restartPolicy')).toBe('Never');
    expect(((podSpecOf(cron)!.containers as Container[])[0]!.args ?? [])[0]).toBe('apply');
  });

  it('daemon: a single Recreate replica runs `run`, scraped on /metrics and probed on /healthz at daemon.listen', async () => {
    // Prepare
    const { objects } = renders.get('deploy/kubernetes/overlays/daemon');
    const dep = objects.find((o) => o.kind === 'Deployment')!;
    const pod = podSpecOf(dep)!;
    const c = (pod.containers as Container[])[0]!;
    const mounts = mountedFiles(objects, pod, c);
    const config = await configFrom(mounts.files.get(c.args![c.args!.indexOf('--config') + 1]!)!);
    const [host, port] = [config.daemon.listen.slice(0, config.daemon.listen.lastIndexOf(':')), Number(config.daemon.listen.slice(config.daemon.listen.lastIndexOf(':') + 1))];
    const portOf = (p: number | string | undefined) => (typeof p === 'number' ? p : c.ports?.find((x) => x.name === p)?.containerPort);
    const annotations = dig(dep, 'spec', 'template', 'metadata', 'annotations') as Record<string, string>;

    // Assess
    expect(dig(dep, 'spec', 'replicas')).toBe(1);
    expect(dig(dep, 'spec', 'strategy', 'type')).toBe('Recreate');
    expect(c.args![0]).toBe('run');
    expect(['0.0.0.0', '[::]', '::'], 'daemon.listen must be reachable from the kubelet and Prometheus').toContain(host);
    expect(c.ports?.map((p) => p.containerPort)).toContain(port);
    expect(annotations['prometheus.io/scrape']).toBe('true');
    expect(Number(annotations['prometheus.io/port'])).toBe(port);
    expect(annotations['prometheus.io/path']).toBe('/metrics');
    for (const probe of [c.livenessProbe, c.readinessProbe]) {
      expect(probe?.httpGet?.path).toBe('/healthz');
      expect(portOf(probe?.httpGet?.port)).toBe(port);
    }
    expect(dig(pod, 'terminationGracePeriodSeconds')).toBeGreaterThanOrEqual(30);
  });

  it('sharded: one Indexed Job completion per configured target, selected with --target-index $(JOB_COMPLETION_INDEX)', async () => {
    // Prepare
    const { objects } = renders.get('deploy/kubernetes/overlays/sharded');
    const cron = objects.find((o) => o.kind === 'CronJob')!;
    const job = dig(cron, 'spec', 'jobTemplate', 'spec') as Record<string, unknown>;
    const pod = podSpecOf(cron)!;
    const c = (pod.containers as Container[])[0]!;
    const mounts = mountedFiles(objects, pod, c);
    const config = await configFrom(mounts.files.get(c.args![c.args!.indexOf('--config') + 1]!)!);
    const completions = job.completions as number;

    // Act: every index the Job hands out, and the first one past it.
    const runs = await Promise.all(Array.from({ length: completions + 1 }, (_, i) => validateCommandLine(c.args!, { env: { HOME: '/tmp', JOB_COMPLETION_INDEX: String(i) }, files: mounts.files, secrets: mounts.secrets })));

    // Assess
    expect(job.completionMode).toBe('Indexed');
    expect(job.parallelism).toBe(completions);
    expect(job.backoffLimit, 'a job-wide backoffLimit would stop every shard on the first failure').toBeUndefined();
    expect(job.backoffLimitPerIndex).toBe(0);
    expect(c.args!.slice(c.args!.indexOf('--target-index'), c.args!.indexOf('--target-index') + 2)).toEqual(['--target-index', '$(JOB_COMPLETION_INDEX)']);
    expect(config.targets.length).toBe(completions);
    expect(runs.slice(0, completions).map((r) => r.code)).toEqual(Array(completions).fill(0));
    expect(runs[completions]!.code).toBe(1);
    expect(runs[completions]!.stderr).toMatch(/--target-index: index \d+ is out of range/);
  });

  it('the schema check refuses unknown fields, bad values and unknown kinds (it can fail)', () => {
    const cron = structuredClone(renders.get('deploy/kubernetes/base').objects.find((o) => o.kind === 'CronJob')!);
    expect(validateK8s(cron)).toEqual([]);
    const typo = structuredClone(cron) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    typo.spec.startingDeadlineSecond = 60;
    typo.spec.jobTemplate.spec.template.spec.containers[0].securityContext.readOnlyRootFileSystem = true;
    expect(validateK8s(typo).sort()).toEqual(['/spec/jobTemplate/spec/template/spec/containers/0/securityContext/readOnlyRootFileSystem: unknown field', '/spec/startingDeadlineSecond: unknown field']);
    const bad = structuredClone(cron) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    bad.spec.concurrencyPolicy = 'Never';
    expect(validateK8s(bad).join('\n')).toMatch(/\/spec\/concurrencyPolicy: enum \{"allowedValues":\["Allow","Forbid","Replace"\]\}/);
    expect(validateK8s({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } })[0]).toMatch(/unsupported apiVersion\/kind v1\/Pod/);
  });

  it.skipIf(!HAS_KUBECTL)('renders each kustomization exactly as `kubectl kustomize` does', () => {
    for (const dir of KUSTOMIZATIONS) {
      const out = spawnSync('kubectl', ['kustomize', join(ROOT, dir)], { encoding: 'utf8' });
      expect(out.status, out.stderr).toBe(0);
      const theirs = (parseK8sYaml(out.stdout, `kubectl kustomize ${dir}`) as K8sObject[]).sort((a, b) => objectId(a).localeCompare(objectId(b)));
      const ours = [...renders.get(dir).objects].sort((a, b) => objectId(a).localeCompare(objectId(b)));
      expect(ours, dir).toEqual(theirs);
    }
  });

  it('the kubernetes README documents IRSA, GKE and Azure Workload Identity and --target-index', () => {
    const text = read('deploy/kubernetes/README.md');
    for (const s of ['eks.amazonaws.com/role-arn', 'iam.gke.io/gcp-service-account', 'azure.workload.identity/client-id', 'azure.workload.identity/use: "true"', '--target-index', 'JOB_COMPLETION_INDEX']) {
      expect(text).toContain(s);
    }
  });
});

// ---------------------------------------------------------------------------
// AWS SAM template

const SAM_FILE = 'deploy/aws-lambda/template.yaml';
const SAM_TYPES = new Set(['AWS::Serverless::Function', 'AWS::IAM::Role', 'AWS::Logs::LogGroup']);
/** Values for the parameters that have no default (and one VPC variant). */
const SAMPLE_PARAMETERS: Record<string, string | string[]> = {
  NetworkAclId: 'acl-0123456789abcdef0',
  LapiUrl: 'http://10.0.1.20:8080/',
  ApiKeySecretId: 'cloud-bouncer/lapi-api-key',
};
const PSEUDO = { 'AWS::Partition': 'aws', 'AWS::Region': 'eu-west-1', 'AWS::AccountId': '111122223333', 'AWS::StackName': 'cloud-bouncer-prod', 'AWS::URLSuffix': 'amazonaws.com' };
const SAMPLE_KEY = 'resolved-lapi-key-0123456789';

interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: string | string[];
  Condition?: Record<string, Record<string, string | string[]>>;
}

function samContext(template: Template, overrides: Record<string, string | string[]> = {}): EvalContext {
  const parameters: Record<string, string | string[]> = {};
  for (const [name, p] of Object.entries(template.Parameters ?? {})) {
    const given = overrides[name] ?? SAMPLE_PARAMETERS[name] ?? (p.Default === undefined ? undefined : String(p.Default));
    if (given === undefined) throw new Error(`parameter ${name} has no default and no sample value in the test`);
    parameters[name] = p.Type === 'CommaDelimitedList' && typeof given === 'string' ? given.split(',') : given;
  }
  return { template, parameters, pseudo: PSEUDO };
}

describe('deploy/aws-lambda/template.yaml', () => {
  const template = parseTemplate(read(SAM_FILE), SAM_FILE);
  const functions = Object.entries(template.Resources).filter(([, r]) => r.Type === 'AWS::Serverless::Function');
  const [fnName, fnRes] = functions[0] ?? ['', { Type: '', Properties: {} }];
  const ctx = samContext(template, { Owner: 'prod' });
  const fn = evaluate(fnRes.Properties, ctx) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const vars = (fn.Environment?.Variables ?? {}) as Record<string, string>;
  const roleName = (fnRes.Properties?.Role as { 'Fn::GetAtt'?: string[] } | undefined)?.['Fn::GetAtt']?.[0] ?? '';
  const role = evaluate(template.Resources[roleName]?.Properties, ctx) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const statements = ((role?.Policies ?? []) as Array<{ PolicyDocument: { Statement: Statement[] } }>).flatMap((p) => p.PolicyDocument.Statement);
  const naclPolicy = JSON.parse(
    read('deploy/iam/aws-nacl-policy.json').replace(/\$\{(AWS_REGION|AWS_ACCOUNT_ID|NETWORK_ACL_ID|OWNER)\}/g, (_m, k: string) => ({ AWS_REGION: PSEUDO['AWS::Region'], AWS_ACCOUNT_ID: PSEUDO['AWS::AccountId'], NETWORK_ACL_ID: SAMPLE_PARAMETERS.NetworkAclId as string, OWNER: 'prod' })[k]!),
  ) as { Statement: Statement[] };

  it('is a SAM template of known resource types whose every reference resolves', () => {
    // Prepare
    const params = new Set(Object.keys(template.Parameters ?? {}));
    const resources = new Set(Object.keys(template.Resources));
    const conditions = new Set(Object.keys(template.Conditions ?? {}));

    // Act
    const refs = references(template);
    const unresolved = refs.filter((r) => {
      if (r.kind === 'Condition') return !conditions.has(r.name);
      if (r.kind === 'GetAtt') return !resources.has(r.name);
      const base = r.kind === 'Sub' ? r.name.split('.')[0]! : r.name;
      return !(params.has(r.name) || resources.has(base) || PSEUDO_PARAMETERS.has(r.name));
    });
    const unusedParams = [...params].filter((p) => !refs.some((r) => r.name === p));

    // Assess
    expect(template.Transform).toBe('AWS::Serverless-2016-10-31');
    expect(Object.values(template.Resources).map((r) => r.Type).filter((t) => !SAM_TYPES.has(t))).toEqual([]);
    expect(unresolved).toEqual([]);
    expect(unusedParams).toEqual([]);
    expect(functions).toHaveLength(1);
  });

  it('runs the esbuild bundle of the Lambda handler from build/lambda', () => {
    // Prepare
    const script = read('scripts/build-lambda.mjs');
    const [file, exportName] = String(fn.Handler).split('.');

    // Assess
    expect(['nodejs22.x', 'nodejs24.x']).toContain(fn.Runtime);
    expect(resolve(ROOT, dirname(SAM_FILE), String(fn.CodeUri))).toBe(join(ROOT, 'build/lambda'));
    expect(script).toMatch(/const outdir = 'build\/lambda'/);
    expect(script).toMatch(new RegExp(`entryPoints: \\{ ${file}: 'src/lambda\\.ts' \\}`));
    expect(script).toMatch(/outExtension: \{ '\.js': '\.mjs' \}/);
    expect(read('src/lambda.ts')).toMatch(new RegExp(`export async function ${exportName}\\(`));
    expect(fnName).not.toBe('');
  });

  it('runs once a minute, one invocation at a time, without async retries, and stops writing before its timeout', () => {
    // Prepare
    const events = Object.values((fn.Events ?? {}) as Record<string, { Type: string; Properties: { Schedule?: string } }>);
    const margin = Number(vars.CLOUD_BOUNCER_DEADLINE_MARGIN_MS);

    // Assess
    expect(events).toEqual([expect.objectContaining({ Type: 'Schedule', Properties: expect.objectContaining({ Schedule: 'rate(1 minute)' }) })]);
    expect(fn.Timeout).toBe(60);
    expect(fn.ReservedConcurrentExecutions).toBe(1);
    expect(fn.EventInvokeConfig?.MaximumRetryAttempts).toBe(0);
    expect(read('src/lambda.ts')).toContain('CLOUD_BOUNCER_DEADLINE_MARGIN_MS');
    expect(margin).toBeGreaterThan(0);
    expect(margin).toBeLessThan(fn.Timeout * 1000);
  });

  it('gives the function a least-privilege role: no wildcard actions, the EC2 statements of deploy/iam/aws-nacl-policy.json, its own log group', () => {
    // Prepare
    const actions = statements.flatMap((s) => asArray(s.Action));
    const naclActions = naclPolicy.Statement.flatMap((s) => asArray(s.Action));
    const byActions = (list: Statement[]) => new Map(list.map((s) => [asArray(s.Action).sort().join(','), s]));
    const ours = byActions(statements);

    // Assess
    expect(dig(role, 'AssumeRolePolicyDocument', 'Statement')).toEqual([{ Effect: 'Allow', Principal: { Service: 'lambda.amazonaws.com' }, Action: 'sts:AssumeRole' }]);
    expect(actions.filter((a) => a.includes('*'))).toEqual([]);
    expect(statements.every((s) => s.Effect === 'Allow')).toBe(true);
    for (const s of statements) {
      if (asArray(s.Resource).includes('*')) expect(asArray(s.Action).every((a) => /^ec2:Describe/.test(a)), `${s.Sid}: Resource "*" only for Describe calls`).toBe(true);
    }
    expect(actions.filter((a) => a.startsWith('ec2:')).sort()).toEqual([...naclActions].sort());
    for (const s of naclPolicy.Statement) {
      const mine = ours.get(asArray(s.Action).sort().join(','));
      expect(mine, `statement for ${String(s.Action)}`).toBeDefined();
      expect(mine!.Resource).toEqual(s.Resource);
      expect(mine!.Condition).toEqual(s.Condition);
    }
    expect(actions.filter((a) => !a.startsWith('ec2:')).sort()).toEqual(['logs:CreateLogStream', 'logs:PutLogEvents']);
    expect(statements.find((s) => asArray(s.Action).includes('logs:PutLogEvents'))!.Resource).toBe(`<${fn.LoggingConfig?.LogGroup?.replace(/^<|>$/g, '')}.Arn>`);
    expect(role.ManagedPolicyArns, 'no managed policy outside a VPC').toBeUndefined();
  });

  it('adds the VPC access managed policy and VpcConfig only when subnets are given', () => {
    // Prepare
    const vpc = samContext(template, { Owner: 'prod', SubnetIds: ['subnet-0aaa1111bbbb2222c'], SecurityGroupIds: ['sg-0123456789abcdef0'] });

    // Act
    const vpcFn = evaluate(fnRes.Properties, vpc) as Record<string, unknown>;
    const vpcRole = evaluate(template.Resources[roleName]!.Properties, vpc) as Record<string, unknown>;

    // Assess
    expect(fn.VpcConfig).toBeUndefined();
    expect(vpcFn.VpcConfig).toEqual({ SubnetIds: ['subnet-0aaa1111bbbb2222c'], SecurityGroupIds: ['sg-0123456789abcdef0'] });
    expect(vpcRole.ManagedPolicyArns).toEqual(['arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole']);
  });

  it('takes the API key from Secrets Manager through a dynamic reference, never from a template value', () => {
    const secretParams = Object.entries(template.Parameters ?? {}).filter(([name]) => /key|secret|token|password/i.test(name));
    expect(vars.CROWDSEC_BOUNCER_API_KEY).toBe(`{{resolve:secretsmanager:${SAMPLE_PARAMETERS.ApiKeySecretId as string}:SecretString}}`);
    for (const [name, p] of secretParams) expect(p.Default, `${name} must not carry a secret`).toBeUndefined();
    expect(vars.CLOUD_BOUNCER_CONFIG).toContain('${CROWDSEC_BOUNCER_API_KEY}');
  });

  it('configures the function through the environment with a config that `cloud-bouncer validate` accepts, for the NACL and owner the role is scoped to', async () => {
    // Prepare: what the function's environment holds once CloudFormation resolved the key.
    const env = { ...vars, CROWDSEC_BOUNCER_API_KEY: SAMPLE_KEY };

    // Act
    const run = await validateCommandLine(['apply'], { env });
    const config = await loadConfig({ env });

    // Assess
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(config.owner).toBe('prod');
    expect(config.targets.map((t) => t.provider)).toEqual(['aws-nacl']);
    expect(config.targets[0]!.settings).toMatchObject({ region: PSEUDO['AWS::Region'], network_acl_id: SAMPLE_PARAMETERS.NetworkAclId, rule_band: { start: 10, end: 99 } });
    expect((config.sources[0] as LapiSettings).api_key).toBe(SAMPLE_KEY);
    // Past the deadline, five calls may each spend every SDK attempt: the write in flight and its
    // read-back, the claim-tag update and its cleanup, the lease release; plus 2 s of SDK backoff.
    const aws = config.targets[0]!.settings as { request_timeout: number; sdk_max_attempts: number };
    expect(Number(vars.CLOUD_BOUNCER_DEADLINE_MARGIN_MS)).toBeGreaterThanOrEqual(5 * aws.sdk_max_attempts * aws.request_timeout + 2_000);
  });

  it('the role checks catch a wildcard action (they can fail)', () => {
    const wild: Statement[] = [...statements, { Effect: 'Allow', Action: 'ec2:*', Resource: '*' }];
    expect(wild.flatMap((s) => asArray(s.Action)).filter((a) => a.includes('*'))).toEqual(['ec2:*']);
  });

  const HAS_CFN_LINT = spawnSync('cfn-lint', ['--version'], { stdio: 'ignore' }).status === 0;
  it.skipIf(!HAS_CFN_LINT)('passes cfn-lint (SAM transform and CloudFormation resource schemas) without errors', () => {
    const out = spawnSync('cfn-lint', ['--format', 'parseable', join(ROOT, SAM_FILE)], { encoding: 'utf8' });
    // cfn-lint exit code is a bit mask: 2 errors, 4 warnings, 8 informational.
    expect(out.status === null ? -1 : out.status & 2, out.stdout + out.stderr).toBe(0);
  });
});

// ---------------------------------------------------------------------------
// Google Cloud Run job and Cloud Scheduler trigger

type FieldType = 'string' | 'integer' | 'boolean' | 'stringMap' | 'object' | { ref: string } | { list: FieldType };
const S = 'string' as const;
const I = 'integer' as const;
const B = 'boolean' as const;
const M = 'stringMap' as const;
const O = 'object' as const;
/**
 * Cloud Run Admin API v1 (`run.googleapis.com/v1`) fields, from the run.v1
 * discovery document (schemas Job, JobSpec, ExecutionTemplateSpec,
 * ExecutionSpec, TaskTemplateSpec, TaskSpec, Container, …). Types we do not
 * use are not descended into (`object`).
 */
const RUN_V1: Record<string, Record<string, FieldType>> = {
  Job: { apiVersion: S, kind: S, metadata: { ref: 'ObjectMeta' }, spec: { ref: 'JobSpec' }, status: O },
  ObjectMeta: { annotations: M, clusterName: S, creationTimestamp: S, deletionGracePeriodSeconds: I, deletionTimestamp: S, finalizers: { list: S }, generateName: S, generation: I, labels: M, name: S, namespace: S, ownerReferences: { list: O }, resourceVersion: S, selfLink: S, uid: S },
  JobSpec: { runExecutionToken: S, startExecutionToken: S, template: { ref: 'ExecutionTemplateSpec' } },
  ExecutionTemplateSpec: { metadata: { ref: 'ObjectMeta' }, spec: { ref: 'ExecutionSpec' } },
  ExecutionSpec: { parallelism: I, taskCount: I, template: { ref: 'TaskTemplateSpec' } },
  TaskTemplateSpec: { spec: { ref: 'TaskSpec' } },
  TaskSpec: { containers: { list: { ref: 'Container' } }, maxRetries: I, nodeSelector: M, serviceAccountName: S, timeoutSeconds: I, volumes: { list: { ref: 'Volume' } } },
  Container: { args: { list: S }, command: { list: S }, env: { list: { ref: 'EnvVar' } }, envFrom: { list: O }, image: S, imagePullPolicy: S, livenessProbe: O, name: S, ports: { list: O }, readinessProbe: O, resources: { ref: 'ResourceRequirements' }, securityContext: O, startupProbe: O, terminationMessagePath: S, terminationMessagePolicy: S, volumeMounts: { list: { ref: 'VolumeMount' } }, workingDir: S },
  EnvVar: { name: S, value: S, valueFrom: { ref: 'EnvVarSource' } },
  EnvVarSource: { configMapKeyRef: O, secretKeyRef: { ref: 'SecretKeySelector' } },
  SecretKeySelector: { key: S, localObjectReference: O, name: S, optional: B },
  ResourceRequirements: { limits: M, requests: M },
  VolumeMount: { mountPath: S, name: S, readOnly: B, subPath: S },
  Volume: { configMap: O, csi: O, emptyDir: { ref: 'EmptyDirVolumeSource' }, name: S, nfs: O, secret: { ref: 'SecretVolumeSource' } },
  EmptyDirVolumeSource: { medium: S, sizeLimit: S },
  SecretVolumeSource: { defaultMode: I, items: { list: { ref: 'KeyToPath' } }, optional: B, secretName: S },
  KeyToPath: { key: S, mode: I, path: S },
};

function checkFields(value: unknown, type: FieldType, path: string): string[] {
  if (typeof type === 'object' && 'list' in type) {
    if (!Array.isArray(value)) return [`${path}: expected a list`];
    return value.flatMap((v, i) => checkFields(v, type.list, `${path}[${i}]`));
  }
  if (typeof type === 'object') {
    if (!isRecord(value)) return [`${path}: expected an object`];
    const fields = RUN_V1[type.ref]!;
    return Object.entries(value).flatMap(([k, v]) => (fields[k] === undefined ? [`${path}.${k}: unknown field of ${type.ref}`] : checkFields(v, fields[k]!, `${path}.${k}`)));
  }
  if (type === 'string') return typeof value === 'string' ? [] : [`${path}: expected a string`];
  if (type === 'integer') return Number.isInteger(value) ? [] : [`${path}: expected an integer`];
  if (type === 'boolean') return typeof value === 'boolean' ? [] : [`${path}: expected a boolean`];
  if (type === 'stringMap') return isRecord(value) && Object.values(value).every((v) => typeof v === 'string') ? [] : [`${path}: expected a map of strings`];
  return isRecord(value) ? [] : [`${path}: expected an object`];
}

/** `gcloud scheduler jobs create http --help` (Google Cloud SDK 528): the command's flags, plus `--location`. */
const SCHEDULER_FLAGS = new Set(['--location', '--schedule', '--uri', '--attempt-deadline', '--description', '--headers', '--http-method', '--max-backoff', '--max-doublings', '--max-retry-attempts', '--max-retry-duration', '--min-backoff', '--time-zone', '--message-body', '--message-body-from-file', '--oauth-service-account-email', '--oauth-token-scope', '--oidc-service-account-email', '--oidc-token-audience']);

/** The period of a `* * * * *` or `*\/N * * * *` schedule, in minutes. */
function cronPeriodMinutes(schedule: string): number | undefined {
  const m = /^(\*|\*\/(\d+)) \* \* \* \*$/.exec(schedule.trim());
  if (!m) return undefined;
  return m[2] ? Number(m[2]) : 1;
}

const RUN_JOB_FILE = 'deploy/gcp-cloud-run/job.yaml';
const SCHEDULER_FILE = 'deploy/gcp-cloud-run/scheduler-job.yaml';

function gcloudPython(): { python: string; lib: string } | undefined {
  const which = spawnSync('sh', ['-c', 'command -v gcloud'], { encoding: 'utf8' });
  if (which.status !== 0) return undefined;
  const sdk = dirname(dirname(realpathSync(which.stdout.trim())));
  const bundled = join(sdk, 'platform/bundledpythonunix/bin/python3');
  const lib = join(sdk, 'lib');
  const generated = join(lib, 'googlecloudsdk/generated_clients/apis/run/v1/run_v1_messages.py');
  if (!existsSync(generated)) return undefined;
  return { python: existsSync(bundled) ? bundled : 'python3', lib };
}
const GCLOUD = gcloudPython();

describe('deploy/gcp-cloud-run', () => {
  const job = parseYaml(read(RUN_JOB_FILE)) as Record<string, unknown>;
  const flags = parseYaml(read(SCHEDULER_FILE)) as Record<string, string | number>;
  const task = dig(job, 'spec', 'template', 'spec', 'template', 'spec') as Record<string, unknown>;
  const container = ((task?.containers as Array<Record<string, unknown>> | undefined) ?? [])[0] ?? {};
  const env = Object.fromEntries(((container.env as Array<{ name: string; value?: string }> | undefined) ?? []).map((e) => [e.name, e.value ?? '']));

  it('job.yaml is a Cloud Run v1 Job with only fields the Admin API defines', () => {
    expect(job.apiVersion).toBe('run.googleapis.com/v1');
    expect(job.kind).toBe('Job');
    expect(checkFields(job, { ref: 'Job' }, 'Job')).toEqual([]);
  });

  it('the field check refuses an unknown field (it can fail)', () => {
    const typo = structuredClone(job);
    (dig(typo, 'spec', 'template', 'spec', 'template', 'spec') as Record<string, unknown>).timeoutSecond = 1;
    expect(checkFields(typo, { ref: 'Job' }, 'Job')).toEqual(['Job.spec.template.spec.template.spec.timeoutSecond: unknown field of TaskSpec']);
  });

  it('runs one `apply` task with the pinned image, no retries, as a dedicated service account', () => {
    const image = splitImage(String(container.image));
    expect(container.args).toEqual(['apply']);
    expect(container.command).toBeUndefined();
    expect(image.tag).toBe(pkg.version);
    expect(image.name).toMatch(/^[a-z0-9-]+-docker\.pkg\.dev\/[a-z][-a-z0-9]+\/[^/]+\/[^/]+$/);
    expect(dig(job, 'spec', 'template', 'spec', 'taskCount')).toBe(1);
    expect(dig(job, 'spec', 'template', 'spec', 'parallelism')).toBe(1);
    expect(task.maxRetries).toBe(0);
    expect(String(task.serviceAccountName)).toMatch(/^[a-z][-a-z0-9]{4,28}[a-z0-9]@[a-z][-a-z0-9]+\.iam\.gserviceaccount\.com$/);
    expect(dig(container, 'resources', 'limits', 'cpu')).toBeDefined();
    expect(dig(container, 'resources', 'limits', 'memory')).toBeDefined();
  });

  it('its inline config passes `cloud-bouncer validate` and reads the API key from the mounted Secret Manager secret', async () => {
    // Prepare
    const mounts = (container.volumeMounts as Array<{ name: string; mountPath: string }>) ?? [];
    const volumes = (task.volumes as Array<{ name: string; secret?: { secretName: string; items?: Array<{ key: string; path: string }> } }>) ?? [];
    const secretFiles = mounts.flatMap((m) => (volumes.find((v) => v.name === m.name)?.secret?.items ?? []).map((it) => `${m.mountPath}/${it.path}`));

    // Act
    const run = await validateCommandLine(container.args as string[], { env, secrets: secretFiles });
    const config = await loadConfig({ env });

    // Assess
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(config.targets.map((t) => t.provider)).toEqual(['gcp-firewall']);
    for (const s of config.sources) {
      expect((s as LapiSettings).api_key, 'no API key in the job definition').toBeUndefined();
      expect(secretFiles).toContain((s as LapiSettings).api_key_file);
    }
  });

  it('scheduler-job.yaml is a gcloud flags file that starts exactly this job, and executions never overlap', () => {
    // Prepare
    const project = /@([^.]+)\.iam\.gserviceaccount\.com$/.exec(String(task.serviceAccountName))?.[1];
    const region = /^([a-z0-9-]+)-docker\.pkg\.dev\//.exec(String(container.image))?.[1];
    const period = cronPeriodMinutes(String(flags['--schedule']));

    // Assess
    expect(Object.keys(flags).filter((f) => !SCHEDULER_FLAGS.has(f))).toEqual([]);
    expect(flags['--uri']).toBe(`https://${region}-run.googleapis.com/apis/run.googleapis.com/v1/namespaces/${project}/jobs/${String(dig(job, 'metadata', 'name'))}:run`);
    expect(flags['--http-method']).toBe('POST');
    // An OAuth access token (not OIDC) is what Google APIs accept.
    expect(String(flags['--oauth-service-account-email'])).toMatch(new RegExp(`@${project}\\.iam\\.gserviceaccount\\.com$`));
    expect(flags['--oauth-token-scope']).toBe('https://www.googleapis.com/auth/cloud-platform');
    expect(period, 'schedule').toBeDefined();
    expect(task.timeoutSeconds as number).toBeLessThan(period! * 60);
  });

  it('the README shows the same trigger as the flags file, and binds the custom role from deploy/iam', () => {
    const text = read('deploy/gcp-cloud-run/README.md').replace(/\$REGION/g, 'europe-west1').replace(/\$PROJECT/g, 'my-project');
    expect(text).toContain(`--flags-file=${SCHEDULER_FILE}`);
    for (const [flag, value] of Object.entries(flags)) {
      if (flag === '--description') continue;
      expect(text, flag).toMatch(new RegExp(`${flag}=("?)${String(value).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\1`));
    }
    expect(text).toContain('--file=deploy/iam/gcp-firewall-role.yaml');
    expect(text).toContain(`gcloud run jobs replace ${RUN_JOB_FILE}`);
  });

  it.skipIf(!GCLOUD)("job.yaml parses into the Google Cloud SDK's Cloud Run v1 Job message without unknown fields", () => {
    const script = [
      'import sys, json',
      `sys.path[0:0] = [${JSON.stringify(GCLOUD?.lib)}, ${JSON.stringify(`${GCLOUD?.lib}/third_party`)}]`,
      'from googlecloudsdk.generated_clients.apis.run.v1 import run_v1_messages as m',
      'from googlecloudsdk.api_lib.util import messages as mu',
      'job = mu.DictToMessageWithErrorCheck(json.load(sys.stdin), m.Job)',
      'print(job.spec.template.spec.template.spec.timeoutSeconds)',
    ].join('\n');
    const out = spawnSync(GCLOUD!.python, ['-c', script], { input: JSON.stringify(job), encoding: 'utf8' });
    expect(out.status, out.stderr).toBe(0);
    expect(Number(out.stdout.trim())).toBe(task.timeoutSeconds);
  });
});

// ---------------------------------------------------------------------------
// Dockerfile and .dockerignore

/** .dockerignore semantics (Docker docs, ".dockerignore file"): Go filepath.Match patterns, `**`, `!` exceptions, last match wins, a match on a directory covers its contents. */
function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = (negate ? l.slice(1) : l).replace(/^\/+|\/+$/g, '');
      const re = pattern
        .split('/')
        .map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')))
        .join('/')
        .replace(/\.\*\//g, '(?:.*/)?');
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (path: string) => {
    const parts = path.split('/');
    const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
    let excluded = false;
    for (const r of rules) if (prefixes.some((p) => r.re.test(p))) excluded = !r.negate;
    return excluded;
  };
}

describe('deploy/docker', () => {
  const text = read('deploy/docker/Dockerfile');
  const df = DockerfileParser.parse(text);
  const froms = df.getFROMs();
  const stageOf = (i: Instruction) => froms.filter((f) => f.getRange().start.line <= i.getRange().start.line).length - 1;
  const instructions = df.getInstructions();
  const last = froms.length - 1;
  const inStage = (stage: number, keyword: string) => instructions.filter((i) => i.getKeyword() === keyword && stageOf(i) === stage);
  const ignored = dockerignore(read('deploy/docker/Dockerfile.dockerignore'));

  it('has no syntax problems (dockerfile-utils)', () => {
    expect(lintDockerfile(text).map((d) => `${d.range.start.line + 1}: ${d.message}`)).toEqual([]);
  });

  it('builds in a named stage and runs from a second one, both on a pinned Node 24 base', () => {
    expect(froms.length).toBeGreaterThanOrEqual(2);
    for (const f of froms) {
      expect(f.getBuildStage(), 'every stage is named').toBeTruthy();
      expect(f.getImageName()).toBe('node');
      expect(f.getImageTag() ?? '', 'a tag (not latest) or a digest').toMatch(/^24-/);
    }
    expect(text).not.toMatch(/:latest\b/);
  });

  it('the build stage installs, builds and prunes dev dependencies', () => {
    const run = inStage(0, 'RUN').map((i) => i.getArgumentsContent() ?? '').join(' ');
    expect(run).toMatch(/npm ci\b/);
    expect(run).toMatch(/npm run build\b/);
    expect(run).toMatch(/npm prune --omit=dev\b/);
  });

  it('the final stage copies only dist/, the production node_modules and package.json from the build stage', () => {
    const copies = inStage(last, 'COPY').map((i) => `${(i as ModifiableInstruction).getFlags().map((f) => `--${f.getName()}=${f.getValue() ?? ''} `).join('')}${i.getArgumentsContent() ?? ''}`);
    const adds = inStage(last, 'ADD');
    expect(adds).toEqual([]);
    expect(copies).toEqual(['--from=build /app/package.json ./package.json', '--from=build /app/node_modules ./node_modules', '--from=build /app/dist ./dist']);
    expect(inStage(last, 'RUN').map((i) => i.getArgumentsContent() ?? '').join(' ')).not.toMatch(/npm (ci|install)/);
  });

  it('runs as a numeric non-root user with HOME=/tmp, and its entrypoint is the cloud-bouncer bin with `apply` by default', () => {
    // Prepare
    const user = imageUser();
    const env = inStage(last, 'ENV').map((i) => i.getArgumentsContent() ?? '').join(' ');
    const entry = JSON.parse(inStage(last, 'ENTRYPOINT').at(-1)?.getArgumentsContent() ?? 'null') as string[] | null;
    const cmd = JSON.parse(inStage(last, 'CMD').at(-1)?.getArgumentsContent() ?? 'null') as string[] | null;

    // Assess
    expect(user.uid).toBeGreaterThan(0);
    expect(user.gid).toBeGreaterThan(0);
    expect(env).toMatch(/\bHOME=\/tmp\b/);
    expect(entry).toEqual(['node', `/app/${pkg.bin['cloud-bouncer']}`]);
    expect(COMMANDS).toContain(cmd?.[0]);
  });

  it('.dockerignore lets in what the build stage copies and keeps out local state', () => {
    // Prepare
    const sources = inStage(0, 'COPY').flatMap((i) => i.getArguments().map((a) => a.getValue()).filter((a) => !a.startsWith('--')).slice(0, -1));

    // Assess
    expect(sources.length).toBeGreaterThan(0);
    for (const s of sources) {
      expect(existsSync(join(ROOT, s)), `${s} exists`).toBe(true);
      expect(ignored(s), `${s} is sent to the build`).toBe(false);
    }
    expect(ignored('src/cli.ts')).toBe(false);
    for (const p of ['node_modules/yaml/package.json', 'dist/src/cli.js', 'build/lambda/index.mjs', '.git/HEAD', '.tmp/demo-firewall.json', 'coverage/index.html', 'test/config.test.ts', 'deploy/docker/Dockerfile', 'src/certs/lapi.pem', '.env']) {
      expect(ignored(p), `${p} is kept out`).toBe(true);
    }
  });
});

// ---------------------------------------------------------------------------
// IAM files (written alongside the providers; checked here for structure)

describe('deploy/iam', () => {
  it.each(filesOf('AWS IAM policy'))('%s is an IAM policy with explicit actions, Resource "*" only for Describe calls', (file) => {
    const policy = JSON.parse(read(file)) as { Version: string; Statement: Statement[] };
    expect(policy.Version).toBe('2012-10-17');
    expect(policy.Statement.length).toBeGreaterThan(0);
    for (const s of policy.Statement) {
      expect(s.Effect).toBe('Allow');
      expect(asArray(s.Action).filter((a) => a.includes('*'))).toEqual([]);
      if (asArray(s.Resource).includes('*')) expect(asArray(s.Action).every((a) => /^ec2:Describe/.test(a))).toBe(true);
    }
  });

  it.each(filesOf('Azure role definition'))('%s is a custom role with explicit Microsoft.Network actions and assignable scopes', (file) => {
    const role = JSON.parse(read(file)) as { Name: string; IsCustom: boolean; Actions: string[]; DataActions: string[]; AssignableScopes: string[] };
    expect(role.IsCustom).toBe(true);
    expect(role.Name).toBeTruthy();
    expect(role.Actions.length).toBeGreaterThan(0);
    expect(role.Actions.filter((a) => a.includes('*') || !a.startsWith('Microsoft.Network/'))).toEqual([]);
    expect(role.DataActions).toEqual([]);
    expect(role.AssignableScopes.length).toBeGreaterThan(0);
  });

  it.each(filesOf('GCP custom role'))('%s is a custom role with explicit compute permissions', (file) => {
    const role = parseYaml(read(file)) as { title: string; stage: string; includedPermissions: string[] };
    expect(role.title).toBeTruthy();
    expect(['ALPHA', 'BETA', 'GA']).toContain(role.stage);
    expect(role.includedPermissions.length).toBeGreaterThan(0);
    expect(role.includedPermissions.filter((p) => !/^compute\.[a-zA-Z]+\.[a-zA-Z]+$/.test(p))).toEqual([]);
  });
});
