/**
 * CloudFormation / SAM templates for the tests: YAML with the short-form
 * intrinsic tags (`!Ref`, `!Sub`, `!GetAtt`, `!If`, …) read into their JSON
 * form, a walk over every reference, and an evaluator for the intrinsics the
 * tests need to render values (Ref, Sub, Join, If, Equals, Not, GetAtt as a
 * placeholder).
 */
import { isMap, isScalar, isSeq, parseDocument, type Node } from 'yaml';

/** Short-form tags and their long form (AWS CloudFormation User Guide, "Intrinsic function reference"). */
const SHORT_FORMS: Record<string, string> = {
  '!Ref': 'Ref',
  '!Condition': 'Condition',
  '!Sub': 'Fn::Sub',
  '!GetAtt': 'Fn::GetAtt',
  '!Join': 'Fn::Join',
  '!Select': 'Fn::Select',
  '!Split': 'Fn::Split',
  '!If': 'Fn::If',
  '!Not': 'Fn::Not',
  '!Equals': 'Fn::Equals',
  '!And': 'Fn::And',
  '!Or': 'Fn::Or',
  '!FindInMap': 'Fn::FindInMap',
  '!Base64': 'Fn::Base64',
  '!Cidr': 'Fn::Cidr',
  '!GetAZs': 'Fn::GetAZs',
  '!ImportValue': 'Fn::ImportValue',
  '!Transform': 'Fn::Transform',
};

export type Template = {
  AWSTemplateFormatVersion?: string;
  Transform?: string | string[];
  Parameters?: Record<string, { Type: string; Default?: unknown; AllowedPattern?: string; NoEcho?: boolean }>;
  Conditions?: Record<string, unknown>;
  Resources: Record<string, { Type: string; Properties?: Record<string, unknown>; Condition?: string }>;
  Outputs?: Record<string, unknown>;
};

function toJs(node: Node | null, where: string): unknown {
  if (node === null) return null;
  let value: unknown;
  if (isMap(node)) {
    const out: Record<string, unknown> = {};
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      out[key] = toJs(pair.value as Node | null, where);
    }
    value = out;
  } else if (isSeq(node)) {
    value = node.items.map((i) => toJs(i as Node, where));
  } else if (isScalar(node)) {
    value = node.value;
  } else {
    throw new Error(`${where}: unsupported YAML node (alias or unknown)`);
  }
  const tag = node.tag;
  if (tag?.startsWith('!')) {
    const fn = SHORT_FORMS[tag];
    if (!fn) throw new Error(`${where}: unknown tag ${tag}`);
    if (fn === 'Fn::GetAtt' && typeof value === 'string') {
      const dot = value.indexOf('.');
      return { [fn]: [value.slice(0, dot), value.slice(dot + 1)] };
    }
    return { [fn]: value };
  }
  return value;
}

/** Parses a CloudFormation YAML template (YAML 1.1, as CloudFormation reads it). */
export function parseTemplate(text: string, where: string): Template {
  const doc = parseDocument(text, { version: '1.1' });
  if (doc.errors.length) throw new Error(`${where}: ${doc.errors[0]!.message}`);
  return toJs(doc.contents as Node, where) as Template;
}

export const PSEUDO_PARAMETERS = new Set(['AWS::AccountId', 'AWS::NotificationARNs', 'AWS::NoValue', 'AWS::Partition', 'AWS::Region', 'AWS::StackId', 'AWS::StackName', 'AWS::URLSuffix']);

export interface Reference {
  kind: 'Ref' | 'GetAtt' | 'Sub' | 'Condition';
  name: string;
  path: string;
}

/** Variables of a Fn::Sub string, without the `${!Literal}` escapes. */
export function subVariables(s: string): string[] {
  return [...s.matchAll(/\$\{([^}!][^}]*)\}/g)].map((m) => m[1]!.trim());
}

/** Every reference the template makes: Ref, GetAtt, Sub variables, If conditions. */
export function references(value: unknown, path = ''): Reference[] {
  const out: Reference[] = [];
  const walk = (v: unknown, p: string) => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${p}[${i}]`));
    if (!v || typeof v !== 'object') return;
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1) {
      const [k] = keys as [string];
      const arg = o[k];
      if (k === 'Ref' && typeof arg === 'string') out.push({ kind: 'Ref', name: arg, path: p });
      if (k === 'Fn::GetAtt' && Array.isArray(arg)) out.push({ kind: 'GetAtt', name: String(arg[0]), path: p });
      if (k === 'Fn::Sub') {
        const [s, vars] = Array.isArray(arg) ? (arg as [string, Record<string, unknown>]) : [arg as string, {}];
        for (const name of subVariables(s)) if (!(name in vars)) out.push({ kind: 'Sub', name, path: p });
      }
      if (k === 'Fn::If' && Array.isArray(arg)) out.push({ kind: 'Condition', name: String(arg[0]), path: p });
      if (k === 'Condition' && typeof arg === 'string' && p.includes('Conditions')) out.push({ kind: 'Condition', name: arg, path: p });
    }
    for (const k of keys) walk(o[k], p ? `${p}.${k}` : k);
  };
  walk(value, path);
  return out;
}

export interface EvalContext {
  template: Template;
  /** Parameter values; a CommaDelimitedList is a string[]. */
  parameters: Record<string, string | string[]>;
  pseudo: Record<string, string>;
}

export const NO_VALUE = Symbol('AWS::NoValue');

/** Evaluates the intrinsics the tests render; GetAtt becomes `<Resource.Attribute>`. */
export function evaluate(v: unknown, ctx: EvalContext): unknown {
  if (Array.isArray(v)) return v.map((x) => evaluate(x, ctx)).filter((x) => x !== NO_VALUE);
  if (!v || typeof v !== 'object') return v;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 1) {
    const [k] = keys as [string];
    const arg = o[k];
    const ref = (name: string): string | string[] => {
      if (name === 'AWS::NoValue') throw new Error('AWS::NoValue used as a string');
      if (name in ctx.parameters) return ctx.parameters[name]!;
      if (name in ctx.pseudo) return ctx.pseudo[name]!;
      if (name in ctx.template.Resources) return `<${name}>`;
      if (name.includes('.') && name.split('.')[0]! in ctx.template.Resources) return `<${name}>`;
      throw new Error(`unresolved reference ${name}`);
    };
    switch (k) {
      case 'Ref':
        return arg === 'AWS::NoValue' ? NO_VALUE : ref(String(arg));
      case 'Fn::Sub': {
        const [s, vars] = Array.isArray(arg) ? (arg as [string, Record<string, unknown>]) : [arg as string, {}];
        return s.replace(/\$\{([^}]*)\}/g, (_m, name: string) => {
          if (name.startsWith('!')) return `\${${name.slice(1)}}`;
          if (name in vars) return String(evaluate(vars[name], ctx));
          const r = ref(name.trim());
          if (Array.isArray(r)) throw new Error(`Fn::Sub: \${${name}} is a list`);
          return r;
        });
      }
      case 'Fn::Join': {
        const [sep, items] = arg as [string, unknown];
        const list = evaluate(items, ctx);
        if (!Array.isArray(list)) throw new Error('Fn::Join expects a list');
        return list.map(String).join(sep);
      }
      case 'Fn::GetAtt':
        return `<${(arg as string[]).join('.')}>`;
      case 'Fn::Equals': {
        const [a, b] = (arg as unknown[]).map((x) => evaluate(x, ctx));
        return JSON.stringify(a) === JSON.stringify(b);
      }
      case 'Fn::Not':
        return !evaluate((arg as unknown[])[0], ctx);
      case 'Fn::If': {
        const [cond, yes, no] = arg as [string, unknown, unknown];
        const c = ctx.template.Conditions?.[cond];
        if (c === undefined) throw new Error(`unknown condition ${cond}`);
        return evaluate(evaluate(c, ctx) ? yes : no, ctx);
      }
      default:
        if (k.startsWith('Fn::')) throw new Error(`${k} is not evaluated by the test`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const [key, val] of Object.entries(o)) {
    const e = evaluate(val, ctx);
    if (e !== NO_VALUE) out[key] = e;
  }
  return out;
}
