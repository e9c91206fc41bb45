// What the TLS Secret should hold next: the decision half of the Secret bootstrap, with no API
// calls (bootstrap.ts reads and writes; this decides). Given what the Secret holds now, what the
// MutatingWebhookConfiguration's caBundle trusts, and the clock, `plan` returns the next content
// and the reasons it differs (none: nothing to write).
//
// The Secret (type kubernetes.io/tls):
//   tls.crt, tls.key          the serving certificate, signed by ca.crt
//   ca.crt, ca.key            the CA that signs it (the key is here so that every replica can renew)
//   ca-next.crt, ca-next.key  a CA staged for rotation: already in the caBundle, not signing yet
//   ca-previous.crt           the CA before the last rotation: still in the caBundle for the overlap
// annotations: slipstream.dev/tls-generation (a counter, +1 per write), slipstream.dev/ca-previous-since.
//
// The caBundle is a function of the Secret: ca.crt, then ca-next.crt, then ca-previous.crt.
//
// Rotation:
//   serving certificate  re-issued by the current CA once less than certRenewBefore is left (or when
//                        it is missing, broken, for other names, or not signed by the current CA).
//                        The CA does not change, so neither does the caBundle.
//   CA                   once less than caRenewBefore is left: (1) a next CA is staged, and the
//                        caBundle becomes [current, next]; (2) once the caBundle has held the next
//                        CA for caOverlap (every API server has loaded it), the next CA becomes
//                        current and signs a new serving certificate; the old CA stays in the
//                        caBundle as ca-previous; (3) after another caOverlap (every replica has
//                        picked up the new serving certificate), ca-previous is dropped.
//   At no point does a replica serve a certificate whose CA is missing from the caBundle.

import {
  caProblem,
  createCa,
  dnsNamesOf,
  issueServingCertificate,
  type KeyPair,
  keyMatches,
  notAfter,
  parseCertificate,
  signedBy,
  splitPemBundle,
} from './certs.ts';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

export interface TlsDurations {
  /** Lifetime of a serving certificate. */
  certValidityMs: number;
  /** Re-issue the serving certificate when less than this is left. */
  certRenewBeforeMs: number;
  /** Lifetime of a CA. */
  caValidityMs: number;
  /** Start a CA rotation when less than this is left. */
  caRenewBeforeMs: number;
  /** How long each rotation step waits: new CA trusted before it signs, old CA trusted after it stopped. */
  caOverlapMs: number;
}

/**
 * Serving certificate 90 days, renewed with 30 left: the usual ACME/cert-manager rhythm, so a
 * stuck renewal has a month of warnings before anything breaks. CA 10 years, rotated with one
 * year left: the CA is the part whose change must travel through the caBundle to every API
 * server, so it changes rarely; it is trusted by this one webhook configuration only (not by the
 * cluster), and its key sits in the same Secret, behind the same RBAC, as the serving key, so a
 * shorter CA life would not shrink what a leak exposes. Overlap 24 hours: each step of a CA
 * rotation waits far longer than the API servers' informer lag and the replicas' 1-minute check,
 * and long enough for a replica cut off from the API server for a while to catch up.
 */
export const DEFAULT_DURATIONS: TlsDurations = {
  certValidityMs: 90 * DAY,
  certRenewBeforeMs: 30 * DAY,
  caValidityMs: 3650 * DAY,
  caRenewBeforeMs: 365 * DAY,
  caOverlapMs: DAY,
};

/** How often every replica re-reads the Secret and the webhook configuration. */
export const DEFAULT_CHECK_INTERVAL_MS = MINUTE;

/** Throws when the durations cannot work together (a certificate would expire between checks). */
export function checkDurations(d: TlsDurations, checkIntervalMs: number): void {
  const problems: string[] = [];
  for (const [name, value] of Object.entries(d)) {
    if (!Number.isFinite(value) || value <= 0) problems.push(`${name} must be positive`);
  }
  if (d.certRenewBeforeMs >= d.certValidityMs)
    problems.push('cert renew-before must be shorter than its validity');
  if (d.caRenewBeforeMs >= d.caValidityMs) problems.push('CA renew-before must be shorter than its validity');
  if (d.caRenewBeforeMs <= 2 * d.caOverlapMs) {
    problems.push('CA renew-before must be longer than two overlaps (stage, then switch, before it expires)');
  }
  if (d.certRenewBeforeMs <= 2 * checkIntervalMs) {
    problems.push('cert renew-before must be longer than two check intervals');
  }
  if (d.caOverlapMs <= 2 * checkIntervalMs)
    problems.push('CA overlap must be longer than two check intervals');
  if (problems.length > 0) throw new Error(`TLS durations do not work together: ${problems.join('; ')}`);
}

export const SECRET_KEYS = {
  cert: 'tls.crt',
  key: 'tls.key',
  caCert: 'ca.crt',
  caKey: 'ca.key',
  nextCaCert: 'ca-next.crt',
  nextCaKey: 'ca-next.key',
  previousCaCert: 'ca-previous.crt',
} as const;

export const ANNOTATIONS = {
  /** On the Secret: +1 on every write by a replica. */
  generation: 'slipstream.dev/tls-generation',
  /** On the Secret: when ca-previous stopped signing (RFC 3339). */
  previousSince: 'slipstream.dev/ca-previous-since',
  /** On the webhook configuration: `<secret uid>/<generation>` the caBundle was written from. */
  bundleSource: 'slipstream.dev/ca-bundle-source',
  /** On the webhook configuration: when the caBundle's content last changed (RFC 3339). */
  bundleSince: 'slipstream.dev/ca-bundle-since',
} as const;

/** The Secret's content, decoded, not yet checked. */
export interface StoredTls {
  cert?: string;
  key?: string;
  caCert?: string;
  caKey?: string;
  nextCaCert?: string;
  nextCaKey?: string;
  previousCaCert?: string;
  previousSince?: number;
  generation: number;
}

/** The Secret's content, checked: usable as it is. */
export interface TlsState {
  serving: KeyPair;
  ca: KeyPair;
  next?: KeyPair;
  previous?: { cert: string; since: number };
  generation: number;
}

/** What the webhook configuration's caBundle says. */
export interface BundleView {
  /** False when the configuration does not exist (or has no webhooks): nobody can call us with any CA. */
  exists: boolean;
  /** SHA-256 fingerprints of the CAs that every webhook's caBundle contains. */
  trusted: ReadonlySet<string>;
  /** When the caBundle content last changed, per its annotation. */
  since?: number;
  /** The Secret uid and generation it was written from. */
  source?: { uid: string; generation: number };
}

function parseTime(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const time = Date.parse(value);
  return Number.isNaN(time) ? undefined : time;
}

export function formatTime(ms: number): string {
  return new Date(ms).toISOString();
}

/** Decodes a Secret's `data` (base64 values) and annotations. */
export function decodeSecret(
  data: Record<string, string> | undefined,
  annotations: Record<string, string> | undefined,
): StoredTls {
  const text = (key: string): string | undefined => {
    const value = data?.[key];
    return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
  };
  const generation = Number(annotations?.[ANNOTATIONS.generation] ?? '0');
  const stored: StoredTls = {
    generation: Number.isSafeInteger(generation) && generation > 0 ? generation : 0,
  };
  const fields: [keyof typeof SECRET_KEYS, string][] = Object.entries(SECRET_KEYS) as [
    keyof typeof SECRET_KEYS,
    string,
  ][];
  for (const [field, key] of fields) {
    const value = text(key);
    if (value) stored[field] = value;
  }
  const since = parseTime(annotations?.[ANNOTATIONS.previousSince]);
  if (since !== undefined) stored.previousSince = since;
  return stored;
}

/** The Secret's `data` (base64) and our annotations for a state. */
export function encodeSecret(state: TlsState): {
  data: Record<string, string>;
  annotations: Record<string, string>;
} {
  const b64 = (pem: string) => Buffer.from(pem, 'utf8').toString('base64');
  const data: Record<string, string> = {
    [SECRET_KEYS.cert]: b64(state.serving.cert),
    [SECRET_KEYS.key]: b64(state.serving.key),
    [SECRET_KEYS.caCert]: b64(state.ca.cert),
    [SECRET_KEYS.caKey]: b64(state.ca.key),
  };
  if (state.next) {
    data[SECRET_KEYS.nextCaCert] = b64(state.next.cert);
    data[SECRET_KEYS.nextCaKey] = b64(state.next.key);
  }
  const annotations: Record<string, string> = { [ANNOTATIONS.generation]: String(state.generation) };
  if (state.previous) {
    data[SECRET_KEYS.previousCaCert] = b64(state.previous.cert);
    annotations[ANNOTATIONS.previousSince] = formatTime(state.previous.since);
  }
  return { data, annotations };
}

/** The caBundle (PEM) for a state: current CA, then the next, then the previous. */
export function caBundleOf(state: TlsState): string {
  return [state.ca.cert, state.next?.cert, state.previous?.cert]
    .filter((pem): pem is string => pem !== undefined)
    .flatMap(splitPemBundle)
    .join('');
}

/** SHA-256 fingerprints of the certificates in a PEM bundle. */
export function fingerprints(bundle: string): Set<string> {
  const out = new Set<string>();
  for (const pem of splitPemBundle(bundle)) {
    const cert = parseCertificate(pem);
    if (cert) out.add(cert.fingerprint256);
  }
  return out;
}

export interface PlanContext {
  now: number;
  durations: TlsDurations;
  /** Names for the serving certificate; the first is its common name. */
  dnsNames: readonly string[];
  /** Prefix of CA common names. */
  caName: string;
  bundle: BundleView;
  /** The Secret's uid (undefined before it exists). */
  secretUid?: string;
}

export interface Plan {
  state: TlsState;
  /** Why the state differs from what is stored; empty: nothing to write. */
  changes: string[];
}

/** Why the stored serving pair cannot stay, or undefined when it can. */
function servingProblem(stored: StoredTls, ca: KeyPair, ctx: PlanContext): string | undefined {
  if (!stored.cert || !stored.key) return 'none yet';
  const cert = parseCertificate(stored.cert);
  if (!cert) return 'the certificate does not parse';
  if (!keyMatches(cert, stored.key)) return 'the key does not belong to the certificate';
  const caCert = parseCertificate(ca.cert);
  if (!caCert || !signedBy(cert, caCert)) return 'not signed by the current CA';
  const names = new Set(dnsNamesOf(cert));
  const missing = ctx.dnsNames.filter((n) => !names.has(n));
  if (missing.length > 0) return `does not name ${missing.join(', ')}`;
  const expires = notAfter(cert);
  if (expires <= ctx.now) return `expired at ${formatTime(expires)}`;
  if (expires - ctx.now < ctx.durations.certRenewBeforeMs) {
    // A certificate already cut off at the CA's expiry cannot get any longer until the CA rotates.
    const possible = Math.min(ctx.now + ctx.durations.certValidityMs, notAfter(caCert));
    if (possible - expires >= SECOND) return `expires at ${formatTime(expires)}`;
  }
  return undefined;
}

/** Whether the next CA has been in every API server's caBundle long enough to start signing. */
function trustedLongEnough(next: KeyPair, stored: StoredTls, ctx: PlanContext): boolean {
  const { bundle } = ctx;
  if (!bundle.exists) return true; // nothing calls the webhook, so nothing can fail
  const fingerprint = parseCertificate(next.cert)?.fingerprint256;
  if (!fingerprint || !bundle.trusted.has(fingerprint)) return false;
  // The caBundle must have been written from this very Secret content, not an older one.
  if (bundle.source?.uid !== ctx.secretUid || bundle.source?.generation !== stored.generation) return false;
  return bundle.since !== undefined && ctx.now - bundle.since >= ctx.durations.caOverlapMs;
}

/** Decides the Secret's next content. Generates keys when something must be (re-)issued. */
export async function plan(stored: StoredTls | undefined, ctx: PlanContext): Promise<Plan> {
  const { now, durations } = ctx;
  const have: StoredTls = stored ?? { generation: 0 };
  const changes: string[] = [];

  // The previous CA: kept for one overlap after it stopped signing.
  let previous: TlsState['previous'];
  const previousCert = parseCertificate(have.previousCaCert);
  if (have.previousCaCert) {
    if (!previousCert?.ca) changes.push('dropped ca-previous: not a CA certificate');
    else if (notAfter(previousCert) <= now) changes.push('dropped ca-previous: expired');
    else if (have.previousSince === undefined) {
      previous = { cert: have.previousCaCert, since: now };
      changes.push('ca-previous had no start time: its overlap starts now');
    } else if (now - have.previousSince >= durations.caOverlapMs) {
      changes.push('dropped ca-previous: its overlap is over');
    } else previous = { cert: have.previousCaCert, since: have.previousSince };
  }

  // The staged next CA.
  let next: KeyPair | undefined;
  if (have.nextCaCert || have.nextCaKey) {
    const problem = caProblem({ cert: have.nextCaCert, key: have.nextCaKey } as KeyPair, now);
    if (problem) changes.push(`dropped ca-next: ${problem}`);
    else next = { cert: have.nextCaCert!, key: have.nextCaKey! };
  }

  // The current CA.
  let ca: KeyPair;
  const caIssue = caProblem({ cert: have.caCert, key: have.caKey } as KeyPair, now);
  const newCa = () => createCa({ name: ctx.caName, validityMs: durations.caValidityMs, now });
  if (caIssue) {
    // Whatever still verifies keeps being trusted for one overlap, for replicas serving its certificates.
    const old = parseCertificate(have.caCert);
    if (old?.ca && notAfter(old) > now) previous = { cert: have.caCert!, since: now };
    if (next) {
      ca = next;
      next = undefined;
      changes.push(`the CA is unusable (${caIssue}): the staged next CA takes over`);
    } else {
      ca = await newCa();
      changes.push(
        stored && caIssue !== 'missing'
          ? `the CA is unusable (${caIssue}): created a new CA`
          : 'created the CA',
      );
    }
  } else {
    ca = { cert: have.caCert!, key: have.caKey! };
    if (next && !previous && trustedLongEnough(next, have, ctx)) {
      previous = { cert: ca.cert, since: now };
      ca = next;
      next = undefined;
      changes.push('the next CA has been in the caBundle for the overlap: it signs from now on');
    }
  }

  // Stage the next CA when the current one nears its end.
  const caCert = parseCertificate(ca.cert)!;
  if (!next && notAfter(caCert) - now < durations.caRenewBeforeMs) {
    next = await newCa();
    changes.push(`the CA expires at ${formatTime(notAfter(caCert))}: staged the next CA in the caBundle`);
  }

  // The serving certificate.
  let serving: KeyPair;
  const issue = servingProblem(have, ca, ctx);
  if (issue) {
    serving = await issueServingCertificate(ca, {
      dnsNames: ctx.dnsNames,
      validityMs: durations.certValidityMs,
      now,
    });
    changes.push(`issued a serving certificate (previous one: ${issue})`);
  } else serving = { cert: have.cert!, key: have.key! };

  const state: TlsState = {
    serving,
    ca,
    ...(next ? { next } : {}),
    ...(previous ? { previous } : {}),
    generation: changes.length > 0 ? have.generation + 1 : have.generation,
  };
  return { state, changes };
}
