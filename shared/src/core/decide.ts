// Where a Service's acceleration is decided: per port, from the user's own keys (which always
// win), then the policy. The webhook and the daemon both call this; every Decision carries the
// human-readable reason that ends up in the annotation, the span, and `slipstream status`.

import {
  HINT_KEYS,
  hasUserHints,
  NAMESPACE_OPT_OUT_LABEL,
  NAMESPACE_OPT_OUT_VALUE,
  type Problem,
  parseUserHints,
  parseWebhookHints,
  specHash,
  USER_KEYS,
} from './contract.ts';
import { evaluatePort, type Policy } from './policy.ts';
import { type Namespace, type Protocol, portKey, type Service } from './service.ts';

export interface PortDecision {
  port: number;
  protocol: Protocol;
  name?: string;
  offload: boolean;
  /** A policy rule's name, `default`, or a `user:`/`contract:` marker. */
  rule: string;
  reason: string;
}

export type DecisionSource = 'no-cluster-ip' | 'namespace' | 'user' | 'policy' | 'hints';

export interface Decision {
  offload: { port: number; protocol: 'TCP' | 'UDP' }[];
  /** Offload once a connection has carried more than this many packets; null when nothing is offloaded. */
  threshold: number | null;
  /** One line a person understands. */
  reason: string;
  /** What decided, in short: `user:acceleration`, a rule name, `rule-a,rule-b`, … */
  rule: string;
  /** The policy that decided (its id), or the policy recorded in the webhook's hints. */
  policy: string;
  source: DecisionSource;
  ports: PortDecision[];
  /** Invalid user values that were ignored, naming the key. */
  warnings: Problem[];
  /** `specHash` of the Service the decision was made for. */
  specHash: string;
}

const MAX_REASON_LENGTH = 1000;

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
    threshold: null,
    reason: oneLine(reason),
    rule,
    policy: policy.id,
    source,
    ports: [],
    warnings,
    specHash: specHash(service),
  };
}

function sortPorts<T extends { port: number; protocol: string }>(ports: T[]): T[] {
  return ports.sort((x, y) => x.port - y.port || x.protocol.localeCompare(y.protocol));
}

export function namespaceOptedOut(namespace: Namespace | undefined): boolean {
  return namespace?.labels[NAMESPACE_OPT_OUT_LABEL] === NAMESPACE_OPT_OUT_VALUE;
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
  if (user.acceleration === 'disabled') {
    return nothing(
      service,
      policy,
      'user',
      'user:acceleration',
      `${USER_KEYS.acceleration}=disabled set by the user`,
      problems,
    );
  }

  // The threshold each offloaded port's rule asks for, by port key.
  const ruleThresholds = new Map<string, number>();
  const ports: PortDecision[] = service.ports.map((p) => {
    const base = { port: p.port, protocol: p.protocol, ...(p.name ? { name: p.name } : {}) };
    if (p.protocol === 'SCTP') {
      return { ...base, offload: false, rule: 'contract:sctp', reason: 'flowtables carry only TCP and UDP' };
    }
    if (user.ports && !user.ports.some((u) => u.port === p.port && u.protocol === p.protocol)) {
      return { ...base, offload: false, rule: 'user:ports', reason: `not listed in ${USER_KEYS.ports}` };
    }
    if (user.acceleration === 'enabled') {
      ruleThresholds.set(portKey(p), policy.defaultThreshold);
      return {
        ...base,
        offload: true,
        rule: 'user:acceleration',
        reason: `${USER_KEYS.acceleration}=enabled`,
      };
    }
    const verdict = evaluatePort(policy, p);
    ruleThresholds.set(portKey(p), verdict.threshold);
    return { ...base, offload: verdict.offload, rule: verdict.rule, reason: verdict.reason };
  });

  const offloaded = ports.filter((p) => p.offload);
  const offload = sortPorts(offloaded.map((p) => ({ port: p.port, protocol: p.protocol as 'TCP' | 'UDP' })));

  // One threshold per Service (the contract's shape): the user's, else the lowest any deciding
  // rule asks for, so that no port the policy wants accelerated waits longer than its rule says.
  let threshold: number | null = null;
  let thresholdWhy = '';
  if (offload.length > 0) {
    if (user.threshold !== undefined) {
      threshold = user.threshold;
      thresholdWhy = `threshold ${threshold} from ${USER_KEYS.packetThreshold}`;
    } else {
      const candidates = offloaded.map((p) => ruleThresholds.get(portKey(p)) ?? policy.defaultThreshold);
      threshold = Math.min(...candidates);
      thresholdWhy = `threshold ${threshold}`;
    }
  }

  const source: DecisionSource = ports.some((p) => p.rule.startsWith('user:')) ? 'user' : 'policy';
  const rules = [...new Set(ports.map((p) => p.rule))];
  let reason: string;
  if (ports.length === 0) {
    reason = 'the Service has no ports';
  } else {
    const perPort = sortPorts([...ports]).map(
      (p) => `${portKey(p)} ${p.offload ? 'offload' : 'keep'}: ${p.rule} (${p.reason})`,
    );
    reason = [...perPort, ...(thresholdWhy ? [thresholdWhy] : [])].join('; ');
  }
  return {
    offload,
    threshold,
    reason: oneLine(reason),
    rule: rules.join(',') || 'none',
    policy: policy.id,
    source,
    ports,
    warnings: problems,
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
  const ports: PortDecision[] = service.ports.map((p) => {
    const on = offload.some((o) => o.port === p.port && o.protocol === p.protocol);
    return {
      port: p.port,
      protocol: p.protocol,
      ...(p.name ? { name: p.name } : {}),
      offload: on,
      rule: 'hints',
      reason: on ? `listed in ${HINT_KEYS.offload}` : `not listed in ${HINT_KEYS.offload}`,
    };
  });
  return {
    offload,
    threshold: offload.length > 0 ? (hints.value.threshold ?? policy.defaultThreshold) : null,
    reason: oneLine(hints.value.reason || 'webhook hints'),
    rule: 'hints',
    policy: hints.value.policy,
    source: 'hints',
    ports,
    warnings: [],
    specHash: specHash(service),
  };
}

/** The webhook-owned annotations that express a decision (trace context is added by the webhook). */
export function hintAnnotations(decision: Decision): Record<string, string> {
  const offload =
    decision.offload.length === 0
      ? 'none'
      : sortPorts([...decision.offload])
          .map(portKey)
          .join(',');
  return {
    [HINT_KEYS.offload]: offload,
    ...(decision.threshold !== null && decision.offload.length > 0
      ? { [HINT_KEYS.packetThreshold]: String(decision.threshold) }
      : {}),
    [HINT_KEYS.reason]: decision.reason,
    [HINT_KEYS.policy]: decision.policy,
    [HINT_KEYS.specHash]: decision.specHash,
  };
}
