/**
 * Offline checks for the Kubernetes manifests in deploy/kubernetes:
 *
 * - `validateK8s` validates an object against the Kubernetes OpenAPI schema
 *   bundled (precompiled) in `kubernetes-models`, and also reports unknown
 *   fields, which the schemas allow but `kubectl apply` (strict field
 *   validation, the default since Kubernetes 1.27) refuses. Unknown fields are
 *   found by watching which properties the compiled validator reads: it reads
 *   every property its schema declares and enumerates free-form maps (labels,
 *   data), so a key it never touches is not in the schema.
 * - `renderKustomization` renders a kustomization with the subset of kustomize
 *   the manifests use (resources, namespace, images, strategic-merge patches
 *   without lists, `$patch: delete`, RFC 6902 patches with a target), and
 *   refuses anything else, so a kustomization cannot silently use a feature
 *   the render does not model. Where `kubectl kustomize` is installed, the
 *   tests compare both renders.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { validate as validateNamespace } from 'kubernetes-models/_schemas/IoK8sApiCoreV1Namespace';
import { validate as validateServiceAccount } from 'kubernetes-models/_schemas/IoK8sApiCoreV1ServiceAccount';
import { validate as validateConfigMap } from 'kubernetes-models/_schemas/IoK8sApiCoreV1ConfigMap';
import { validate as validateCronJob } from 'kubernetes-models/_schemas/IoK8sApiBatchV1CronJob';
import { validate as validateJob } from 'kubernetes-models/_schemas/IoK8sApiBatchV1Job';
import { validate as validateDeployment } from 'kubernetes-models/_schemas/IoK8sApiAppsV1Deployment';

export type K8sObject = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
};

type CompiledValidator = ((data: unknown) => boolean) & { errors?: Array<{ instancePath: string; message?: string; keyword: string; params?: unknown }> | null };

/** The kinds the manifests may use, each with its schema; anything else is refused. */
const VALIDATORS: Record<string, CompiledValidator> = {
  'v1/Namespace': validateNamespace,
  'v1/ServiceAccount': validateServiceAccount,
  'v1/ConfigMap': validateConfigMap,
  'batch/v1/CronJob': validateCronJob,
  'batch/v1/Job': validateJob,
  'apps/v1/Deployment': validateDeployment,
};

/** Cluster-scoped kinds get no namespace from kustomize's namespace transformer. */
const CLUSTER_SCOPED = new Set(['Namespace']);

export const typeKey = (o: { apiVersion: string; kind: string }) => `${o.apiVersion}/${o.kind}`;
export const objectId = (o: K8sObject) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

/** YAML 1.1, as kubectl reads it (sigs.k8s.io/yaml): `0440` is octal, `yes` is a boolean. */
export function parseK8sYaml(text: string, where: string): unknown[] {
  const docs = parseAllDocuments(text, { version: '1.1' });
  if (!Array.isArray(docs)) throw new Error(`${where}: not a YAML stream`);
  return docs
    .map((d) => {
      if (d.errors.length) throw new Error(`${where}: ${d.errors[0]!.message}`);
      return d.toJS() as unknown;
    })
    .filter((d) => d !== null && d !== undefined);
}

/** Runs a compiled validator while recording which keys of which objects it looked at. */
function runRecording(fn: CompiledValidator, doc: unknown): { ok: boolean; unknown: string[] } {
  const read = new WeakMap<object, Set<string>>();
  const enumerated = new WeakSet<object>();
  const proxies = new WeakMap<object, object>();
  const wrap = (v: unknown): unknown => {
    if (v === null || typeof v !== 'object') return v;
    const known = proxies.get(v);
    if (known) return known;
    const p = new Proxy(v, {
      get(target, key, receiver) {
        if (typeof key === 'string') {
          let keys = read.get(target);
          if (!keys) read.set(target, (keys = new Set()));
          keys.add(key);
        }
        return wrap(Reflect.get(target, key, receiver));
      },
      ownKeys(target) {
        enumerated.add(target);
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(v, p);
    return p;
  };
  const ok = fn(wrap(doc));
  const unknown: string[] = [];
  const walk = (v: unknown, path: string) => {
    if (v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, `${path}/${i}`));
      return;
    }
    const keys = read.get(v);
    for (const [k, child] of Object.entries(v)) {
      if (!enumerated.has(v) && !keys?.has(k)) unknown.push(`${path}/${k}`);
      walk(child, `${path}/${k}`);
    }
  };
  walk(doc, '');
  return { ok, unknown };
}

/** Schema errors and unknown fields of one object; empty when it is valid. */
export function validateK8s(doc: unknown): string[] {
  if (!doc || typeof doc !== 'object') return ['not an object'];
  const o = doc as Partial<K8sObject>;
  const fn = VALIDATORS[`${o.apiVersion}/${o.kind}`];
  if (!fn) return [`unsupported apiVersion/kind ${o.apiVersion}/${o.kind} (expected one of ${Object.keys(VALIDATORS).join(', ')})`];
  const { ok, unknown } = runRecording(fn, doc);
  const problems = ok ? [] : (fn.errors ?? []).map((e) => `${e.instancePath || '/'}: ${e.message ?? `${e.keyword} ${JSON.stringify(e.params)}`}`);
  for (const u of unknown) problems.push(`${u}: unknown field`);
  if (!o.metadata?.name) problems.push('/metadata/name: missing');
  return problems;
}

// ---------------------------------------------------------------------------
// A small kustomize

const KUSTOMIZATION_KEYS = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'patches', 'images']);
const PATCH_KEYS = new Set(['path', 'target']);
const TARGET_KEYS = new Set(['group', 'version', 'kind', 'name']);
const IMAGE_KEYS = new Set(['name', 'newName', 'newTag']);

interface Kustomization {
  apiVersion: string;
  kind: string;
  namespace?: string;
  resources?: string[];
  patches?: Array<{ path: string; target?: { group?: string; version?: string; kind?: string; name?: string } }>;
  images?: Array<{ name: string; newName?: string; newTag?: string }>;
}

export interface Render {
  objects: K8sObject[];
  /** Every file the render read (kustomization files, resources, patches), absolute. */
  files: Set<string>;
}

function checkKeys(obj: object, allowed: Set<string>, where: string): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.has(k)) throw new Error(`${where}: "${k}" is not supported by the test's kustomize render (supported: ${[...allowed].join(', ')}); extend test/deploy/k8s.ts or use a supported field`);
  }
}

export function readKustomization(dir: string): Kustomization {
  const file = join(dir, 'kustomization.yaml');
  if (!existsSync(file)) throw new Error(`${dir}: no kustomization.yaml`);
  const [k] = parseK8sYaml(readFileSync(file, 'utf8'), file) as Kustomization[];
  if (!k || k.apiVersion !== 'kustomize.config.k8s.io/v1beta1' || k.kind !== 'Kustomization') {
    throw new Error(`${file}: expected apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization`);
  }
  checkKeys(k, KUSTOMIZATION_KEYS, file);
  for (const p of k.patches ?? []) {
    checkKeys(p, PATCH_KEYS, `${file} patches`);
    if (p.target) checkKeys(p.target, TARGET_KEYS, `${file} patches[].target`);
  }
  for (const i of k.images ?? []) checkKeys(i, IMAGE_KEYS, `${file} images`);
  return k;
}

const groupVersion = (apiVersion: string) => {
  const i = apiVersion.indexOf('/');
  return i < 0 ? { group: '', version: apiVersion } : { group: apiVersion.slice(0, i), version: apiVersion.slice(i + 1) };
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Strategic merge without lists: maps merge, scalars replace. A list in a patch is refused (its merge key semantics are not modelled). */
function mergePatch(target: Record<string, unknown>, patch: Record<string, unknown>, where: string): void {
  for (const [k, v] of Object.entries(patch)) {
    if (Array.isArray(v)) throw new Error(`${where}: lists in strategic-merge patches are not modelled (key "${k}"); use an RFC 6902 patch`);
    if (isPlainObject(v) && isPlainObject(target[k])) mergePatch(target[k] as Record<string, unknown>, v, where);
    else if (v === null) delete target[k];
    else target[k] = structuredClone(v);
  }
}

const unescapePointer = (s: string) => s.replace(/~1/g, '/').replace(/~0/g, '~');

/** RFC 6902 add / replace / remove (the operations the overlays use). */
function applyJsonPatch(doc: Record<string, unknown>, ops: Array<{ op: string; path: string; value?: unknown }>, where: string): void {
  for (const op of ops) {
    const parts = op.path.split('/').slice(1).map(unescapePointer);
    const last = parts.pop();
    if (last === undefined) throw new Error(`${where}: empty path`);
    let node: unknown = doc;
    for (const p of parts) {
      node = Array.isArray(node) ? node[Number(p)] : isPlainObject(node) ? node[p] : undefined;
      if (node === undefined) throw new Error(`${where}: ${op.op} ${op.path}: parent does not exist`);
    }
    const container = node as Record<string, unknown> | unknown[];
    const exists = Array.isArray(container) ? Number(last) < container.length : Object.hasOwn(container, last);
    switch (op.op) {
      case 'add':
        if (Array.isArray(container)) container.splice(last === '-' ? container.length : Number(last), 0, structuredClone(op.value));
        else container[last] = structuredClone(op.value);
        break;
      case 'replace':
        if (!exists) throw new Error(`${where}: replace ${op.path}: nothing to replace`);
        if (Array.isArray(container)) container[Number(last)] = structuredClone(op.value);
        else container[last] = structuredClone(op.value);
        break;
      case 'remove':
        if (!exists) throw new Error(`${where}: remove ${op.path}: nothing to remove`);
        if (Array.isArray(container)) container.splice(Number(last), 1);
        else delete container[last];
        break;
      default:
        throw new Error(`${where}: op "${op.op}" is not modelled`);
    }
  }
}

/** The value at a path of nested maps, or undefined. */
export function dig(v: unknown, ...path: string[]): unknown {
  let cur = v;
  for (const p of path) cur = isPlainObject(cur) ? cur[p] : undefined;
  return cur;
}

export function podSpecOf(o: K8sObject): Record<string, unknown> | undefined {
  const spec = o.kind === 'CronJob' ? dig(o, 'spec', 'jobTemplate', 'spec', 'template', 'spec') : o.kind === 'Job' || o.kind === 'Deployment' ? dig(o, 'spec', 'template', 'spec') : undefined;
  return isPlainObject(spec) ? spec : undefined;
}

/** `registry/name:tag@digest` into its parts. */
export const splitImage = (image: string) => {
  const at = image.indexOf('@');
  const base = at < 0 ? image : image.slice(0, at);
  const colon = base.lastIndexOf(':');
  const name = colon > base.lastIndexOf('/') ? base.slice(0, colon) : base;
  return { name, tag: colon > base.lastIndexOf('/') ? base.slice(colon + 1) : undefined, digest: at < 0 ? undefined : image.slice(at + 1) };
};


/** Renders a kustomization directory (recursively through directory resources). */
export function renderKustomization(dir: string): Render {
  const k = readKustomization(dir);
  const files = new Set<string>([resolve(dir, 'kustomization.yaml')]);
  let objects: K8sObject[] = [];
  for (const r of k.resources ?? []) {
    const p = resolve(dir, r);
    if (!existsSync(p)) throw new Error(`${dir}/kustomization.yaml: resource ${r} does not exist`);
    if (statSync(p).isDirectory()) {
      const sub = renderKustomization(p);
      sub.files.forEach((f) => files.add(f));
      objects.push(...sub.objects);
    } else {
      files.add(p);
      for (const d of parseK8sYaml(readFileSync(p, 'utf8'), p)) objects.push(d as K8sObject);
    }
  }
  for (const patch of k.patches ?? []) {
    const p = resolve(dir, patch.path);
    if (!existsSync(p)) throw new Error(`${dir}/kustomization.yaml: patch ${patch.path} does not exist`);
    files.add(p);
    const [body] = parseK8sYaml(readFileSync(p, 'utf8'), p);
    const where = relative(process.cwd(), p);
    if (Array.isArray(body)) {
      // RFC 6902: needs a target.
      const t = patch.target;
      if (!t?.kind || !t.name) throw new Error(`${where}: an RFC 6902 patch needs a target with kind and name`);
      const hits = objects.filter((o) => {
        const gv = groupVersion(o.apiVersion);
        return o.kind === t.kind && o.metadata.name === t.name && (t.group === undefined || t.group === gv.group) && (t.version === undefined || t.version === gv.version);
      });
      if (hits.length === 0) throw new Error(`${where}: target ${t.kind}/${t.name} matches no resource`);
      for (const o of hits) applyJsonPatch(o, body as Array<{ op: string; path: string; value?: unknown }>, where);
    } else if (isPlainObject(body)) {
      if (patch.target) throw new Error(`${where}: strategic-merge patches are matched by their own apiVersion, kind and name; a target is not modelled`);
      const { $patch, ...rest } = body as Record<string, unknown> & Partial<K8sObject>;
      const id = rest as Partial<K8sObject>;
      const hits = objects.filter((o) => o.apiVersion === id.apiVersion && o.kind === id.kind && o.metadata.name === id.metadata?.name);
      if (hits.length !== 1) throw new Error(`${where}: ${id.apiVersion} ${id.kind}/${id.metadata?.name} matches ${hits.length} resources, expected 1`);
      if ($patch === 'delete') objects = objects.filter((o) => o !== hits[0]);
      else if ($patch === undefined) mergePatch(hits[0]!, rest, where);
      else throw new Error(`${where}: $patch: ${String($patch)} is not modelled`);
    } else {
      throw new Error(`${where}: not a patch`);
    }
  }
  if (k.namespace) {
    for (const o of objects) {
      if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
    }
  }
  for (const img of k.images ?? []) {
    for (const o of objects) {
      const pod = podSpecOf(o);
      for (const c of [...((pod?.containers as Array<{ image: string }>) ?? []), ...((pod?.initContainers as Array<{ image: string }>) ?? [])]) {
        const cur = splitImage(c.image);
        if (cur.name !== img.name) continue;
        const tag = img.newTag ?? cur.tag;
        c.image = `${img.newName ?? cur.name}${tag ? `:${tag}` : ''}${cur.digest ? `@${cur.digest}` : ''}`;
      }
    }
  }
  return { objects, files };
}
