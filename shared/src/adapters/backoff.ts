// The one retry backoff of both components (informer restarts, kernel retries, quarantined
// Services, the webhook's TLS bootstrap): exponential, capped, with decorrelated jitter so that
// the daemons of a whole cluster do not retry in step. The delays come from cockatiel's
// generators; this wrapper adds what the callers need around them: a failure count, a reset, and
// forgetting old failures after a quiet period.

import { decorrelatedJitterGenerator, ExponentialBackoff, type IBackoff, noJitterGenerator } from 'cockatiel';

export interface BackoffOptions {
  /** First delay (ms). */
  initialMs: number;
  /** Largest delay (ms). */
  maxMs: number;
  /** A failure this long after the previous one starts again from `initialMs` (ms; default: never). */
  resetAfterMs?: number;
  /** Decorrelated jitter (default) or exact doubling (tests, and delays a person reads). */
  jitter?: boolean;
}

export class Backoff {
  readonly #options: BackoffOptions;
  readonly #now: () => number;
  #state: IBackoff<unknown> | undefined;
  #failures = 0;
  #lastFailureAt = Number.NEGATIVE_INFINITY;

  constructor(options: BackoffOptions, now: () => number = Date.now) {
    if (!(options.initialMs > 0) || !(options.maxMs >= options.initialMs)) {
      throw new RangeError(
        `backoff needs 0 < initialMs <= maxMs (got ${options.initialMs}, ${options.maxMs})`,
      );
    }
    this.#options = options;
    this.#now = now;
  }

  /** Records a failure; returns how long to wait before the next attempt (ms). */
  next(): number {
    const now = this.#now();
    const reset = this.#options.resetAfterMs;
    if (reset !== undefined && now - this.#lastFailureAt >= reset) this.reset();
    this.#lastFailureAt = now;
    this.#failures++;
    if (!this.#state) {
      const bounds = { initialDelay: this.#options.initialMs, maxDelay: this.#options.maxMs };
      const factory =
        this.#options.jitter === false
          ? new ExponentialBackoff({ ...bounds, generator: noJitterGenerator })
          : new ExponentialBackoff({ ...bounds, generator: decorrelatedJitterGenerator });
      this.#state = factory.next();
    } else {
      this.#state = this.#state.next(undefined);
    }
    return Math.round(Math.min(this.#options.maxMs, Math.max(0, this.#state.duration)));
  }

  /** A success: the next failure waits `initialMs` again. */
  reset(): void {
    this.#state = undefined;
    this.#failures = 0;
  }

  /** Failures since the last reset. */
  get failures(): number {
    return this.#failures;
  }
}
