// The webhook's Prometheus metrics: how long reviews take, what each review did (patched,
// unchanged, skipped, or the class of body it rejected), which policy rules decide ports, which
// user keys draw warnings, when the serving certificate expires. Label values come from small
// fixed sets or from the policy's own rule names (an operator's file), never from a request: a
// client cannot grow the number of series. Served by --metrics-listen (plain HTTP, its own port).

import { X509Certificate } from 'node:crypto';
import { USER_KEYS } from '@slipstream/shared/core/contract';
import type { Decision } from '@slipstream/shared/core/decide';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ReviewOutcome } from './review.ts';

/** Sub-millisecond reviews up to the API server's 3 s timeout and past it. */
export const REVIEW_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
];

const OPERATIONS = new Set(['CREATE', 'UPDATE', 'DELETE', 'CONNECT']);
/** The keys a warning can name: the user's keys, and `slipstream` for a Service that cannot be read. */
const WARNING_KEYS = new Set<string>([...Object.values(USER_KEYS), 'slipstream']);

/** The outcome label of a request answered with an error status. */
export function rejectionClass(status: number): string {
  switch (status) {
    case 400:
      return 'malformed';
    case 413:
      return 'too-large';
    case 415:
      return 'unsupported-media-type';
    case 429:
      return 'too-many-requests';
    default:
      return status >= 500 ? 'error' : 'rejected';
  }
}

/**
 * A labelled counter kept in plain numbers on the review path and handed to prom-client when
 * Prometheus scrapes: a labelled `inc` there hashes its labels each time (about 3 us, a few percent
 * of a review), a Map lookup here costs a fraction of that.
 */
class Tally<L extends string> {
  readonly #counts = new Map<string, { labels: Record<L, string>; n: number }>();

  constructor(registry: Registry, config: { name: string; help: string; labelNames: readonly L[] }) {
    const counts = this.#counts;
    new Counter<L>({
      ...config,
      labelNames: [...config.labelNames],
      registers: [registry],
      collect() {
        this.reset();
        for (const c of counts.values()) this.inc(c.labels, c.n);
      },
    });
  }

  /** Adds `n` to the series `key` names (`labels` is only read the first time). */
  add(key: string, labels: Record<L, string>, n = 1): void {
    const c = this.#counts.get(key);
    if (c) c.n += n;
    else this.#counts.set(key, { labels, n });
  }
}

export class WebhookMetrics {
  readonly #duration: Histogram;
  readonly #reviews: Tally<'operation' | 'outcome'>;
  readonly #decisions: Tally<'rule' | 'decision'>;
  readonly #warnings: Tally<'key'>;
  readonly #certificate: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.#duration = new Histogram({
      name: 'slipstream_webhook_review_duration_seconds',
      help: 'Seconds from a POST /mutate request to its answer (body read, review, answer written), rejected requests included.',
      buckets: [...REVIEW_BUCKETS],
      registers,
    });
    this.#reviews = new Tally(registry, {
      name: 'slipstream_webhook_reviews_total',
      help: 'Requests to POST /mutate by operation (CREATE, UPDATE, DELETE, CONNECT, other; unknown when the body was rejected) and outcome: patched, unchanged, skipped (not a Service, not reviewed), or the rejected body class (malformed, too-large, unsupported-media-type, too-many-requests, rejected, error).',
      labelNames: ['operation', 'outcome'],
    });
    for (const operation of ['CREATE', 'UPDATE']) {
      for (const outcome of ['patched', 'unchanged']) this.#review(operation, outcome, 0);
    }
    this.#decisions = new Tally(registry, {
      name: 'slipstream_webhook_decisions_total',
      help: 'Port decisions by the rule that made them (a policy rule, default, user:*, contract:*) and decision (offload or keep); a Service decided as a whole (no ClusterIP, namespace opted out, an invalid user key) counts once.',
      labelNames: ['rule', 'decision'],
    });
    this.#warnings = new Tally(registry, {
      name: 'slipstream_webhook_warnings_total',
      help: 'Admission warnings returned to the client, by the annotation key they name (slipstream: the Service could not be read).',
      labelNames: ['key'],
    });
    this.#certificate = new Gauge({
      name: 'slipstream_webhook_certificate_expiry_timestamp_seconds',
      help: 'Unix time in seconds at which the serving certificate (the one new TLS handshakes get) expires.',
      registers,
    });
  }

  /** A review that was answered with an AdmissionReview. */
  reviewed(outcome: ReviewOutcome, seconds: number): void {
    this.#duration.observe(seconds);
    const operation = OPERATIONS.has(outcome.operation) ? outcome.operation : 'other';
    const result = outcome.skipped !== undefined ? 'skipped' : outcome.patched ? 'patched' : 'unchanged';
    this.#review(operation, result);
    if (outcome.decided) this.#decided(outcome.decided);
    for (const raw of outcome.warningKeys) {
      const key = WARNING_KEYS.has(raw) ? raw : 'other';
      this.#warnings.add(key, { key });
    }
  }

  /** A request answered with an error status (its body was not an AdmissionReview we could answer). */
  rejected(status: number, seconds: number): void {
    this.#duration.observe(seconds);
    this.#review('unknown', rejectionClass(status));
  }

  #review(operation: string, outcome: string, n = 1): void {
    this.#reviews.add(`${operation} ${outcome}`, { operation, outcome }, n);
  }

  /** The certificate new handshakes get (PEM; the first of a chain is the serving one). */
  certificate(pem: string): void {
    try {
      this.#certificate.set(new X509Certificate(pem).validToDate.getTime() / 1000);
    } catch {
      // Served material is checked before it is served; a PEM that does not parse here changes nothing.
    }
  }

  #decided(decision: Decision): void {
    if (decision.ports.length === 0) {
      const verdict = decision.offload.length > 0 ? 'offload' : 'keep';
      this.#decisions.add(`${verdict} ${decision.rule}`, { rule: decision.rule, decision: verdict });
      return;
    }
    for (const p of decision.ports) {
      const verdict = p.offload ? 'offload' : 'keep';
      this.#decisions.add(`${verdict} ${p.rule}`, { rule: p.rule, decision: verdict });
    }
  }
}
