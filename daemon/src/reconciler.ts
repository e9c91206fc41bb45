// The Reconciler: the node daemon's control loop, composed of one module per job:
//
//   loop/inputs.ts      the latest Services, Namespaces, devices and policy, and what changed
//   loop/scheduler.ts   when syncs run (coalescing, minimum interval, resync, retry backoff)
//   loop/sync.ts        one sync: desired -> diff -> one transaction (retry, isolation)
//   loop/evict.ts       connections of ports no longer offloaded sent back to the slow path
//   loop/quarantine.ts  Services the kernel refused, kept out and retried
//   loop/sync-trace.ts  the sync's spans, events and links
//   loop/health.ts      whether the node's kernel is known to differ from what is wanted
//
// and the kernel's change events: anyone else's change to the table triggers a read-back and a
// repair within the minimum sync interval, without listing the table on every pass.
//
//   reconciler.update({ services, namespaces, devices });   // initial lists (or full replaces)
//   await reconciler.start();                                // adopt the table, first sync now
//   informer: reconciler.setService(s) / deleteService(ns, name); reconciler.request('service')

import type { BackoffOptions } from '@slipstream/shared/adapters/backoff';
import type { Logger } from '@slipstream/shared/adapters/log';
import { stderrLogger } from '@slipstream/shared/adapters/log';
import type { Policy } from '@slipstream/shared/core/policy';
import type { Capabilities, Ruleset } from '@slipstream/shared/core/ruleset';
import type { Namespace, Service } from '@slipstream/shared/core/service';
import type { OffloadedFlows } from './conntrack.ts';
import type { Kernel, KernelEvent } from './kernel.ts';
import { Health } from './loop/health.ts';
import { InputStore, type UpdateInputs } from './loop/inputs.ts';
import { Quarantine, type QuarantineEntry } from './loop/quarantine.ts';
import type { SyncResult } from './loop/result.ts';
import { Scheduler, type Trigger } from './loop/scheduler.ts';
import { Syncer } from './loop/sync.ts';

export type { SyncResult, Trigger };

export interface ReconcilerOptions {
  kernel: Kernel;
  policy: Policy;
  /** Minimum time between the starts of two syncs (kube-proxy's --min-sync-period). Default 1 s. */
  minSyncIntervalMs?: number;
  /** Period of the full resync that reads the table back (the last safety net). Default 1 h; 0 disables. */
  resyncIntervalMs?: number;
  /** Retry after a failed sync: first delay, doubling up to the maximum. Default 1 s … 60 s. */
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Re-lists links (used when a transaction that touches flowtable devices is refused). */
  refreshDevices?: () => Promise<string[]>;
  /**
   * Reads the offloaded connections (conntrack): when offload ends for a port that still has some,
   * they are evicted (loop/evict.ts). Absent: never evicted.
   */
  readOffloaded?: () => Promise<OffloadedFlows | null>;
  /** Without kernel change events, read the table back this often (default 10 s). */
  driftPollMs?: number;
  /** Retry of a quarantined Service: first delay, doubling up to the maximum (default 5 s … 5 min). */
  quarantineBackoff?: BackoffOptions;
  logger?: Logger;
}

export class Reconciler {
  readonly #kernel: Kernel;
  readonly #log: Logger;
  readonly #inputs: InputStore;
  readonly #quarantine: Quarantine;
  readonly #syncer: Syncer;
  readonly #scheduler: Scheduler;
  readonly #health: Health;
  readonly #driftPollMs: number;
  #unwatch: (() => void) | null = null;
  #driftPoll: NodeJS.Timeout | null = null;
  #started = false;
  #stopped = false;
  #listeners = new Set<(r: SyncResult) => void>();
  #programmedListeners = new Set<(latenciesMs: readonly number[]) => void>();
  #kernelListeners = new Set<(event: KernelEvent['type']) => void>();
  #lastError: string | null = null;

  lastResult: SyncResult | null = null;
  /** Evictions so far (flowtable re-created), and the ports and connections they sent back to the slow path. */
  readonly evictions = { count: 0, ports: 0, connections: 0, lastAt: null as Date | null };
  lastError: { at: Date; message: string; errorClass: string } | null = null;
  lastSuccessAt: Date | null = null;

  constructor(options: ReconcilerOptions) {
    this.#kernel = options.kernel;
    this.#log = options.logger ?? stderrLogger;
    this.#inputs = new InputStore(options.policy);
    this.#quarantine = new Quarantine(options.quarantineBackoff);
    this.#driftPollMs = options.driftPollMs ?? 10_000;
    const minSyncMs = options.minSyncIntervalMs ?? 1000;
    this.#health = new Health({ graceMs: Math.max(5_000, 3 * minSyncMs) });
    this.#syncer = new Syncer({
      kernel: this.#kernel,
      inputs: this.#inputs,
      quarantine: this.#quarantine,
      logger: this.#log,
      ...(options.refreshDevices ? { refreshDevices: options.refreshDevices } : {}),
      onProgrammed: (latencies) => this.#emit(this.#programmedListeners, latencies),
      ...(options.readOffloaded ? { readOffloaded: options.readOffloaded } : {}),
    });
    this.#scheduler = new Scheduler({
      run: async (triggers) => {
        const { result, again } = await this.#syncer.sync(triggers);
        this.#finished(result);
        if (again) this.request('retry');
        return {
          failed: result.result === 'error',
          ...(this.#quarantine.nextRetryAt() !== undefined
            ? { againAt: this.#quarantine.nextRetryAt()! }
            : {}),
        };
      },
      minIntervalMs: minSyncMs,
      resyncMs: options.resyncIntervalMs ?? 3_600_000,
      backoff: { initialMs: options.retryInitialMs ?? 1000, maxMs: options.retryMaxMs ?? 60_000 },
    });
  }

  // --- inputs -----------------------------------------------------------------------------

  /** Replaces whole inputs (kept by reference: the objects in them must not be mutated afterwards). */
  update(inputs: UpdateInputs): void {
    this.#inputs.update(inputs);
  }

  setPolicy(policy: Policy): void {
    this.#inputs.setPolicy(policy);
  }

  setService(service: Service): void {
    this.#inputs.setService(service);
  }

  deleteService(namespace: string, name: string): void {
    this.#inputs.deleteService(namespace, name);
  }

  setNamespace(namespace: Namespace): void {
    this.#inputs.setNamespace(namespace);
  }

  deleteNamespace(name: string): void {
    this.#inputs.deleteNamespace(name);
  }

  // --- state --------------------------------------------------------------------------------

  get capabilities(): Capabilities | null {
    return this.#syncer.capabilities;
  }

  /** The last desired ruleset (with per-Service bookkeeping), or null before the first sync. */
  get desired(): Ruleset | null {
    return this.#syncer.desired;
  }

  /** What the reconciler believes the kernel holds (null: no table; undefined: not known yet). */
  get belief(): Ruleset | null | undefined {
    return this.#syncer.belief;
  }

  get services(): ReadonlyMap<string, Service> {
    return this.#inputs.services;
  }

  get policy(): Policy {
    return this.#inputs.policy;
  }

  get namespaces(): ReadonlyMap<string, Namespace> {
    return this.#inputs.namespaces;
  }

  /** Services kept out of the kernel, with the reason. */
  get quarantined(): QuarantineEntry[] {
    return this.#quarantine.entries();
  }

  /** Whether the node keeps up: false while the kernel is known to differ from what is wanted for too long. */
  readiness(now = Date.now()): { ready: boolean; reason: string } {
    return this.#health.readiness(now);
  }

  /** The flowtable devices the link watcher last reported. */
  get devices(): readonly string[] {
    return this.#inputs.devices;
  }

  /** When a sync was last asked for (a change, the resync, a retry), or null. */
  get lastQueuedAt(): Date | null {
    const at = this.#scheduler.queuedAt;
    return at === null ? null : new Date(at);
  }

  /**
   * Calls `listener` after each sync that brought the kernel to what is wanted, with the time from
   * when each Service change it took in was seen to that moment (ms); quarantined Services are left out.
   */
  onProgrammed(listener: (latenciesMs: readonly number[]) => void): () => void {
    this.#programmedListeners.add(listener);
    return () => this.#programmedListeners.delete(listener);
  }

  /** Calls `listener` for each event of the kernel's table watch (someone else's change, lost events, ...). */
  onKernelEvent(listener: (event: KernelEvent['type']) => void): () => void {
    this.#kernelListeners.add(listener);
    return () => this.#kernelListeners.delete(listener);
  }

  /** Calls `listener` after every sync; returns the unsubscribe function. */
  onSync(listener: (r: SyncResult) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Resolves with the next sync result that satisfies `predicate`. */
  nextSync(predicate: (r: SyncResult) => boolean = () => true): Promise<SyncResult> {
    return new Promise((resolve) => {
      const off = this.onSync((r) => {
        if (predicate(r)) {
          off();
          resolve(r);
        }
      });
    });
  }

  // --- lifecycle --------------------------------------------------------------------------

  /**
   * Watches the table, probes the kernel, reads its table back and adopts it (no flush), then
   * syncs at once: when the kernel already holds the desired state this writes nothing.
   */
  async start(): Promise<SyncResult> {
    if (this.#started) throw new Error('Reconciler already started');
    this.#started = true;
    this.#unwatch = this.#kernel.watch((event) => this.#onKernel(event));
    await this.#scheduler.start('startup');
    return this.lastResult!;
  }

  /** Stops timers and waits for a running sync; the kernel table is left as it is. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unwatch?.();
    if (this.#driftPoll) clearInterval(this.#driftPoll);
    await this.#scheduler.stop();
  }

  /** Asks for a sync (coalesced, at most once per minimum interval). */
  request(trigger: Trigger): void {
    if (this.#stopped) return;
    if (trigger === 'resync' || trigger === 'drift') this.#syncer.requestReadBack();
    this.#scheduler.request(trigger);
  }

  /** Runs a sync now (after a running one), whatever the minimum interval. */
  async sync(trigger: Trigger): Promise<SyncResult> {
    if (trigger === 'resync' || trigger === 'drift') this.#syncer.requestReadBack();
    await this.#scheduler.runNow(trigger);
    return this.lastResult!;
  }

  #onKernel(event: KernelEvent): void {
    if (this.#stopped) return;
    this.#emit(this.#kernelListeners, event.type);
    if (event.type === 'unavailable') {
      this.#log.warn('cannot watch the kernel table for changes; reading it back periodically instead', {
        reason: event.reason,
        everyMs: this.#driftPollMs,
      });
      if (!this.#driftPoll && this.#driftPollMs > 0) {
        this.#driftPoll = setInterval(() => this.request('drift'), this.#driftPollMs);
        this.#driftPoll.unref?.();
      }
      return;
    }
    if (event.type === 'unverified') {
      this.#log.warn('reading the table back', { reason: event.reason });
      this.request('drift');
      return;
    }
    // The kernel changed under us: what it refused before may go in now.
    const released = this.#quarantine.releaseAll();
    if (released > 0)
      this.#log.info('quarantined Services released for a retry', {
        count: released,
        why: 'the kernel table changed',
      });
    if (event.type === 'foreign-change') {
      this.#health.diverged(Date.now());
      this.#log.warn('someone else changed the table; reading it back to repair it', {
        process: event.process,
        pid: event.pid,
        generation: event.generation,
        changes: event.changes.map((c) => `${c.op} ${c.kind}${c.name ? ` ${c.name}` : ''} x${c.count}`),
      });
    } else {
      this.#log.warn('kernel change events were lost; reading the table back');
    }
    this.request('drift');
  }

  #finished(result: SyncResult): void {
    this.lastResult = result;
    const now = Date.now();
    if (result.evicted) {
      this.evictions.count++;
      this.evictions.ports += result.evicted.ports;
      this.evictions.connections += result.evicted.connections ?? 0;
      this.evictions.lastAt = new Date(now);
    }
    if (result.result === 'error') {
      this.lastError = {
        at: new Date(now),
        message: result.error ?? '',
        errorClass: result.errorClass ?? 'unknown',
      };
      this.#health.diverged(now);
      result.retryInMs = this.#scheduler.retryInMs ?? undefined;
      // One line per distinct failure, not one per retry.
      if (this.#lastError !== result.error) {
        this.#log.error('sync failed; the kernel keeps its last state; retrying with backoff', {
          ...summary(result),
        });
      }
      this.#lastError = result.error ?? null;
    } else if (result.waitingFor === undefined) {
      this.lastSuccessAt = new Date(now);
      this.#health.converged(now);
      if (this.#lastError !== null) this.#log.info('sync succeeds again', { trigger: result.trigger });
      this.#lastError = null;
      // A noop after a refused transaction is logged too: the warning before it needs its outcome.
      if (result.result !== 'noop' || result.drift || result.retried) {
        this.#log.info('sync', { ...summary(result) });
      }
    }
    this.#emit(this.#listeners, result);
  }

  #emit<T>(listeners: ReadonlySet<(value: T) => void>, value: T): void {
    for (const listener of [...listeners]) {
      try {
        listener(value);
      } catch (error) {
        this.#log.error('sync listener failed', { error: String(error) });
      }
    }
  }
}

function summary(r: SyncResult): Record<string, unknown> {
  return { ...r };
}
