// The Reconciler: holds the latest inputs (Services, Namespaces, devices), its belief of the
// kernel (the last Ruleset it committed or read back), and turns every change of inputs into
// at most one kernel transaction. main.ts wires sources to it:
//
//   reconciler.update({ services, namespaces, devices });   // initial lists (or full replaces)
//   await reconciler.start();                                // adopt the table, first sync now
//   informer: reconciler.setService(s) / deleteService(ns, name); reconciler.request('service')
//   namespaces: setNamespace / deleteNamespace;             reconciler.request('namespace')
//   links: reconciler.update({ devices });                  reconciler.request('link')
//
// Kernel reads: the whole table is read only at start-up (adoption), on each periodic resync
// (drift repair) and after a refused transaction (the belief may be wrong). Every other sync
// diffs desired against the belief, so a steady state costs no kernel I/O at all.
//
// Compute: a full `desiredRuleset` + `diff` at start-up, on read-backs and when the policy,
// Namespaces or devices change; otherwise the desired ruleset is patched with only the Services
// that changed (by object identity: sources replace, never mutate) and the Change follows from
// the touched keys (`applyServiceDelta` + `diffDelta`), so one Service add costs O(changed).
// Conflicting inputs (two Services on one element or one namespace/name) always recompute in full.

import { type Context, context, type Link, type Span, SpanStatusCode, trace } from '@opentelemetry/api';
import { type Logger, stderrLogger } from '@slipstream/shared/adapters/log';
import { type Change, diff, diffDelta, isEmpty } from '@slipstream/shared/core/diff';
import { describeChange } from '@slipstream/shared/core/nft-json';
import type { Policy } from '@slipstream/shared/core/policy';
import {
  applyServiceDelta,
  type Capabilities,
  type Contribution,
  contribution,
  desiredRuleset,
  isConflictFree,
  type Ruleset,
  type ServiceEntry,
  type ThresholdRefs,
  thresholdRefs,
} from '@slipstream/shared/core/ruleset';
import { type Namespace, type Service, serviceKey } from '@slipstream/shared/core/service';
import { errorClassOf, errorText, type Kernel, type KernelErrorClass } from './kernel.ts';

export type Trigger = 'startup' | 'service' | 'namespace' | 'link' | 'resync';
export type SyncOutcome = 'ok' | 'error' | 'noop';

export interface SyncResult {
  trigger: Trigger;
  result: SyncOutcome;
  /** No flowtable support: maps, chains and counters only. */
  degraded: boolean;
  degradedReason?: string;
  services: number;
  /** Elements in the desired ruleset. */
  elements: number;
  elementsAdded: number;
  elementsRemoved: number;
  /** Chains in the desired ruleset (the base chain and one per threshold in use). */
  chains: number;
  /** Kernel transactions committed by this sync. */
  writes: number;
  /** Whether the kernel table was read back (start-up, resync, retry after an error). */
  readBack: boolean;
  /** The read-back found the kernel different from the belief (someone else changed the table). */
  drift: boolean;
  /** A refused transaction was retried with fresh links and a fresh read-back. */
  retried: boolean;
  /** What the sync changed, in short. */
  change?: string;
  /** Inputs not yet received (nothing is written until every source has reported once). */
  waitingFor?: string[];
  error?: string;
  errorClass?: KernelErrorClass;
  /** When the next retry runs (ms from now) after an error. */
  retryInMs?: number;
}

export interface ReconcilerOptions {
  kernel: Kernel;
  policy: Policy;
  /** Minimum time between the starts of two syncs (kube-proxy's --min-sync-period). Default 1 s. */
  minSyncIntervalMs?: number;
  /** Period of the full resync that reads the table back and repairs drift. Default 1 h; 0 disables. */
  resyncIntervalMs?: number;
  /** Retry after a refused transaction: first delay, doubled up to the maximum. Default 1 s … 60 s. */
  retryInitialMs?: number;
  retryMaxMs?: number;
  /** Re-lists links (used when a transaction that touches flowtable devices is refused). */
  refreshDevices?: () => Promise<string[]>;
  logger?: Logger;
}

export interface ReconcilerInputs {
  services?: Iterable<Service>;
  /** A Map by name (kept by reference) or any iterable of Namespaces. */
  namespaces?: ReadonlyMap<string, Namespace> | Iterable<Namespace>;
  devices?: Iterable<string>;
}

function byName(namespaces: Iterable<Namespace>): Map<string, Namespace> {
  const out = new Map<string, Namespace>();
  for (const n of namespaces) out.set(n.name, n);
  return out;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** A W3C traceparent, parsed strictly (version 00 exactly; later versions per the spec's rules). */
export function parseTraceparent(
  value: string,
): { traceId: string; spanId: string; traceFlags: number } | null {
  if (value.length > 512) return null;
  const m = TRACEPARENT.exec(value);
  if (!m) return null;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string?,
  ];
  if (version === 'ff') return null;
  if (version === '00' && rest !== undefined) return null;
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return null;
  return { traceId, spanId, traceFlags: Number.parseInt(flags, 16) & 0xff };
}

const MAX_LINKS = 128;
const tracer = () => trace.getTracer('slipstream-daemon');

function withSpan(parent: Context, span: Span): Context {
  return trace.setSpan(parent, span);
}

/** Thrown inside a sync to end it early without an error (e.g. inputs not primed). */
class Waiting {
  readonly missing: string[];
  constructor(missing: string[]) {
    this.missing = missing;
  }
}

export class Reconciler {
  readonly #kernel: Kernel;
  #policy: Policy;
  readonly #minSyncMs: number;
  readonly #resyncMs: number;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;
  readonly #refreshDevices: (() => Promise<string[]>) | undefined;
  readonly #log: Logger;

  #serviceList: Iterable<Service> = [];
  /** Own copy, made on the first setService/deleteService after an update. */
  #serviceMap: Map<string, Service> | null = null;
  #namespaces: ReadonlyMap<string, Namespace> = new Map();
  #ownNamespaces = true;
  #devices: string[] = [];
  readonly #primed = { services: false, namespaces: false, devices: false };

  /** The kernel's table as this reconciler believes it is; undefined = unknown (read it back). */
  #belief: Ruleset | null | undefined = undefined;
  #desired: Ruleset | null = null;
  #capabilities: Capabilities | null = null;
  /**
   * Incremental syncs: `#desired` is kept and patched with the contributions of the Services that
   * changed (found by object identity) instead of being recomputed. `#inputsVersion` counts the
   * changes that require a full recompute (policy, Namespaces, devices); `#incremental` is the
   * state the patching needs, or null when the next sync must recompute in full.
   */
  #inputsVersion = 0;
  #incremental: {
    version: number;
    capabilities: Capabilities;
    /** The Service objects `#desired` was computed from. */
    services: Set<Service>;
    refs: ThresholdRefs;
  } | null = null;

  #started = false;
  #stopped = false;
  #running: Promise<SyncResult> | null = null;
  #pending = new Set<Trigger>();
  #timer: NodeJS.Timeout | null = null;
  #resyncTimer: NodeJS.Timeout | null = null;
  #lastStart = Number.NEGATIVE_INFINITY;
  #retryDelay = 0;
  #retryTimer: NodeJS.Timeout | null = null;
  #readBackNext = true;
  #listeners = new Set<(r: SyncResult) => void>();

  lastResult: SyncResult | null = null;
  lastError: { at: Date; message: string; errorClass: KernelErrorClass } | null = null;
  lastSuccessAt: Date | null = null;

  constructor(options: ReconcilerOptions) {
    this.#kernel = options.kernel;
    this.#policy = options.policy;
    this.#minSyncMs = options.minSyncIntervalMs ?? 1000;
    this.#resyncMs = options.resyncIntervalMs ?? 3_600_000;
    this.#retryInitialMs = options.retryInitialMs ?? 1000;
    this.#retryMaxMs = options.retryMaxMs ?? 60_000;
    this.#refreshDevices = options.refreshDevices;
    this.#log = options.logger ?? stderrLogger;
  }

  // --- inputs -----------------------------------------------------------------------------

  /**
   * Replaces whole inputs (each one given marks that source as primed). O(1): the collections are
   * kept by reference and read at the next sync, so a source can pass its snapshot on every
   * change (`reconciler.update(source.snapshot())`) — the arrays, maps and objects in them must
   * not be mutated afterwards (replace, never mutate: Services are memoized by identity).
   */
  update(inputs: ReconcilerInputs): void {
    if (inputs.services) {
      this.#serviceList = inputs.services;
      this.#serviceMap = null;
      this.#primed.services = true;
    }
    if (inputs.namespaces) {
      const given = inputs.namespaces;
      // Sources pass the same Map while their Namespaces do not change: that keeps syncs incremental.
      if (given !== this.#namespaces) this.#inputsVersion++;
      if (given instanceof Map) {
        this.#namespaces = given as ReadonlyMap<string, Namespace>;
        this.#ownNamespaces = false;
      } else {
        this.#namespaces = byName(given as Iterable<Namespace>);
        this.#ownNamespaces = true;
      }
      this.#primed.namespaces = true;
    }
    if (inputs.devices) {
      const devices = [...inputs.devices];
      if (devices.length !== this.#devices.length || devices.some((d, i) => d !== this.#devices[i])) {
        this.#inputsVersion++;
      }
      this.#devices = devices;
      this.#primed.devices = true;
    }
  }

  #editableServices(): Map<string, Service> {
    if (!this.#serviceMap) {
      this.#serviceMap = new Map();
      for (const s of this.#serviceList) this.#serviceMap.set(serviceKey(s), s);
    }
    return this.#serviceMap;
  }

  #editableNamespaces(): Map<string, Namespace> {
    if (!this.#ownNamespaces) {
      this.#namespaces = new Map(this.#namespaces);
      this.#ownNamespaces = true;
    }
    return this.#namespaces as Map<string, Namespace>;
  }

  /** Replaces the policy (a reloaded policy file); every Service is re-decided at the next sync. */
  setPolicy(policy: Policy): void {
    this.#policy = policy;
    this.#inputsVersion++;
  }

  /** Adds or replaces one Service (informer-style updates; `update` replaces everything). */
  setService(service: Service): void {
    this.#editableServices().set(serviceKey(service), service);
  }

  deleteService(namespace: string, name: string): void {
    this.#editableServices().delete(serviceKey({ namespace, name }));
  }

  setNamespace(namespace: Namespace): void {
    this.#editableNamespaces().set(namespace.name, namespace);
    this.#inputsVersion++;
  }

  deleteNamespace(name: string): void {
    this.#editableNamespaces().delete(name);
    this.#inputsVersion++;
  }

  // --- state for status -------------------------------------------------------------------

  get capabilities(): Capabilities | null {
    return this.#capabilities;
  }

  /** The last desired ruleset (with per-Service bookkeeping), or null before the first sync. */
  get desired(): Ruleset | null {
    return this.#desired;
  }

  /** What the reconciler believes the kernel holds (null: no table; undefined: not known yet). */
  get belief(): Ruleset | null | undefined {
    return this.#belief;
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
   * Probes the kernel, reads its table back and adopts it (no flush), then syncs at once: when
   * the kernel already holds the desired state this writes nothing. Starts the periodic resync.
   */
  async start(): Promise<SyncResult> {
    if (this.#started) throw new Error('Reconciler already started');
    this.#started = true;
    if (this.#resyncMs > 0) {
      this.#resyncTimer = setInterval(() => this.request('resync'), this.#resyncMs);
      this.#resyncTimer.unref?.();
    }
    this.#pending.add('startup');
    return this.#runNow();
  }

  /** Stops timers and waits for a running sync; the kernel table is left as it is. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of [this.#timer, this.#retryTimer]) if (t) clearTimeout(t);
    if (this.#resyncTimer) clearInterval(this.#resyncTimer);
    this.#timer = this.#retryTimer = this.#resyncTimer = null;
    await this.#running?.catch(() => undefined);
  }

  /**
   * Asks for a sync. Requests coalesce: a sync starts at most once per minimum interval (the
   * first one at once), and requests that arrive while one runs are served by the next.
   */
  request(trigger: Trigger): void {
    if (this.#stopped) return;
    this.#pending.add(trigger);
    if (trigger === 'resync') this.#readBackNext = true;
    if (!this.#started || this.#running || this.#timer) return;
    this.#schedule();
  }

  /** Runs a sync now (after a running one), whatever the minimum interval. */
  async sync(trigger: Trigger): Promise<SyncResult> {
    if (trigger === 'resync') this.#readBackNext = true;
    this.#pending.add(trigger);
    while (this.#running) await this.#running.catch(() => undefined);
    return this.#runNow();
  }

  #schedule(): void {
    if (this.#stopped || this.#pending.size === 0 || this.#timer || this.#running) return;
    const wait = Math.max(0, this.#lastStart + this.#minSyncMs - Date.now());
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#runNow();
    }, wait);
  }

  #runNow(): Promise<SyncResult> {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    const triggers = this.#pending;
    this.#pending = new Set();
    const trigger: Trigger = triggers.has('startup')
      ? 'startup'
      : triggers.has('resync')
        ? 'resync'
        : ([...triggers][0] ?? 'resync');
    this.#lastStart = Date.now();
    const run = this.#sync(trigger).finally(() => {
      this.#running = null;
      this.#schedule();
    });
    this.#running = run;
    return run;
  }

  // --- one sync ---------------------------------------------------------------------------

  async #sync(trigger: Trigger): Promise<SyncResult> {
    const writesBefore = this.#kernel.writes;
    const span = tracer().startSpan('sync', {
      root: true,
      attributes: { 'slipstream.sync.trigger': trigger },
    });
    const ctx = withSpan(context.active(), span);
    const result: SyncResult = {
      trigger,
      result: 'noop',
      degraded: false,
      services: 0,
      elements: 0,
      elementsAdded: 0,
      elementsRemoved: 0,
      chains: 0,
      writes: 0,
      readBack: false,
      drift: false,
      retried: false,
    };
    try {
      await this.#attempt(ctx, span, result, false);
      this.#retryDelay = 0;
      if (this.#retryTimer) clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
      this.lastSuccessAt = new Date();
    } catch (error) {
      if (error instanceof Waiting) {
        result.result = 'noop';
        result.waitingFor = error.missing;
      } else {
        this.#failed(span, result, error);
      }
    }
    result.writes = this.#kernel.writes - writesBefore;
    span.setAttributes({
      'slipstream.services': result.services,
      'slipstream.elements.added': result.elementsAdded,
      'slipstream.elements.removed': result.elementsRemoved,
      'slipstream.chains': result.chains,
      'slipstream.degraded': result.degraded,
      'slipstream.sync.result': result.result,
      'slipstream.kernel.writes': result.writes,
      'slipstream.sync.read_back': result.readBack,
      'slipstream.sync.drift': result.drift,
    });
    if (result.result !== 'error') span.setStatus({ code: SpanStatusCode.OK });
    span.end();
    this.lastResult = result;
    if (result.result !== 'noop' || result.drift) {
      this.#log.info('sync', { ...result });
    }
    for (const listener of [...this.#listeners]) {
      try {
        listener(result);
      } catch (error) {
        this.#log.error('sync listener failed', { error: String(error) });
      }
    }
    return result;
  }

  #failed(span: Span, result: SyncResult, error: unknown): void {
    const message = errorText(error);
    const errorClass = errorClassOf(error);
    result.result = 'error';
    result.error = message;
    result.errorClass = errorClass;
    this.lastError = { at: new Date(), message, errorClass };
    span.recordException(error instanceof Error ? error : new Error(message));
    span.setStatus({ code: SpanStatusCode.ERROR, message });
    // The transaction was refused as a whole: the kernel keeps its last good state. Our belief
    // may be what was wrong (someone changed the table), so the retry reads the table back.
    this.#belief = undefined;
    this.#retryDelay =
      this.#retryDelay === 0 ? this.#retryInitialMs : Math.min(this.#retryDelay * 2, this.#retryMaxMs);
    result.retryInMs = this.#retryDelay;
    this.#log.error('sync failed; the kernel keeps its last state; retrying', {
      trigger: result.trigger,
      error: message,
      errorClass,
      retryInMs: this.#retryDelay,
    });
    if (!this.#stopped) {
      if (this.#retryTimer) clearTimeout(this.#retryTimer);
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null;
        this.request(result.trigger);
      }, this.#retryDelay);
      this.#retryTimer.unref?.();
    }
  }

  #missingInputs(degraded: boolean): string[] {
    const missing: string[] = [];
    if (!this.#primed.services) missing.push('services');
    if (!this.#primed.namespaces) missing.push('namespaces');
    if (!degraded && !this.#primed.devices) missing.push('devices');
    return missing;
  }

  async #attempt(ctx: Context, span: Span, result: SyncResult, isRetry: boolean): Promise<void> {
    const readBack = this.#readBackNext || this.#belief === undefined || this.#capabilities === null;
    if (readBack) {
      this.#capabilities = await this.#kernel.probe();
    }
    const caps = this.#capabilities!;
    result.degraded = !caps.flowtable;
    if (caps.reason) result.degradedReason = caps.reason;

    const missing = this.#missingInputs(result.degraded);
    if (missing.length > 0) throw new Waiting(missing);

    if (readBack) {
      const kernel = await this.#kernel.readTable();
      result.readBack = true;
      this.#readBackNext = false;
      if (this.#belief !== undefined) {
        // Compare what we believed with what is there: any difference is someone else's change.
        result.drift =
          (this.#belief === null) !== (kernel === null) ||
          (this.#belief !== null && kernel !== null && !isEmpty(diff(kernel, this.#belief)));
        if (result.drift) this.#log.warn('the kernel table differs from what was committed; repairing');
      }
      // Keep the bookkeeping of the belief (which Service owned which element) for span links.
      if (kernel && this.#belief) {
        kernel.owners = this.#belief.owners;
        kernel.services = this.#belief.services;
      }
      this.#belief = kernel;
    }

    const computeSpan = tracer().startSpan('compute', {}, ctx);
    const services = new Set(this.#serviceMap ? this.#serviceMap.values() : this.#serviceList);
    // Incremental: the belief is the desired ruleset last committed (or found equal), and only
    // Services changed since. The change then follows from the touched keys alone.
    const patched = readBack ? null : this.#patch(services, caps);
    let desired: Ruleset;
    if (patched) {
      desired = patched.desired;
    } else {
      this.#incremental = null;
      desired = desiredRuleset(
        {
          services,
          namespaces: this.#namespaces,
          devices: this.#devices,
          capabilities: caps,
          policy: this.#policy,
        },
        // No ContributionCache: Services that did not change are not recomputed anyway (the
        // incremental path), full recomputes (resync, policy, Namespaces) share decisions by
        // shape, and a cache would hold a second copy of every Service's contribution.
      );
      if (isConflictFree(desired, services.size)) {
        this.#incremental = {
          version: this.#inputsVersion,
          capabilities: caps,
          services,
          refs: thresholdRefs(desired),
        };
      }
    }
    computeSpan.setAttributes({
      'slipstream.elements': desired.elements.size,
      'slipstream.compute.incremental': patched !== null,
    });
    computeSpan.end();
    this.#desired = desired;
    result.services = desired.services.size;
    result.elements = desired.elements.size;
    result.chains = desired.chains.size;

    const diffSpan = tracer().startSpan('diff', {}, ctx);
    let change = patched ? patched.change : diff(this.#belief ?? null, desired);
    if (change.summary.devicesRemoved.length > 0 && this.#belief?.flowtable && caps.flowtable) {
      // The kernel unhooks a deleted link from the flowtable by itself: refresh the belief's
      // devices (a cheap read, no elements) so that only links that still exist are removed
      // (which recreates the flowtable: libnftables JSON cannot remove single devices).
      const devices = await this.#kernel.readFlowtableDevices();
      if (devices) {
        this.#belief = { ...this.#belief, flowtable: { ...this.#belief.flowtable, devices } };
        change = diff(this.#belief, desired);
      }
    }
    diffSpan.setAttributes({ 'slipstream.ops': change.ops.length });
    diffSpan.end();

    result.elementsAdded = change.summary.elementsAdded;
    result.elementsRemoved = change.summary.elementsRemoved;
    if (isEmpty(change)) {
      // The kernel holds what is desired: the desired ruleset (with its bookkeeping) is the belief.
      this.#belief = desired;
      result.result = 'noop';
      return;
    }
    span.addLinks(this.#links(change, desired, patched?.gone));
    // One event per Service this sync changes: Jaeger searches event fields, so an operator finds
    // "when did this node program shop/postgres" by k8s.service.name (links are not searchable).
    for (const key of change.summary.services.slice(0, MAX_LINKS)) {
      const entry = desired.services.get(key);
      span.addEvent('service.programmed', {
        'k8s.namespace.name': key.split('/')[0] ?? '',
        'k8s.service.name': key.slice(key.indexOf('/') + 1),
        'slipstream.decision.offload': entry
          ? entry.decision.offload.map((o) => `${o.port}/${o.protocol}`).join(',') || 'none'
          : 'removed',
        'slipstream.decision.reason': entry?.decision.reason ?? 'Service removed',
      });
    }

    const commitSpan = tracer().startSpan(
      'commit',
      { attributes: { 'slipstream.ops': change.ops.length, 'slipstream.sync.attempt': isRetry ? 2 : 1 } },
      ctx,
    );
    try {
      await this.#kernel.apply(change);
      commitSpan.setStatus({ code: SpanStatusCode.OK });
    } catch (error) {
      commitSpan.recordException(error instanceof Error ? error : new Error(errorText(error)));
      commitSpan.setStatus({ code: SpanStatusCode.ERROR, message: errorText(error) });
      commitSpan.end();
      if (isRetry || this.#stopped) throw error;
      // One immediate retry with fresh facts: the links (a device may have vanished between
      // listing and commit) and the kernel's table (someone may have changed it).
      this.#log.warn('transaction refused; re-reading links and the table, retrying once', {
        error: errorText(error),
        errorClass: errorClassOf(error),
      });
      result.retried = true;
      if (this.#refreshDevices && (change.summary.devicesAdded.length > 0 || errorMentionsDevice(error))) {
        this.#devices = await this.#refreshDevices();
      }
      this.#belief = undefined;
      this.#readBackNext = true;
      return this.#attempt(ctx, span, result, true);
    }
    commitSpan.end();
    this.#belief = desired;
    result.result = 'ok';
    result.change = describeChange(change);
  }

  /**
   * Patches `#desired` in place with the Services added to and removed from `services` since it
   * was computed, or returns null when it must be recomputed in full (first sync, other inputs
   * changed, a conflict, too many changes). Only when the belief IS `#desired` (committed or
   * found equal): the Change is then exactly the patch.
   */
  #patch(
    services: Set<Service>,
    caps: Capabilities,
  ): { desired: Ruleset; change: Change; gone: Map<string, ServiceEntry> } | null {
    const inc = this.#incremental;
    const desired = this.#desired;
    if (
      !inc ||
      !desired ||
      this.#belief !== desired ||
      inc.version !== this.#inputsVersion ||
      inc.capabilities !== caps
    ) {
      return null;
    }
    const removed: string[] = [];
    const added: Contribution[] = [];
    // Past a quarter of the Services a full recompute (memoized per Service) is as cheap.
    const limit = Math.max(64, services.size >> 2);
    for (const s of inc.services) {
      if (services.has(s)) continue;
      removed.push(serviceKey(s));
      if (removed.length > limit) return null;
    }
    for (const s of services) {
      if (inc.services.has(s)) continue;
      added.push(contribution(s, this.#policy, this.#namespaces.get(s.namespace)));
      if (removed.length + added.length > limit) return null;
    }
    // The removed entries, for the span links (the belief is patched along with `desired`).
    const gone = new Map<string, ServiceEntry>();
    for (const key of removed) {
      const entry = desired.services.get(key);
      if (entry) gone.set(key, entry);
    }
    const delta = applyServiceDelta(desired, inc.refs, removed, added, caps);
    if (!delta) return null;
    inc.services = services;
    return { desired, change: diffDelta(delta, desired), gone };
  }

  #links(change: Change, desired: Ruleset, gone?: ReadonlyMap<string, ServiceEntry>): Link[] {
    const links: Link[] = [];
    const seen = new Set<string>();
    for (const key of change.summary.services) {
      if (links.length >= MAX_LINKS) break;
      const raw =
        desired.services.get(key)?.trace ??
        (gone ? gone.get(key)?.trace : this.#belief?.services.get(key)?.trace);
      if (raw === undefined) continue;
      const parsed = parseTraceparent(raw);
      if (!parsed || seen.has(parsed.spanId)) continue;
      seen.add(parsed.spanId);
      links.push({
        context: { ...parsed, isRemote: true },
        attributes: {
          'k8s.service.name': key.slice(key.indexOf('/') + 1),
          'k8s.namespace.name': key.split('/')[0],
        },
      });
    }
    return links;
  }
}

function errorMentionsDevice(error: unknown): boolean {
  return /\b(device|dev|flowtable)\b/i.test(errorText(error)) || errorClassOf(error) === 'not-supported';
}
