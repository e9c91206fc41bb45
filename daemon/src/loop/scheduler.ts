// When syncs run, and nothing else (kube-proxy's BoundedFrequencyRunner): at most one sync at a
// time; requests coalesce; a sync starts at most once per minimum interval (the first at once);
// a periodic resync at least every `resyncMs`; after a failed sync a retry with backoff; and a
// sync can ask to be run again at a given time (a quarantined Service due for its retry). It
// knows nothing of what a sync does: it calls `run` with the triggers collected since the last one.

import { Backoff, type BackoffOptions } from '@slipstream/shared/adapters/backoff';

export type Trigger =
  | 'startup'
  | 'service'
  | 'namespace'
  | 'link'
  /** This node's addresses changed (nodePorts): unlike `link`, the flowtable's devices are not re-read. */
  | 'address'
  | 'policy'
  | 'drift'
  | 'retry'
  | 'resync';

export interface RunOutcome {
  /** The sync failed: retry after the backoff. */
  failed: boolean;
  /** Run again no later than this (epoch ms), e.g. when a quarantined Service is due. */
  againAt?: number;
}

export interface SchedulerOptions {
  run: (triggers: ReadonlySet<Trigger>) => Promise<RunOutcome>;
  /** Minimum time between the starts of two syncs (kube-proxy's --min-sync-period). */
  minIntervalMs: number;
  /** Period of the full resync; 0 disables. */
  resyncMs: number;
  backoff: BackoffOptions;
  now?: () => number;
}

export class Scheduler {
  readonly #o: SchedulerOptions;
  readonly #now: () => number;
  readonly #backoff: Backoff;
  #pending = new Set<Trigger>();
  #running: Promise<void> | null = null;
  #timer: NodeJS.Timeout | null = null;
  #timerAt = Number.POSITIVE_INFINITY;
  #resyncTimer: NodeJS.Timeout | null = null;
  #deferredTimer: NodeJS.Timeout | null = null;
  #lastStart = Number.NEGATIVE_INFINITY;
  #retryAt = Number.NEGATIVE_INFINITY;
  #started = false;
  #stopped = false;
  /** When the latest failed sync is retried (epoch ms), or null. */
  retryAt: number | null = null;
  /** The delay of that retry (ms). */
  retryInMs: number | null = null;
  /** When a sync was last asked for (epoch ms; a change, the resync, a retry), or null. */
  queuedAt: number | null = null;

  constructor(options: SchedulerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#backoff = new Backoff(options.backoff);
  }

  /** Starts the periodic resync and runs the first sync now; resolves when it has run. */
  start(trigger: Trigger = 'startup'): Promise<void> {
    if (this.#started) throw new Error('Scheduler already started');
    this.#started = true;
    if (this.#o.resyncMs > 0) {
      this.#resyncTimer = setInterval(() => this.request('resync'), this.#o.resyncMs);
      this.#resyncTimer.unref?.();
    }
    return this.runNow(trigger);
  }

  /** Stops every timer and waits for a running sync. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clearTimer();
    if (this.#deferredTimer) clearTimeout(this.#deferredTimer);
    this.#deferredTimer = null;
    if (this.#resyncTimer) clearInterval(this.#resyncTimer);
    this.#resyncTimer = null;
    await this.#running;
  }

  /** Asks for a sync: as soon as the minimum interval (and a pending retry's backoff) allows. */
  request(trigger: Trigger): void {
    if (this.#stopped) return;
    this.#pending.add(trigger);
    this.queuedAt = this.#now();
    if (this.#started && !this.#running) this.#arm(this.#earliest());
  }

  /** Runs a sync now (after a running one), whatever the intervals; resolves when it has run. */
  async runNow(trigger: Trigger): Promise<void> {
    this.#pending.add(trigger);
    this.queuedAt = this.#now();
    while (this.#running) await this.#running;
    if (this.#stopped) return;
    this.#clearTimer();
    await this.#runPending();
  }

  get running(): boolean {
    return this.#running !== null;
  }

  #earliest(): number {
    const byInterval = this.#lastStart + this.#o.minIntervalMs;
    // Only the retry itself waits for the backoff; a new change is served at the normal pace.
    const onlyRetry = this.#pending.size === 1 && this.#pending.has('retry');
    return Math.max(byInterval, onlyRetry ? this.#retryAt : Number.NEGATIVE_INFINITY);
  }

  #arm(at: number): void {
    if (this.#stopped) return;
    if (this.#timer && this.#timerAt <= at) return;
    this.#clearTimer();
    this.#timerAt = at;
    this.#timer = setTimeout(
      () => {
        this.#timer = null;
        this.#timerAt = Number.POSITIVE_INFINITY;
        if (!this.#running) void this.#runPending();
      },
      Math.max(0, at - this.#now()),
    );
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }

  #runPending(): Promise<void> {
    const triggers = this.#pending;
    this.#pending = new Set();
    if (triggers.size === 0) return Promise.resolve();
    this.#lastStart = this.#now();
    const run = (async () => {
      let outcome: RunOutcome;
      try {
        outcome = await this.#o.run(triggers);
      } catch {
        outcome = { failed: true };
      }
      if (outcome.failed) {
        const delay = this.#backoff.next();
        this.#retryAt = this.#now() + delay;
        this.retryAt = this.#retryAt;
        this.retryInMs = delay;
        this.#pending.add('retry');
        this.queuedAt = this.#now();
      } else {
        this.#backoff.reset();
        this.#retryAt = Number.NEGATIVE_INFINITY;
        this.retryAt = null;
        this.retryInMs = null;
      }
      if (outcome.againAt !== undefined && !this.#stopped) {
        // Not a change: it waits for its time, and then for the minimum interval.
        const at = Math.max(outcome.againAt, this.#lastStart + this.#o.minIntervalMs);
        this.#deferred(at);
      }
    })().finally(() => {
      this.#running = null;
      if (this.#pending.size > 0) this.#arm(this.#earliest());
    });
    this.#running = run;
    return run;
  }

  #deferred(at: number): void {
    if (this.#deferredTimer) clearTimeout(this.#deferredTimer);
    this.#deferredTimer = setTimeout(
      () => {
        this.#deferredTimer = null;
        this.request('retry');
      },
      Math.max(0, at - this.#now()),
    );
    this.#deferredTimer.unref?.();
  }
}
