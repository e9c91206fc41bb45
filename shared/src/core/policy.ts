// The policy: which Service ports are worth offloading, kept as data (YAML or JSON), validated
// against a JSON Schema (policy-schema.ts, by policy-validator.ts) when compiled (reading files is
// adapters/policy-files.ts).
//
// Precedence: what a port declares beats what it is called, which beats its number. Rules that
// match an `appProtocol` are tried first, then rules that match a port name, then rules that
// match only port numbers, ranges or protocols; within each group the first matching rule (in
// file order) decides. Ports no rule matches get the policy's `default`.

import { hash as digest } from 'node:crypto';
import { parse as parseYaml } from 'yaml';
import { validatePolicyDocument as validate } from './policy-validator.ts';
import type { ServicePort } from './service.ts';

export interface PortMatch {
  /** Port numbers or inclusive ranges written as "min-max". */
  ports?: (number | string)[];
  protocols?: ('TCP' | 'UDP' | 'SCTP')[];
  /** spec.ports[].appProtocol values, compared case-insensitively (e.g. grpc, kubernetes.io/h2c). */
  appProtocols?: string[];
  /**
   * Port-name words, compared case-insensitively: a word matches a name that is the word, starts
   * with `word-` or ends with `-word` (`grpc`, `grpc-api`, `jaeger-collector-grpc`), following the
   * Istio-style `<protocol>[-<suffix>]` convention and its common reverse.
   */
  portNames?: string[];
}

export interface Rule {
  name: string;
  match: PortMatch;
  offload: boolean;
  threshold?: number;
  reason: string;
}

export interface PolicyDocument {
  name: string;
  version: string | number;
  defaultThreshold?: number;
  default: { offload: boolean; threshold?: number; reason: string; protocols?: ('TCP' | 'UDP')[] };
  rules: Rule[];
}

export interface Policy {
  document: PolicyDocument;
  /** `name@version#hash`: the hash changes with any edit, even when the version is not bumped. */
  id: string;
  /** The rules in the order they are tried (appProtocol, then port-name, then the rest), pre-parsed. */
  matchers: Matcher[];
}

/** One rule, ready to match: ranges parsed, words and appProtocols lowercased once. */
interface Matcher {
  rule: Rule;
  protocols?: readonly string[];
  ranges?: [number, number][];
  appProtocols?: ReadonlySet<string>;
  words?: readonly string[];
}

export class PolicyError extends Error {
  override name = 'PolicyError';
}

function parseRange(entry: number | string, where: string): [number, number] {
  if (typeof entry === 'number') return [entry, entry];
  const [lo, hi] = entry.split('-').map(Number) as [number, number];
  if (lo < 1 || hi > 65535 || lo > hi)
    throw new PolicyError(`${where}: port range "${entry}" is not within 1-65535`);
  return [lo, hi];
}

/** 0: the rule matches an appProtocol; 1: a port name; 2: only numbers, ranges or protocols. */
function ruleGroup(rule: Rule): number {
  if (rule.match.appProtocols) return 0;
  if (rule.match.portNames) return 1;
  return 2;
}

/** Validates a parsed document and builds the Policy; throws PolicyError naming what is wrong. */
export function compilePolicy(document: unknown, source = 'policy'): Policy {
  if (!validate(document)) {
    const details = (validate.errors ?? [])
      .slice(0, 5)
      .map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`)
      .join('; ');
    throw new PolicyError(`${source} is not a valid policy: ${details}`);
  }
  const doc = document as PolicyDocument;
  const names = new Set<string>();
  for (const rule of doc.rules) {
    if (names.has(rule.name)) throw new PolicyError(`${source}: rule name "${rule.name}" is used twice`);
    names.add(rule.name);
  }
  const matchers = doc.rules.map((rule, i): Matcher => {
    const m = rule.match;
    return {
      rule,
      ...(m.protocols ? { protocols: m.protocols } : {}),
      ...(m.ports
        ? { ranges: m.ports.map((p) => parseRange(p, `${source} rules[${i}] (${rule.name})`)) }
        : {}),
      ...(m.appProtocols ? { appProtocols: new Set(m.appProtocols.map((a) => a.toLowerCase())) } : {}),
      ...(m.portNames ? { words: m.portNames.map((w) => w.toLowerCase()) } : {}),
    };
  });
  const hash = digest('sha256', JSON.stringify(doc), 'hex').slice(0, 12);
  const order = doc.rules.map((rule, i) => ({ i, group: ruleGroup(rule) }));
  order.sort((a, b) => a.group - b.group || a.i - b.i);
  return {
    document: doc,
    id: `${doc.name}@${doc.version}#${hash}`,
    matchers: order.map((o) => matchers[o.i]!),
  };
}

/** Parses YAML (which includes JSON) text into a document, not yet validated. */
export function parsePolicyDocument(text: string, source = 'policy'): unknown {
  try {
    return parseYaml(text, { maxAliasCount: 100 });
  } catch (error) {
    throw new PolicyError(`${source} is not YAML or JSON: ${(error as Error).message.split('\n')[0]}`);
  }
}

/** Parses YAML (which includes JSON) text into a Policy. */
export function parsePolicy(text: string, source = 'policy'): Policy {
  return compilePolicy(parsePolicyDocument(text, source), source);
}

export interface PortVerdict {
  offload: boolean;
  /** The threshold the deciding rule (or `default`) names itself; see threshold.ts for the rest. */
  threshold?: number;
  /** The rule's name, or `default`. */
  rule: string;
  reason: string;
}

/** `name` and `app` are the port's, lowercased (or undefined). */
function matches(m: Matcher, port: ServicePort, name: string | undefined, app: string | undefined): boolean {
  if (m.appProtocols && (app === undefined || !m.appProtocols.has(app))) return false;
  if (m.words && (name === undefined || !m.words.some((word) => nameHasWord(name, word)))) return false;
  if (m.protocols && !m.protocols.includes(port.protocol)) return false;
  if (m.ranges && !m.ranges.some(([lo, hi]) => port.port >= lo && port.port <= hi)) return false;
  return true;
}

const DASH = 45;

/** `grpc` is in `grpc`, `grpc-api` and `jaeger-collector-grpc`, not in `grpcweb` or `my-grpc-api`. */
export function nameHasWord(name: string, word: string): boolean {
  if (name.length === word.length) return name === word;
  if (name.length <= word.length) return false;
  return (
    (name.charCodeAt(word.length) === DASH && name.startsWith(word)) ||
    (name.charCodeAt(name.length - word.length - 1) === DASH && name.endsWith(word))
  );
}

/** The first rule matching the port, in precedence order, decides; otherwise the policy's default. */
export function evaluatePort(policy: Policy, port: ServicePort): PortVerdict {
  const name = port.name?.toLowerCase();
  const app = port.appProtocol?.toLowerCase();
  for (const m of policy.matchers) {
    if (matches(m, port, name, app)) {
      const rule = m.rule;
      return {
        offload: rule.offload,
        ...(rule.threshold !== undefined ? { threshold: rule.threshold } : {}),
        rule: rule.name,
        reason: rule.reason,
      };
    }
  }
  const fallback = policy.document.default;
  const protocolAllowed =
    fallback.protocols === undefined || (fallback.protocols as string[]).includes(port.protocol);
  return {
    offload: fallback.offload && protocolAllowed,
    ...(fallback.threshold !== undefined ? { threshold: fallback.threshold } : {}),
    rule: 'default',
    reason: protocolAllowed
      ? fallback.reason
      : `no rule matched and the default covers only ${fallback.protocols}`,
  };
}
