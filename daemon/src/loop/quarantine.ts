// Services kept out of the kernel because the kernel refused their part of a transaction (found
// by bisecting it) or because computing their part failed. A quarantined Service is retried with
// backoff, and released at once when it changes (a new object from the source) or when the
// kernel changes (its table was repaired or rebuilt, its capabilities changed): either may be
// what made it fail. The rest of the node never waits for it.

import { Backoff, type BackoffOptions } from '@slipstream/shared/adapters/backoff';
import type { Service } from '@slipstream/shared/core/service';

export interface QuarantineEntry {
  key: string;
  /** Where it failed: `kernel` (the transaction was refused) or `compute` (deciding it threw). */
  stage: 'kernel' | 'compute';
  /** One line: the Service, what of it failed, and why (the kernel's error). */
  reason: string;
  /** The kernel's error class (kernel stage). */
  errorClass?: string;
  since: Date;
  attempts: number;
  /** When it is tried again (epoch ms). */
  retryAt: number;
}

interface Held extends QuarantineEntry {
  /** The Service object that failed: another object (a change) releases it. */
  service: Service | undefined;
  backoff: Backoff;
}

export const QUARANTINE_BACKOFF: BackoffOptions = { initialMs: 5_000, maxMs: 300_000 };

export class Quarantine {
  readonly #held = new Map<string, Held>();
  readonly #options: BackoffOptions;
  readonly #now: () => number;

  constructor(options: BackoffOptions = QUARANTINE_BACKOFF, now: () => number = Date.now) {
    this.#options = options;
    this.#now = now;
  }

  /**
   * Holds (or keeps holding) a Service. Returns true when this is news an operator must read: it
   * was not held before, or it now fails for another reason (so: one log line, not one per retry).
   */
  hold(
    key: string,
    service: Service | undefined,
    failure: { stage: 'kernel' | 'compute'; reason: string; errorClass?: string },
  ): boolean {
    const now = this.#now();
    const held = this.#held.get(key);
    if (held) {
      const news = held.reason !== failure.reason;
      held.service = service;
      held.stage = failure.stage;
      held.reason = failure.reason;
      if (failure.errorClass !== undefined) held.errorClass = failure.errorClass;
      held.attempts++;
      held.retryAt = now + held.backoff.next();
      return news;
    }
    const backoff = new Backoff(this.#options, this.#now);
    const entry: Held = {
      key,
      service,
      ...failure,
      since: new Date(now),
      attempts: 1,
      retryAt: now + backoff.next(),
      backoff,
    };
    this.#held.set(key, entry);
    return true;
  }

  /**
   * Whether a Service stays out of the next sync: held, the same object, and not due for a retry.
   * A changed Service is tried again at once (and released once it reached the kernel).
   */
  excludes(key: string, service: Service | undefined): boolean {
    const held = this.#held.get(key);
    if (!held || held.service !== service) return false;
    return held.retryAt > this.#now();
  }

  /** A Service that got into the kernel (or went away): no longer held. */
  release(key: string): boolean {
    return this.#held.delete(key);
  }

  /** The kernel changed: everything is tried again at the next sync. */
  releaseAll(): number {
    const n = this.#held.size;
    this.#held.clear();
    return n;
  }

  has(key: string): boolean {
    return this.#held.has(key);
  }

  get size(): number {
    return this.#held.size;
  }

  /** The earliest retry (epoch ms), or undefined. */
  nextRetryAt(): number | undefined {
    let at: number | undefined;
    for (const h of this.#held.values()) if (at === undefined || h.retryAt < at) at = h.retryAt;
    return at;
  }

  get(key: string): QuarantineEntry | undefined {
    const h = this.#held.get(key);
    return h ? view(h) : undefined;
  }

  entries(): QuarantineEntry[] {
    return [...this.#held.values()].map(view).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }
}

function view(h: Held): QuarantineEntry {
  const entry: QuarantineEntry = {
    key: h.key,
    stage: h.stage,
    reason: h.reason,
    since: h.since,
    attempts: h.attempts,
    retryAt: h.retryAt,
  };
  if (h.errorClass !== undefined) entry.errorClass = h.errorClass;
  return entry;
}
