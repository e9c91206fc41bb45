// Bounds concurrent review work. At most `maxInFlight` reviews are between their headers and
// their answer, of which at most `maxLarge` declare a body over `largeBytes`; beyond either the
// caller answers 429 at once, before reading the body. So a flood holds at most
// maxLarge x 1 MiB + (maxInFlight - maxLarge) x largeBytes of bodies, and one parsed body at a time.
//
// Admitted reviews run their CPU work (parse, decide, serialize) one at a time, in time slices
// between which the event loop turns: that work is synchronous, so without slicing a burst of
// bodies that completed in the same turn would run back to back while /healthz and every other
// connection waited behind all of them. Small reviews (what the API server sends for ordinary
// Services) run before large ones, so a flood of large bodies does not delay them either.

export interface GateLimits {
  maxInFlight: number;
  maxLarge: number;
  /** A body declared longer than this (or not declared) is large. */
  largeBytes: number;
  /** Work runs in slices of about this long before the event loop gets a turn. */
  sliceMs: number;
}

export const DEFAULT_LIMITS: GateLimits = {
  maxInFlight: 64,
  maxLarge: 4,
  largeBytes: 64 * 1024,
  sliceMs: 5,
};

export interface Ticket {
  readonly large: boolean;
  /** Runs `work` when its turn comes; resolves with its result (rejects with what it throws). */
  run<T>(work: () => T): Promise<T>;
  /** Frees the slot; later calls do nothing. */
  release(): void;
}

export class ReviewGate {
  readonly limits: GateLimits;
  #inFlight = 0;
  #large = 0;
  #refused = 0;
  readonly #small: (() => void)[] = [];
  readonly #bulk: (() => void)[] = [];
  #scheduled = false;

  constructor(limits: Partial<GateLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Reviews refused so far because the gate was full. */
  get refused(): number {
    return this.#refused;
  }

  /** A slot for a review whose body declares `bytes`; undefined when the gate is full (answer 429). */
  admit(bytes: number | undefined): Ticket | undefined {
    const large = bytes === undefined || !Number.isFinite(bytes) || bytes > this.limits.largeBytes;
    if (this.#inFlight >= this.limits.maxInFlight || (large && this.#large >= this.limits.maxLarge)) {
      this.#refused++;
      return undefined;
    }
    this.#inFlight++;
    if (large) this.#large++;
    let released = false;
    return {
      large,
      run: <T>(work: () => T) =>
        new Promise<T>((resolve, reject) => {
          (large ? this.#bulk : this.#small).push(() => {
            try {
              resolve(work());
            } catch (error) {
              reject(error);
            }
          });
          this.#schedule();
        }),
      release: () => {
        if (released) return;
        released = true;
        this.#inFlight--;
        if (large) this.#large--;
      },
    };
  }

  #schedule(): void {
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#drain);
  }

  readonly #drain = (): void => {
    this.#scheduled = false;
    const deadline = performance.now() + this.limits.sliceMs;
    do {
      const next = this.#small.shift() ?? this.#bulk.shift();
      if (next === undefined) return;
      next();
    } while (performance.now() < deadline);
    if (this.#small.length > 0 || this.#bulk.length > 0) this.#schedule();
  };
}
