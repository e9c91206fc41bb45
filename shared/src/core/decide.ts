// Where a Service's acceleration is decided: per port, from the user's own keys (which always
// win), then the policy; each offloaded port with its own packet threshold (threshold.ts). The
// webhook and the daemon both call this; every Decision carries the human-readable reason that
// ends up in the annotation, the span, and `slipstream status`.

import {
  comparePorts,
  HINT_KEYS,
  hasUserHints,
  NAMESPACE_OPT_OUT_LABEL,
  NAMESPACE_OPT_OUT_VALUE,
  type Problem,
  parseUserHints,
  specHash,
  USER_KEYS,
  VALUE_MAX_LENGTH,
} from './contract.ts';
import { type OffloadPort, offloadHintFits, parseWebhookHints } from './hints.ts';
import { evaluatePort, type Policy } from './policy.ts';
import { type Namespace, type Protocol, portKey, type Service } from './service.ts';
import { portThreshold, type ThresholdSource } from './threshold.ts';

export type { OffloadPort } from './hints.ts';

export interface PortDecision {
  port: number;
  protocol: Protocol;
  name?: string;
  offload: boolean;
  /** The packet threshold this port is offloaded after; null when it is kept. */
  threshold: number | null;
  /** Where the threshold came from (threshold.ts); absent when the port is kept or hinted. */
  thresholdSource?: ThresholdSource;
  /** A policy rule's name, `default`, or a `user:`/`contract:` marker. */
  rule: string;
  reason: string;
}

export type DecisionSource = 'no-cluster-ip' | 'namespace' | 'user' | 'policy' | 'hints';

export interface Decision {
  /** The ports to offload, sorted, each with its own threshold. */
  offload: OffloadPort[];
  /** One line a person understands; it names each offloaded port's threshold. */
  reason: string;
  /** What decided, in short: `user:acceleration`, a rule name, `rule-a,rule-b`, … */
  rule: string;
  /** The policy that decided (its id), or the policy recorded in the webhook's hints. */
  policy: string;
  source: DecisionSource;
  ports: PortDecision[];
  /** Invalid user values, naming the key (any of them makes the decision `none`). */
  warnings: Problem[];
  /** `specHash` of the Service the decision was made for. */
  specHash: string;
}

const MAX_REASON_LENGTH = 1000;

/** Joins parts with `; ` and stops once the result is longer than the reason may be. */
function boundedReason(parts: Iterable<string>): string {
  let out = '';
  for (const part of parts) {
    out = out === '' ? part : `${out}; ${part}`;
    if (out.length > MAX_REASON_LENGTH) break;
  }
  return out;
}

function oneLine(text: string): string {
  const flat = text.replace(/[\r\n\t]+/g, ' ');
  return flat.length > MAX_REASON_LENGTH ? `${flat.slice(0, MAX_REASON_LENGTH - 1)}…` : flat;
}

function nothing(
  service: Service,
  policy: Policy,
  source: DecisionSource,
  rule: string,
  reason: string,
  warnings: Problem[] = [],
): Decision {
  return {
    offload: [],
    reason: oneLine(reason),
    rule,
    policy: policy.id,
    source,
    ports: [],
    warnings,
    specHash: specHash(service),
  };
}

export function namespaceOptedOut(namespace: Namespace | undefined): boolean {
  return namespace?.labels[NAMESPACE_OPT_OUT_LABEL] === NAMESPACE_OPT_OUT_VALUE;
}

/** The reason line of one port. */
function portLine(p: PortDecision): string {
  if (!p.offload) return `${portKey(p)} keep: ${p.rule} (${p.reason})`;
  const from = p.thresholdSource === 'user' ? ` (${USER_KEYS.packetThreshold})` : '';
  return `${portKey(p)} offload after ${p.threshold} packets${from}: ${p.rule} (${p.reason})`;
}

/** The decision for one Service from its spec, the user's keys and the policy. */
export function decide(service: Service, policy: Policy, namespace?: Namespace): Decision {
  if (service.noClusterIPReason) {
    return nothing(
      service,
      policy,
      'no-cluster-ip',
      'contract:no-cluster-ip',
      `${service.noClusterIPReason}; nothing to offload`,
    );
  }
  if (namespaceOptedOut(namespace)) {
    return nothing(
      service,
      policy,
      'namespace',
      'namespace:opt-out',
      `namespace ${service.namespace} is labelled ${NAMESPACE_OPT_OUT_LABEL}=${NAMESPACE_OPT_OUT_VALUE}`,
    );
  }
  const { value: user, problems } = parseUserHints(service);
  // Fail closed: a user key the contract cannot read never offloads more than the user asked for.
  if (problems.length > 0) {
    const what = problems.map((p) => `${p.key} is invalid (${p.message})`).join('; ');
    return nothing(
      service,
      policy,
      'user',
      'user:invalid',
      `${what}; nothing is offloaded until it is fixed`,
      problems,
    );
  }
  if (user.acceleration === 'disabled') {
    return nothing(
      service,
      policy,
      'user',
      'user:acceleration',
      `${USER_KEYS.acceleration}=disabled set by the user`,
    );
  }

  const allowed = user.ports ? new Set(user.ports.map(portKey)) : undefined;
  const policyDefault = policy.document.defaultThreshold;
  const ports: PortDecision[] = service.ports.map((p) => {
    const base = { port: p.port, protocol: p.protocol, ...(p.name ? { name: p.name } : {}) };
    if (p.protocol === 'SCTP') {
      return {
        ...base,
        offload: false,
        threshold: null,
        rule: 'contract:sctp',
        reason: 'flowtables carry only TCP and UDP',
      };
    }
    if (allowed && !allowed.has(portKey(p))) {
      return {
        ...base,
        offload: false,
        threshold: null,
        rule: 'user:ports',
        reason: `not listed in ${USER_KEYS.ports}`,
      };
    }
    if (user.acceleration === 'enabled') {
      const t = portThreshold({ user: user.threshold, policy: policyDefault });
      return {
        ...base,
        offload: true,
        threshold: t.value,
        thresholdSource: t.source,
        rule: 'user:acceleration',
        reason: `${USER_KEYS.acceleration}=enabled`,
      };
    }
    const verdict = evaluatePort(policy, p);
    if (!verdict.offload) {
      return { ...base, offload: false, threshold: null, rule: verdict.rule, reason: verdict.reason };
    }
    const t = portThreshold({ user: user.threshold, rule: verdict.threshold, policy: policyDefault });
    return {
      ...base,
      offload: true,
      threshold: t.value,
      thresholdSource: t.source,
      rule: verdict.rule,
      reason: verdict.reason,
    };
  });

  const offload: OffloadPort[] = [];
  for (const p of ports) {
    if (p.offload && p.threshold !== null && p.protocol !== 'SCTP') {
      offload.push({ port: p.port, protocol: p.protocol, threshold: p.threshold });
    }
  }
  offload.sort(comparePorts);

  // One limit for the hint the webhook writes and the daemon reads: past it, nothing is offloaded
  // (by both, since both decide here) rather than a hint that one side would refuse.
  const hint = offloadHintFits(offload);
  if (!hint.fits) {
    return nothing(
      service,
      policy,
      user.acceleration === 'enabled' ? 'user' : 'policy',
      'contract:hint-limit',
      `${offload.length} ports would be offloaded, but their ${HINT_KEYS.offload} would be ` +
        `${hint.length} characters, more than the ${VALUE_MAX_LENGTH} a hint may carry; nothing is offloaded`,
    );
  }

  const source: DecisionSource = ports.some((p) => p.rule.startsWith('user:')) ? 'user' : 'policy';
  const rules = [...new Set(ports.map((p) => p.rule))];
  const reason =
    ports.length === 0
      ? 'the Service has no ports'
      : boundedReason([...ports].sort(comparePorts).map(portLine));
  return {
    offload,
    reason: oneLine(reason),
    rule: rules.join(',') || 'none',
    policy: policy.id,
    source,
    ports,
    warnings: [],
    specHash: specHash(service),
  };
}

/**
 * The daemon's view: the webhook's hints when they are valid and match the current spec,
 * otherwise the same policy evaluated here (Services admitted while the webhook was down, or
 * before Slipstream was installed). User keys and the namespace opt-out always win, so hints
 * are used only when neither is present.
 */
export function effectiveDecision(service: Service, policy: Policy, namespace?: Namespace): Decision {
  if (service.noClusterIPReason || namespaceOptedOut(namespace) || hasUserHints(service)) {
    return decide(service, policy, namespace);
  }
  const hints = parseWebhookHints(service);
  if (!hints.value) {
    const local = decide(service, policy, namespace);
    const why = hints.problems[0];
    const note = why
      ? `no valid webhook hints (${why.key}: ${why.message}); decided locally`
      : 'decided locally';
    return { ...local, reason: oneLine(`${note}: ${local.reason}`) };
  }
  const offload = hints.value.offload;
  const hinted = new Map(offload.map((o) => [portKey(o), o]));
  const ports: PortDecision[] = service.ports.map((p) => {
    const on = hinted.get(portKey(p));
    return {
      port: p.port,
      protocol: p.protocol,
      ...(p.name ? { name: p.name } : {}),
      offload: on !== undefined,
      threshold: on?.threshold ?? null,
      rule: 'hints',
      reason: on ? `listed in ${HINT_KEYS.offload}` : `not listed in ${HINT_KEYS.offload}`,
    };
  });
  return {
    offload,
    reason: oneLine(hints.value.reason || 'webhook hints'),
    rule: 'hints',
    policy: hints.value.policy,
    source: 'hints',
    ports,
    warnings: [],
    specHash: specHash(service),
  };
}
