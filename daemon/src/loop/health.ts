// Whether the node keeps up (kube-proxy's /healthz question; Slipstream serves it as /readyz):
// not ready before the first sync reached the kernel, nor while the kernel is known to differ from
// what is wanted (a sync that failed as a whole, someone else's change not yet repaired) for
// longer than a grace period of a few sync intervals. A quarantined Service does not make the node
// unready: the rest of it is programmed. Liveness (/healthz) is a separate question: the process
// answers.

export interface HealthOptions {
  /** How long a known difference may last before the node is unready (ms). */
  graceMs: number;
}

export class Health {
  readonly #graceMs: number;
  #synced = false;
  #divergedSince: number | null = null;

  constructor(options: HealthOptions) {
    this.#graceMs = options.graceMs;
  }

  /** The kernel is known to differ from what is wanted (from `now`, unless it already did). */
  diverged(now: number): void {
    this.#divergedSince ??= now;
  }

  /** A sync brought the kernel to what is wanted. */
  converged(_now: number): void {
    this.#synced = true;
    this.#divergedSince = null;
  }

  readiness(now: number): { ready: boolean; reason: string } {
    if (!this.#synced && this.#divergedSince === null)
      return { ready: false, reason: 'no sync has reached the kernel yet' };
    if (this.#divergedSince !== null) {
      const ms = now - this.#divergedSince;
      if (ms > this.#graceMs || !this.#synced) {
        return {
          ready: false,
          reason: `the kernel has differed from the desired state for ${Math.round(ms / 1000)} s`,
        };
      }
      return { ready: true, reason: `repairing (differs for ${ms} ms)` };
    }
    return { ready: true, reason: 'the kernel holds the desired state' };
  }
}
