// The contract: the annotation keys the webhook and the daemon agree on, the one length limit
// for their values, and the parsing of the user-owned keys. Annotations are untrusted user
// input: everything leaves this module as a typed value or as a problem that names the key.
// The webhook-owned keys are written and read back in hints.ts.

import { hash } from 'node:crypto';
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
  /** `5432/TCP=20,8080/TCP=100` (each port with its threshold), or `none`. */
  offload: 'hints.slipstream.dev/offload',
  /** Read only: the one threshold of the older `5432/TCP,8080/TCP` offload form. */
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

/**
 * The one length limit for every annotation value Slipstream reads or writes, user keys and hints
 * alike: the webhook never writes a longer hint (decide() offloads nothing rather than exceed it),
 * and a longer value is refused before any parsing. 16 KiB holds the offload hint of about 1,200
 * ports, and keeps the hints well inside the API server's 256 KiB budget for all annotations.
 */
export const VALUE_MAX_LENGTH = 16_384;

export type Acceleration = 'enabled' | 'disabled';

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

export function tooLong(key: string, raw: string): Problem | undefined {
  return raw.length > VALUE_MAX_LENGTH
    ? { key, message: `value is ${raw.length} characters long; at most ${VALUE_MAX_LENGTH} are accepted` }
    : undefined;
}

/** Renders an untrusted value for a message: bounded, printable, quoted. */
export function quote(raw: string): string {
  const cut = raw.length > 40 ? `${raw.slice(0, 40)}…` : raw;
  return JSON.stringify(cut);
}

function invalid<T>(key: string, message: string): Parsed<T | undefined> {
  return { value: undefined, problems: [{ key, message }] };
}

/**
 * The same first step for every key: refuse an oversized value, then drop surrounding
 * whitespace (list keys drop it around each entry too). Inner whitespace is never ignored.
 */
function text(key: string, raw: string): { ok: true; text: string } | { ok: false; problem: Problem } {
  const long = tooLong(key, raw);
  return long ? { ok: false, problem: long } : { ok: true, text: raw.trim() };
}

/** A packet threshold: a plain decimal integer 0–1,000,000 (no sign, exponent, or fraction). */
export function parseThreshold(key: string, raw: string): Parsed<number | undefined> {
  const read = text(key, raw);
  if (!read.ok) return { value: undefined, problems: [read.problem] };
  if (!/^[0-9]{1,7}$/.test(read.text)) {
    return invalid(key, `${quote(raw)} is not a decimal integer from 0 to ${THRESHOLD_MAX}`);
  }
  const value = Number(read.text);
  if (value > THRESHOLD_MAX) return invalid(key, `${value} is above the maximum ${THRESHOLD_MAX}`);
  return { value, problems: [] };
}

export function parseAcceleration(raw: string): Parsed<Acceleration | undefined> {
  const key = USER_KEYS.acceleration;
  const read = text(key, raw);
  if (!read.ok) return { value: undefined, problems: [read.problem] };
  if (read.text === 'enabled' || read.text === 'disabled') return { value: read.text, problems: [] };
  return invalid(key, `${quote(raw)} is not one of "enabled", "disabled"`);
}

const PORT_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Parses `5432,grpc,9000/UDP` (the protocol suffix in any case) and resolves each entry against
 * the Service's own ports. One bad entry makes the whole value invalid: the caller then offloads
 * nothing, so a typo in a key meant to restrict never widens what is offloaded.
 */
export function parsePorts(
  raw: string,
  servicePorts: readonly ServicePort[],
): Parsed<ServicePort[] | undefined> {
  const key = USER_KEYS.ports;
  const read = text(key, raw);
  if (!read.ok) return { value: undefined, problems: [read.problem] };
  // Indexed once, so that resolving is linear in entries plus ports.
  const byNumber = new Map<number, ServicePort[]>();
  const byName = new Map<string, ServicePort[]>();
  const add = <K>(index: Map<K, ServicePort[]>, key: K, p: ServicePort) => {
    const list = index.get(key);
    if (list) list.push(p);
    else index.set(key, [p]);
  };
  for (const p of servicePorts) {
    add(byNumber, p.port, p);
    if (p.name !== undefined) add(byName, p.name, p);
  }
  const chosen = new Map<string, ServicePort>();
  const entries = read.text.split(',');
  for (const [i, rawEntry] of entries.entries()) {
    const entry = rawEntry.trim();
    if (entry === '') return invalid(key, `entry ${i + 1} of ${entries.length} is empty`);
    const match = /^([^/]+)(?:\/([A-Za-z]+))?$/.exec(entry);
    const what = match?.[1] ?? '';
    const suffix = match?.[2]?.toUpperCase();
    if (!match || (suffix !== undefined && suffix !== 'TCP' && suffix !== 'UDP')) {
      return invalid(key, `${quote(entry)} is not a port number or name, optionally with /TCP or /UDP`);
    }
    let candidates: ServicePort[] | undefined;
    if (/^[0-9]{1,5}$/.test(what) && Number(what) >= 1 && Number(what) <= 65535) {
      candidates = byNumber.get(Number(what));
    } else if (PORT_NAME.test(what)) {
      candidates = byName.get(what);
    } else {
      return invalid(key, `${quote(entry)} is not a port number or name, optionally with /TCP or /UDP`);
    }
    const matches = (candidates ?? []).filter((p) => suffix === undefined || p.protocol === suffix);
    if (matches.length === 0) return invalid(key, `the Service has no port ${quote(entry)}`);
    for (const p of matches) chosen.set(portKey(p), p);
  }
  return { value: [...chosen.values()], problems: [] };
}

/** Reads the user-owned keys; every invalid value is reported (decide() then offloads nothing). */
export function parseUserHints(service: Service): Parsed<UserHints> {
  const hints: UserHints = {};
  const problems: Problem[] = [];
  const a = service.annotations;
  const acceleration = a[USER_KEYS.acceleration];
  if (acceleration !== undefined) {
    const parsed = parseAcceleration(acceleration);
    for (const p of parsed.problems) problems.push(p);
    if (parsed.value) hints.acceleration = parsed.value;
  }
  const threshold = a[USER_KEYS.packetThreshold];
  if (threshold !== undefined) {
    const parsed = parseThreshold(USER_KEYS.packetThreshold, threshold);
    for (const p of parsed.problems) problems.push(p);
    if (parsed.value !== undefined) hints.threshold = parsed.value;
  }
  const ports = a[USER_KEYS.ports];
  if (ports !== undefined) {
    const parsed = parsePorts(ports, service.ports);
    for (const p of parsed.problems) problems.push(p);
    if (parsed.value) hints.ports = parsed.value;
  }
  return { value: hints, problems };
}

export function hasUserHints(service: Service): boolean {
  return Object.values(USER_KEYS).some((key) => service.annotations[key] !== undefined);
}

const collator = new Intl.Collator();

/** The fingerprint of a decision's inputs: the Service's ports and the user-owned keys. */
export function specHash(service: Service): string {
  // Each port's text is computed once, then sorted (the same order as comparing texts pairwise).
  const ports = service.ports
    .map((p) => {
      const entry = [p.port, p.protocol, p.name ?? '', p.appProtocol ?? ''];
      return { entry, text: JSON.stringify(entry) };
    })
    .sort((a, b) => collator.compare(a.text, b.text))
    .map((p) => p.entry);
  const user = Object.values(USER_KEYS).map((key) => service.annotations[key] ?? null);
  // One-shot: no Hash object (and its native state) to create and collect for every review.
  return hash('sha256', JSON.stringify([ports, user]), 'hex').slice(0, 16);
}

/** The canonical order of ports everywhere (hints, reasons, status): by number, then protocol. */
export function comparePorts(
  x: { port: number; protocol: Protocol },
  y: { port: number; protocol: Protocol },
) {
  return x.port - y.port || (x.protocol < y.protocol ? -1 : x.protocol > y.protocol ? 1 : 0);
}
