// The hint contract: the annotation keys the webhook and the daemon agree on, and the one
// place where their values are parsed and validated. Annotations are untrusted user input:
// everything leaves this module as a typed value or as a problem that names the key.

import { createHash } from 'node:crypto';
import { type Protocol, portKey, type Service, type ServicePort } from './service.ts';

/** User-owned keys: the webhook never writes them, and they always win. */
export const USER_KEYS = {
  acceleration: 'slipstream.dev/acceleration',
  packetThreshold: 'slipstream.dev/packet-threshold',
  ports: 'slipstream.dev/ports',
} as const;

/** Webhook-owned keys: recomputed on every CREATE and UPDATE. */
export const HINT_PREFIX = 'hints.slipstream.dev/';
export const HINT_KEYS = {
  offload: 'hints.slipstream.dev/offload',
  packetThreshold: 'hints.slipstream.dev/packet-threshold',
  reason: 'hints.slipstream.dev/reason',
  policy: 'hints.slipstream.dev/policy',
  /** W3C traceparent of the review that last changed the decision (links webhook and daemon traces). */
  trace: 'hints.slipstream.dev/trace',
  /**
   * Hash of what the decision was made from (ports with names and appProtocols, and the user keys),
   * so a reader can tell hints that still fit the Service from hints left over from before a change
   * the webhook never saw (a port added while it was down).
   */
  specHash: 'hints.slipstream.dev/spec-hash',
} as const;

/** Namespace label that opts every Service of the namespace out. */
export const NAMESPACE_OPT_OUT_LABEL = 'slipstream.dev/acceleration';
export const NAMESPACE_OPT_OUT_VALUE = 'disabled';

export const THRESHOLD_MAX = 1_000_000;
export const DEFAULT_THRESHOLD = 20;
/** Longer values are refused before any parsing: nothing legitimate needs more. */
const MAX_VALUE_LENGTH = 1024;
const MAX_PORT_ENTRIES = 128;

export type Acceleration = 'enabled' | 'disabled';

export interface PortSelector {
  /** A port number or a port name, as the user wrote it. */
  port: number | string;
  protocol?: 'TCP' | 'UDP';
}

export interface UserHints {
  acceleration?: Acceleration;
  threshold?: number;
  /** The Service ports the user allows to be offloaded (resolved against spec.ports). */
  ports?: ServicePort[];
}

export interface Problem {
  key: string;
  message: string;
}

export interface Parsed<T> {
  value: T;
  problems: Problem[];
}

function tooLong(key: string, raw: string): Problem | undefined {
  return raw.length > MAX_VALUE_LENGTH
    ? { key, message: `value is ${raw.length} characters long; at most ${MAX_VALUE_LENGTH} are accepted` }
    : undefined;
}

/** Renders an untrusted value for a message: bounded, printable, quoted. */
export function quote(raw: string): string {
  const cut = raw.length > 40 ? `${raw.slice(0, 40)}…` : raw;
  return JSON.stringify(cut);
}

/** A packet threshold: a plain decimal integer 0–1,000,000 (no sign, exponent, or fraction). */
export function parseThreshold(key: string, raw: string): Parsed<number | undefined> {
  const long = tooLong(key, raw);
  if (long) return { value: undefined, problems: [long] };
  const text = raw.trim();
  if (!/^[0-9]{1,7}$/.test(text)) {
    return {
      value: undefined,
      problems: [{ key, message: `${quote(raw)} is not a decimal integer from 0 to ${THRESHOLD_MAX}` }],
    };
  }
  const value = Number(text);
  if (value > THRESHOLD_MAX) {
    return {
      value: undefined,
      problems: [{ key, message: `${value} is above the maximum ${THRESHOLD_MAX}` }],
    };
  }
  return { value, problems: [] };
}

export function parseAcceleration(raw: string): Parsed<Acceleration | undefined> {
  const key = USER_KEYS.acceleration;
  const text = raw.trim();
  if (text === 'enabled' || text === 'disabled') return { value: text, problems: [] };
  return {
    value: undefined,
    problems: [{ key, message: `${quote(raw)} is not one of "enabled", "disabled"` }],
  };
}

const PORT_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Parses `5432,grpc,9000/UDP` and resolves each entry against the Service's own ports. */
export function parsePorts(
  raw: string,
  servicePorts: readonly ServicePort[],
): Parsed<ServicePort[] | undefined> {
  const key = USER_KEYS.ports;
  const long = tooLong(key, raw);
  if (long) return { value: undefined, problems: [long] };
  const entries = raw.split(',').map((e) => e.trim());
  if (entries.length > MAX_PORT_ENTRIES) {
    return { value: undefined, problems: [{ key, message: `more than ${MAX_PORT_ENTRIES} entries` }] };
  }
  const chosen = new Map<string, ServicePort>();
  for (const entry of entries) {
    const match = /^([^/]+?)(?:\/(TCP|UDP|tcp|udp))?$/.exec(entry);
    const what = match?.[1] ?? '';
    const protocol = match?.[2]?.toUpperCase() as 'TCP' | 'UDP' | undefined;
    let selector: PortSelector;
    if (/^[0-9]{1,5}$/.test(what) && Number(what) >= 1 && Number(what) <= 65535) {
      selector = { port: Number(what), ...(protocol ? { protocol } : {}) };
    } else if (PORT_NAME.test(what)) {
      selector = { port: what, ...(protocol ? { protocol } : {}) };
    } else {
      return {
        value: undefined,
        problems: [
          { key, message: `${quote(entry)} is not a port number, port name, or either with /TCP or /UDP` },
        ],
      };
    }
    const matches = servicePorts.filter(
      (p) =>
        (typeof selector.port === 'number' ? p.port === selector.port : p.name === selector.port) &&
        (selector.protocol === undefined || p.protocol === selector.protocol),
    );
    if (matches.length === 0) {
      return { value: undefined, problems: [{ key, message: `the Service has no port ${quote(entry)}` }] };
    }
    for (const p of matches) chosen.set(portKey(p), p);
  }
  return { value: [...chosen.values()], problems: [] };
}

/** Reads the user-owned keys; an invalid value is dropped (as if absent) and reported. */
export function parseUserHints(service: Service): Parsed<UserHints> {
  const hints: UserHints = {};
  const problems: Problem[] = [];
  const a = service.annotations;
  const acceleration = a[USER_KEYS.acceleration];
  if (acceleration !== undefined) {
    const parsed = parseAcceleration(acceleration);
    problems.push(...parsed.problems);
    if (parsed.value) hints.acceleration = parsed.value;
  }
  const threshold = a[USER_KEYS.packetThreshold];
  if (threshold !== undefined) {
    const parsed = parseThreshold(USER_KEYS.packetThreshold, threshold);
    problems.push(...parsed.problems);
    if (parsed.value !== undefined) hints.threshold = parsed.value;
  }
  const ports = a[USER_KEYS.ports];
  if (ports !== undefined) {
    const parsed = parsePorts(ports, service.ports);
    problems.push(...parsed.problems);
    if (parsed.value) hints.ports = parsed.value;
  }
  return { value: hints, problems };
}

export function hasUserHints(service: Service): boolean {
  return Object.values(USER_KEYS).some((key) => service.annotations[key] !== undefined);
}

/** The fingerprint of a decision's inputs: the Service's ports and the user-owned keys. */
export function specHash(service: Service): string {
  const ports = service.ports
    .map((p) => [p.port, p.protocol, p.name ?? '', p.appProtocol ?? ''])
    .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
  const user = Object.values(USER_KEYS).map((key) => service.annotations[key] ?? null);
  return createHash('sha256')
    .update(JSON.stringify([ports, user]))
    .digest('hex')
    .slice(0, 16);
}

/** The webhook's hints as the daemon reads them back. */
export interface WebhookHints {
  offload: { port: number; protocol: 'TCP' | 'UDP' }[];
  threshold?: number;
  reason: string;
  policy: string;
}

/** Canonical form: sorted by port, then protocol; `none` when empty. */
export function formatOffload(ports: readonly { port: number; protocol: Protocol }[]): string {
  if (ports.length === 0) return 'none';
  return [...ports]
    .sort((x, y) => x.port - y.port || x.protocol.localeCompare(y.protocol))
    .map(portKey)
    .join(',');
}

/**
 * Reads the webhook-owned keys and checks them against the current spec. Returns a problem when
 * they are absent, malformed, or stale (a port the Service no longer has, an SCTP port), so that
 * the caller can fall back to evaluating the policy itself.
 */
export function parseWebhookHints(service: Service): Parsed<WebhookHints | undefined> {
  const a = service.annotations;
  const offload = a[HINT_KEYS.offload];
  if (offload === undefined)
    return { value: undefined, problems: [{ key: HINT_KEYS.offload, message: 'absent' }] };
  const long = tooLong(HINT_KEYS.offload, offload);
  if (long) return { value: undefined, problems: [long] };
  const reason = a[HINT_KEYS.reason] ?? '';
  const policy = a[HINT_KEYS.policy] ?? '';
  if (a[HINT_KEYS.specHash] !== specHash(service)) {
    return {
      value: undefined,
      problems: [
        {
          key: HINT_KEYS.specHash,
          message: 'stale: the ports or user keys changed since the webhook decided',
        },
      ],
    };
  }
  if (offload === 'none') return { value: { offload: [], reason, policy }, problems: [] };

  const ports: WebhookHints['offload'] = [];
  for (const entry of offload.split(',')) {
    const match = /^([0-9]{1,5})\/(TCP|UDP)$/.exec(entry);
    const port = Number(match?.[1]);
    const protocol = match?.[2] as 'TCP' | 'UDP' | undefined;
    if (!match || !protocol || port < 1 || port > 65535) {
      return {
        value: undefined,
        problems: [{ key: HINT_KEYS.offload, message: `${quote(entry)} is not port/TCP or port/UDP` }],
      };
    }
    if (!service.ports.some((p) => p.port === port && p.protocol === protocol)) {
      return {
        value: undefined,
        problems: [{ key: HINT_KEYS.offload, message: `stale: the Service has no port ${port}/${protocol}` }],
      };
    }
    ports.push({ port, protocol });
  }
  if (formatOffload(ports) !== offload) {
    return { value: undefined, problems: [{ key: HINT_KEYS.offload, message: 'not in canonical form' }] };
  }
  const rawThreshold = a[HINT_KEYS.packetThreshold];
  if (rawThreshold === undefined) {
    return { value: undefined, problems: [{ key: HINT_KEYS.packetThreshold, message: 'absent' }] };
  }
  const threshold = parseThreshold(HINT_KEYS.packetThreshold, rawThreshold);
  if (threshold.value === undefined) return { value: undefined, problems: threshold.problems };
  return { value: { offload: ports, threshold: threshold.value, reason, policy }, problems: [] };
}
