// The webhook-owned annotations (`hints.slipstream.dev/*`): written here for the webhook, and
// read back here for the daemon, so that both sides share one grammar and one length limit.
//
//   hints.slipstream.dev/offload: 5432/TCP=20,8080/TCP=100      each port with its own threshold
//   hints.slipstream.dev/offload: none
//
// The older form `5432/TCP,8080/TCP` plus `hints.slipstream.dev/packet-threshold: 20` (one threshold
// for every port) is still read, so Services admitted by an older webhook keep their hints.

import {
  comparePorts,
  HINT_KEYS,
  type Parsed,
  type Problem,
  quote,
  specHash,
  THRESHOLD_MAX,
  tooLong,
  VALUE_MAX_LENGTH,
} from './contract.ts';
import { portKey, type Service } from './service.ts';

/** One offloaded port and the packet threshold after which its connections are offloaded. */
export interface OffloadPort {
  port: number;
  protocol: 'TCP' | 'UDP';
  threshold: number;
}

/** What the hints express: the parts of a Decision the webhook writes. */
export interface HintedDecision {
  offload: readonly OffloadPort[];
  reason: string;
  policy: string;
  specHash: string;
}

/** Canonical form: sorted by port, then protocol, each `port/PROTO=threshold`; `none` when empty. */
export function formatOffload(ports: readonly OffloadPort[]): string {
  if (ports.length === 0) return 'none';
  return [...ports]
    .sort(comparePorts)
    .map((p) => `${portKey(p)}=${p.threshold}`)
    .join(',');
}

/** The longest offload entry with its comma, `65535/TCP=1000000,`. */
const ENTRY_MAX_LENGTH = 18;

/** Whether the offload hint of these ports fits the one limit (built only when it might not). */
export function offloadHintFits(
  ports: readonly OffloadPort[],
): { fits: true } | { fits: false; length: number } {
  if (ports.length * ENTRY_MAX_LENGTH <= VALUE_MAX_LENGTH) return { fits: true };
  const length = formatOffload(ports).length;
  return length <= VALUE_MAX_LENGTH ? { fits: true } : { fits: false, length };
}

/** The webhook-owned annotations that express a decision (the trace key is added by the webhook). */
export function formatHints(decision: HintedDecision): Record<string, string> {
  return {
    [HINT_KEYS.offload]: formatOffload(decision.offload),
    [HINT_KEYS.reason]: decision.reason,
    [HINT_KEYS.policy]: decision.policy,
    [HINT_KEYS.specHash]: decision.specHash,
  };
}

/** The webhook's hints as the daemon reads them back. */
export interface WebhookHints {
  offload: OffloadPort[];
  reason: string;
  policy: string;
}

function refuse(key: string, message: string): Parsed<WebhookHints | undefined> {
  return { value: undefined, problems: [{ key, message }] };
}

/** A canonical decimal threshold (as `String(n)` writes it), or undefined. */
function canonicalThreshold(raw: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,6})$/.test(raw)) return undefined;
  const value = Number(raw);
  return value <= THRESHOLD_MAX ? value : undefined;
}

/**
 * Reads the webhook-owned keys and checks them against the current spec. Returns a problem when
 * they are absent, too long, malformed, not in canonical form, or stale (a port the Service no
 * longer has, an SCTP port), so that the caller can fall back to evaluating the policy itself.
 */
export function parseWebhookHints(service: Service): Parsed<WebhookHints | undefined> {
  const a = service.annotations;
  for (const key of Object.values(HINT_KEYS)) {
    const raw = a[key];
    const long: Problem | undefined = raw === undefined ? undefined : tooLong(key, raw);
    if (long) return { value: undefined, problems: [long] };
  }
  const offload = a[HINT_KEYS.offload];
  if (offload === undefined) return refuse(HINT_KEYS.offload, 'absent');
  const reason = a[HINT_KEYS.reason] ?? '';
  const policy = a[HINT_KEYS.policy] ?? '';
  if (a[HINT_KEYS.specHash] !== specHash(service)) {
    return refuse(HINT_KEYS.specHash, 'stale: the ports or user keys changed since the webhook decided');
  }
  const shared = a[HINT_KEYS.packetThreshold];
  if (offload === 'none') {
    if (shared !== undefined) return refuse(HINT_KEYS.packetThreshold, 'set although nothing is offloaded');
    return { value: { offload: [], reason, policy }, problems: [] };
  }

  const have = new Set(service.ports.map(portKey));
  const seen = new Set<string>();
  const ports: OffloadPort[] = [];
  const entries = offload.split(',');
  // The older form: no `=threshold` on any entry, one shared threshold in its own key.
  const older = !offload.includes('=');
  let sharedThreshold: number | undefined;
  if (older) {
    if (shared === undefined) return refuse(HINT_KEYS.packetThreshold, 'absent');
    sharedThreshold = canonicalThreshold(shared);
    if (sharedThreshold === undefined) {
      return refuse(
        HINT_KEYS.packetThreshold,
        `${quote(shared)} is not a threshold from 0 to ${THRESHOLD_MAX}`,
      );
    }
  } else if (shared !== undefined) {
    return refuse(HINT_KEYS.packetThreshold, 'only read with the older offload form (no "=threshold")');
  }
  for (const entry of entries) {
    const match = older
      ? /^([0-9]{1,5})\/(TCP|UDP)$/.exec(entry)
      : /^([0-9]{1,5})\/(TCP|UDP)=([0-9]{1,7})$/.exec(entry);
    const port = Number(match?.[1]);
    const protocol = match?.[2] as 'TCP' | 'UDP' | undefined;
    const threshold = older ? sharedThreshold : canonicalThreshold(match?.[3] ?? '');
    if (!match || !protocol || port < 1 || port > 65535 || threshold === undefined) {
      const form = older ? 'port/TCP or port/UDP' : 'port/TCP=threshold or port/UDP=threshold';
      return refuse(HINT_KEYS.offload, `${quote(entry)} is not ${form}`);
    }
    const key = `${port}/${protocol}`;
    if (seen.has(key)) return refuse(HINT_KEYS.offload, `lists ${key} twice`);
    seen.add(key);
    if (!have.has(key)) return refuse(HINT_KEYS.offload, `stale: the Service has no port ${key}`);
    ports.push({ port, protocol, threshold });
  }
  const canonical = older
    ? [...ports]
        .sort(comparePorts)
        .map((p) => portKey(p))
        .join(',')
    : formatOffload(ports);
  if (canonical !== offload) return refuse(HINT_KEYS.offload, 'not in canonical form');
  return { value: { offload: ports.sort(comparePorts), reason, policy }, problems: [] };
}
