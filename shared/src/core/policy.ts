// The policy: which Service ports are worth offloading, kept as data (YAML or JSON), validated
// against a JSON Schema when compiled (reading files is adapters/policy-files.ts). Rules are
// tried in order; the first that matches a port decides it; ports no rule matches get the
// policy's `default`.

import { createHash } from 'node:crypto';
import { Ajv } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { THRESHOLD_MAX } from './contract.ts';
import type { ServicePort } from './service.ts';

export interface PortMatch {
  /** Port numbers or inclusive ranges written as "min-max". */
  ports?: (number | string)[];
  protocols?: ('TCP' | 'UDP' | 'SCTP')[];
  /** spec.ports[].appProtocol values, compared case-insensitively (e.g. grpc, kubernetes.io/h2c). */
  appProtocols?: string[];
  /** Port-name prefixes following the Istio-style convention (grpc-, http-, tcp-, mongo-, redis-). */
  portNamePrefixes?: string[];
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
  defaultThreshold: number;
  /** Pre-parsed port ranges, one list per rule. */
  ranges: [number, number][][];
}

const thresholdSchema = { type: 'integer', minimum: 0, maximum: THRESHOLD_MAX };
const protocolSchema = { enum: ['TCP', 'UDP', 'SCTP'] };

export const POLICY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'version', 'default', 'rules'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 63 },
    version: { type: ['string', 'integer'] },
    defaultThreshold: thresholdSchema,
    default: {
      type: 'object',
      additionalProperties: false,
      required: ['offload', 'reason'],
      properties: {
        offload: { type: 'boolean' },
        threshold: thresholdSchema,
        reason: { type: 'string', minLength: 1, maxLength: 200 },
        protocols: { type: 'array', items: { enum: ['TCP', 'UDP'] } },
      },
    },
    rules: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'match', 'offload', 'reason'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' },
          offload: { type: 'boolean' },
          threshold: thresholdSchema,
          reason: { type: 'string', minLength: 1, maxLength: 200 },
          match: {
            type: 'object',
            additionalProperties: false,
            minProperties: 1,
            properties: {
              ports: {
                type: 'array',
                minItems: 1,
                items: {
                  anyOf: [
                    { type: 'integer', minimum: 1, maximum: 65535 },
                    { type: 'string', pattern: '^[0-9]{1,5}-[0-9]{1,5}$' },
                  ],
                },
              },
              protocols: { type: 'array', minItems: 1, items: protocolSchema },
              appProtocols: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
              portNamePrefixes: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
            },
          },
        },
      },
    },
  },
} as const;

const validate = new Ajv({ allErrors: true, allowUnionTypes: true }).compile(POLICY_SCHEMA);

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
  const ranges = doc.rules.map((rule, i) =>
    (rule.match.ports ?? []).map((p) => parseRange(p, `${source} rules[${i}] (${rule.name})`)),
  );
  const hash = createHash('sha256').update(JSON.stringify(doc)).digest('hex').slice(0, 12);
  return {
    document: doc,
    id: `${doc.name}@${doc.version}#${hash}`,
    defaultThreshold: doc.defaultThreshold ?? 20,
    ranges,
  };
}

/** Parses YAML (which includes JSON) text into a Policy. */
export function parsePolicy(text: string, source = 'policy'): Policy {
  let document: unknown;
  try {
    document = parseYaml(text, { maxAliasCount: 100 });
  } catch (error) {
    throw new PolicyError(`${source} is not YAML or JSON: ${(error as Error).message.split('\n')[0]}`);
  }
  return compilePolicy(document, source);
}

export interface PortVerdict {
  offload: boolean;
  threshold: number;
  /** The rule's name, or `default`. */
  rule: string;
  reason: string;
}

function matches(policy: Policy, index: number, port: ServicePort): boolean {
  const rule = policy.document.rules[index]!;
  const m = rule.match;
  if (m.protocols && !m.protocols.includes(port.protocol)) return false;
  if (m.ports && !policy.ranges[index]!.some(([lo, hi]) => port.port >= lo && port.port <= hi)) return false;
  if (m.appProtocols) {
    const app = port.appProtocol?.toLowerCase();
    if (!app || !m.appProtocols.some((a) => a.toLowerCase() === app)) return false;
  }
  if (m.portNamePrefixes) {
    const name = port.name?.toLowerCase();
    if (!name || !m.portNamePrefixes.some((prefix) => name.startsWith(prefix.toLowerCase()))) return false;
  }
  return true;
}

/** The first rule matching the port decides; otherwise the policy's default. */
export function evaluatePort(policy: Policy, port: ServicePort): PortVerdict {
  const rules = policy.document.rules;
  for (let i = 0; i < rules.length; i++) {
    if (matches(policy, i, port)) {
      const rule = rules[i]!;
      return {
        offload: rule.offload,
        threshold: rule.threshold ?? policy.defaultThreshold,
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
    threshold: fallback.threshold ?? policy.defaultThreshold,
    rule: 'default',
    reason: protocolAllowed
      ? fallback.reason
      : `no rule matched and the default covers only ${fallback.protocols}`,
  };
}
