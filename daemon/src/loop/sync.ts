// One sync: inputs -> desired ruleset -> diff against what the kernel holds (the belief) -> one
// transaction. The kernel is read only at start-up, after someone else changed the table (drift),
// at the periodic resync and after a refused transaction; every other sync diffs against the
// belief, so a steady state costs no kernel I/O at all.
//
// A refused transaction is retried once with fresh facts (the links and the table), then split by
// Service (isolate.ts): the Services whose part the kernel refuses are quarantined, everything
// else is committed. Only a table structure the kernel refuses with no Service in it fails the
// sync as a whole.
//
// After link events the kernel's own flowtable device list is read (cheap: no elements): the
// kernel unhooks a deleted link by itself, and never hooks the link created again under its name.
// After the last commit, ports whose elements went and that still have offloaded connections are
// evicted (evict.ts).

import { type Logger, LogOnce } from '@slipstream/shared/adapters/log';
import { type Change, describeChange, isEmpty } from '@slipstream/shared/core/change';
import type { Contribution } from '@slipstream/shared/core/desired-ruleset';
import { diff } from '@slipstream/shared/core/diff';
import type { Capabilities, Ruleset } from '@slipstream/shared/core/ruleset';
import type { Service } from '@slipstream/shared/core/service';
import type { OffloadedFlows } from '../conntrack.ts';
import { errorClassOf, errorDetail, errorText, type Kernel } from '../kernel.ts';
import { DesiredState } from './desired.ts';
import { Evictor } from './evict.ts';
import type { InputSnapshot, InputStore } from './inputs.ts';
import { isolate, StructureRefused } from './isolate.ts';
import type { Quarantine } from './quarantine.ts';
import { emptyResult, type SyncResult } from './result.ts';
import type { Trigger } from './scheduler.ts';
import { endChild, SyncTrace } from './sync-trace.ts';

export interface SyncerOptions {
  kernel: Kernel;
  inputs: InputStore;
  quarantine: Quarantine;
  logger: Logger;
  /** Re-lists links (used when a transaction that touches flowtable devices is refused). */
  refreshDevices?: () => Promise<string[]>;
  /** After a sync that brought the kernel to what is wanted: for each Service change it took in, ms from seen to committed. */
  onProgrammed?: (latenciesMs: number[]) => void;
  now?: () => number;
  /**
   * Reads the offloaded connections (conntrack) to decide whether removed ports need an eviction;
   * null: unreadable (then they are evicted anyway). Absent: offloaded connections are never evicted.
   */
  readOffloaded?: () => Promise<OffloadedFlows | null>;
}

export interface SyncRun {
  result: SyncResult;
  /** Run again at once: the quarantine changed, so the desired ruleset must be computed again. */
  again: boolean;
}

function sameCapabilities(a: Capabilities, b: Capabilities): boolean {
  return a.flowtable === b.flowtable && a.flowtableCounter === b.flowtableCounter;
}

/** An element key (`ip 10.96.0.1 6 5432`) as a person reads it: `10.96.0.1 5432/TCP`. */
function elementName(key: string): string {
  const [, address, protocol, port] = key.split(' ');
  const l4 = protocol === '6' ? 'TCP' : protocol === '17' ? 'UDP' : `proto ${protocol}`;
  return `${address} ${port}/${l4}`;
}

/** One line naming what of a Service is wrong in its input (invalid ClusterIPs, ignored annotations). */
function problemsOf(c: Contribution): string {
  const parts = [
    ...c.skipped.map((s) => `${s.what}: ${s.reason}`),
    ...(c.entry.decision.warnings ?? []).map((w) => `${w.key}: ${w.message}`),
  ];
  return parts.join('; ');
}

export class Syncer {
  readonly #o: SyncerOptions;
  readonly #desired = new DesiredState();
  readonly #problems = new LogOnce();
  readonly #evictor: Evictor;
  #belief: Ruleset | null | undefined = undefined;
  #capabilities: Capabilities | null = null;
  #readBackNext = true;
  /** Service changes taken in but not yet in the kernel (a failed sync keeps them), with when they were seen. */
  readonly #unprogrammed = new Map<string, number>();

  constructor(options: SyncerOptions) {
    this.#o = options;
    this.#evictor = new Evictor(options.kernel, options.readOffloaded);
  }

  /** What the kernel holds, as far as this daemon knows (null: no table; undefined: not known). */
  get belief(): Ruleset | null | undefined {
    return this.#belief;
  }

  get desired(): Ruleset | null {
    return this.#desired.current;
  }

  get capabilities(): Capabilities | null {
    return this.#capabilities;
  }

  /** The next sync reads the table back (someone else changed it, or events were lost). */
  requestReadBack(): void {
    this.#readBackNext = true;
  }

  async sync(triggers: ReadonlySet<Trigger>): Promise<SyncRun> {
    const started = performance.now();
    const result = emptyResult(triggers);
    const trace = new SyncTrace(result.triggers);
    const writesBefore = this.#o.kernel.writes;
    let failure: unknown;
    let again = false;
    try {
      again = await this.#run(triggers, result, trace);
    } catch (error) {
      failure = error instanceof StructureRefused ? error.cause : error;
      result.result = 'error';
      result.error = errorText(failure);
      result.errorClass = errorClassOf(failure);
      // The kernel keeps its last good state; our belief may be what was wrong: read it back.
      this.#belief = undefined;
      this.#readBackNext = true;
      this.#desired.invalidate();
    }
    result.writes = this.#o.kernel.writes - writesBefore;
    result.quarantined = this.#o.quarantine.size;
    if (failure === undefined && result.waitingFor === undefined) this.#programmed();
    result.durationMs = Math.round((performance.now() - started) * 10) / 10;
    trace.end(result, failure);
    return { result, again };
  }

  async #run(triggers: ReadonlySet<Trigger>, result: SyncResult, trace: SyncTrace): Promise<boolean> {
    const { kernel, quarantine } = this.#o;
    const readBack =
      this.#readBackNext ||
      this.#belief === undefined ||
      this.#capabilities === null ||
      triggers.has('resync') ||
      triggers.has('drift');
    if (readBack) {
      const caps = await kernel.probe();
      if (this.#capabilities && !sameCapabilities(this.#capabilities, caps)) {
        this.#released(quarantine.releaseAll(), 'the kernel capabilities changed');
        this.#desired.invalidate();
      }
      this.#capabilities = caps;
    }
    const caps = this.#capabilities!;
    result.degraded = !caps.flowtable || caps.flowtableCounter === false;
    if (caps.reason) result.degradedReason = caps.reason;

    const snapshot = this.#take(caps);
    if (snapshot.missing.length > 0) {
      result.waitingFor = snapshot.missing;
      return false;
    }
    if (readBack) await this.#readBack(result);
    else if (caps.flowtable) await this.#readHooked(snapshot.devices, triggers);

    const again = await this.#program(snapshot, caps, result, trace);
    await this.#evictor.afterCommits(this.#belief, caps, trace, result);
    return again;
  }

  async #program(
    snapshot: InputSnapshot,
    caps: Capabilities,
    result: SyncResult,
    trace: SyncTrace,
  ): Promise<boolean> {
    const { quarantine, logger } = this.#o;
    // compute
    const computeSpan = trace.child('compute');
    const computed = this.#desired.compute(snapshot, caps, this.#belief, (key, s) =>
      quarantine.excludes(key, s),
    );
    // A Service whose rules cannot be computed is left out (and held until it changes or is due).
    for (const f of computed.failures) {
      this.#hold(trace, f.key, f.service, {
        stage: 'compute',
        reason: `computing its rules failed: ${errorText(f.error)}`,
      });
    }
    let again = false;
    this.#nameProblems(computed.fresh, snapshot.services, snapshot.changed);
    const desired = computed.desired;
    computeSpan.setAttributes({
      'slipstream.elements': desired.elements.size,
      'slipstream.compute.incremental': computed.patched !== null,
    });
    endChild(computeSpan);
    result.incremental = computed.patched !== null;
    result.services = desired.services.size;
    result.elements = desired.elements.size;
    result.chains = desired.chains.size;

    // diff
    const diffSpan = trace.child('diff');
    const change = computed.patched ? computed.patched.change : diff(this.#belief ?? null, desired);
    diffSpan.setAttributes({ 'slipstream.ops': change.ops.length });
    endChild(diffSpan);
    result.elementsAdded = change.summary.elementsAdded;
    result.elementsRemoved = change.summary.elementsRemoved;
    if (isEmpty(change)) {
      // The kernel holds what is desired: the desired ruleset (with its bookkeeping) is the belief.
      this.#belief = desired;
      this.#releaseProgrammed(desired, result);
      return again;
    }
    trace.change(change, desired, computed.patched?.gone, this.#belief);

    // commit
    try {
      await this.#commit(trace, change, 1);
      this.#belief = desired;
    } catch (error) {
      logger.warn('transaction refused; re-reading links and the table, retrying once', {
        error: errorText(error),
        errorClass: errorClassOf(error),
        detail: errorDetail(error),
      });
      result.retried = true;
      // A patched desired ruleset IS the belief object, patched in place: what the kernel holds is
      // now unknown, not different.
      if (computed.patched) this.#belief = undefined;
      const retry = await this.#retry(trace, result, error, change, caps);
      again = retry.again || again;
      if (!retry.wrote) {
        // The fresh facts left nothing to do (a vanished device, someone else's repair).
        this.#releaseProgrammed(this.#belief ?? desired, result);
        return again;
      }
    }
    result.result = 'ok';
    result.change = describeChange(change);
    this.#releaseProgrammed(this.#belief ?? desired, result);
    return again;
  }

  /** The inputs, keeping when each Service change was seen until it is in the kernel. */
  #take(caps: Capabilities): InputSnapshot {
    const snapshot = this.#o.inputs.take(caps.flowtable);
    for (const [key, at] of snapshot.seen) if (!this.#unprogrammed.has(key)) this.#unprogrammed.set(key, at);
    return snapshot;
  }

  /** The kernel holds what is wanted: every change taken in is programmed, but a quarantined Service's. */
  #programmed(): void {
    if (this.#unprogrammed.size === 0) return;
    const now = (this.#o.now ?? Date.now)();
    const latencies: number[] = [];
    for (const [key, at] of this.#unprogrammed) {
      if (!this.#o.quarantine.has(key)) latencies.push(Math.max(0, now - at));
    }
    this.#unprogrammed.clear();
    if (latencies.length > 0) this.#o.onProgrammed?.(latencies);
  }

  /** Retry with fresh links and a read-back; then isolate the Services the kernel refuses. */
  async #retry(
    trace: SyncTrace,
    result: SyncResult,
    error: unknown,
    refused: Change,
    caps: Capabilities,
  ): Promise<{ wrote: boolean; again: boolean }> {
    const { inputs, quarantine } = this.#o;
    const refresh = this.#o.refreshDevices;
    // A device listed, then deleted before the commit: the kernel refuses the whole transaction.
    const text = (error as { nftMessage?: string } | null)?.nftMessage ?? errorText(error);
    if (
      refresh &&
      (refused.summary.devicesAdded.length > 0 ||
        /\b(device|dev|flowtable)\b/i.test(text) ||
        errorClassOf(error) === 'not-supported')
    ) {
      inputs.setDevices(await refresh());
    }
    await this.#readBack(result);
    this.#desired.invalidate();
    result.incremental = false;
    const computed = this.#desired.compute(this.#take(caps), caps, this.#belief, (key, s) =>
      quarantine.excludes(key, s),
    );
    const fresh = computed.desired;
    const change = diff(this.#belief ?? null, fresh);
    if (isEmpty(change)) {
      this.#belief = fresh;
      return { wrote: false, again: false };
    }
    try {
      await this.#commit(trace, change, 2);
      this.#belief = fresh;
      return { wrote: true, again: false };
    } catch {
      // Still refused: find who.
    }
    let attempt = 2;
    const isolated = await isolate(
      (c) => this.#commit(trace, c, ++attempt),
      (c) => this.#o.kernel.check(c),
      this.#belief ?? null,
      fresh,
      caps,
    );
    this.#belief = isolated.belief;
    this.#desired.invalidate();
    let again = false;
    for (const culprit of isolated.culprits) {
      const service = inputs.services.get(culprit.key);
      const what =
        culprit.elements.slice(0, 3).map(elementName).join(', ') +
        (culprit.elements.length > 3 ? ', ...' : '');
      again =
        this.#hold(trace, culprit.key, service, {
          stage: 'kernel',
          reason: `the kernel refused its elements (${what}): ${errorText(culprit.error)}`,
          errorClass: errorClassOf(culprit.error),
        }) || again;
    }
    return { wrote: isolated.commits > 0, again: again || isolated.culprits.length > 0 };
  }

  async #commit(trace: SyncTrace, change: Change, attempt: number): Promise<void> {
    const span = trace.child('commit', {
      'slipstream.ops': change.ops.length,
      'slipstream.sync.attempt': attempt,
    });
    try {
      await this.#o.kernel.apply(change);
    } catch (error) {
      endChild(span, error, errorText(error));
      throw error;
    }
    this.#evictor.committed(change);
    endChild(span);
  }

  /** Reads the table back; what differs from the belief is someone else's change (drift). */
  async #readBack(result: SyncResult): Promise<void> {
    const kernel = await this.#o.kernel.readTable();
    result.readBack = true;
    this.#readBackNext = false;
    const belief = this.#belief;
    if (belief !== undefined) {
      const repair = kernel && belief ? diff(kernel, belief) : null;
      const drift = (belief === null) !== (kernel === null) || (repair !== null && !isEmpty(repair));
      if (drift) {
        result.drift = true;
        result.driftDetail = kernel === null ? 'the table was deleted' : `repair: ${describeChange(repair!)}`;
        this.#released(this.#o.quarantine.releaseAll(), 'the kernel table changed');
      }
    }
    // Keep the bookkeeping of the belief (which Service owned which element) for span links.
    if (kernel && belief) {
      kernel.owners = belief.owners;
      kernel.services = belief.services;
    }
    this.#belief = kernel;
    this.#desired.invalidate();
  }

  /**
   * The kernel's own device list, after link events or when a device is to be dropped: the kernel
   * unhooks a deleted link by itself (nothing to remove), and a link created again under the same
   * name is not hooked (to be added again, though the names did not change).
   */
  async #readHooked(devices: readonly string[], triggers: ReadonlySet<Trigger>): Promise<void> {
    const belief = this.#belief;
    const ft = belief?.flowtable;
    if (!belief || !ft) return;
    const wanted = new Set(devices);
    if (!triggers.has('link') && ft.devices.every((d) => wanted.has(d))) return;
    const hooked = await this.#o.kernel.readFlowtableDevices();
    if (!hooked || (hooked.length === ft.devices.length && hooked.every((d, i) => d === ft.devices[i])))
      return;
    this.#belief = { ...belief, flowtable: { ...ft, devices: hooked } };
    this.#desired.invalidate();
  }

  #hold(
    trace: SyncTrace,
    key: string,
    service: Service | undefined,
    failure: { stage: 'kernel' | 'compute'; reason: string; errorClass?: string },
  ): boolean {
    const news = this.#o.quarantine.hold(key, service, failure);
    trace.quarantined(key, failure.reason);
    if (news) {
      this.#o.logger.warn('Service quarantined: kept out of the kernel, retried with backoff', {
        service: key,
        stage: failure.stage,
        reason: failure.reason,
        ...(failure.errorClass ? { errorClass: failure.errorClass } : {}),
        retryAt: new Date(this.#o.quarantine.get(key)?.retryAt ?? Date.now()).toISOString(),
      });
    }
    return news;
  }

  /** Quarantined Services now in the kernel (their retry succeeded) are released. */
  #releaseProgrammed(programmed: Ruleset, result: SyncResult): void {
    const quarantine = this.#o.quarantine;
    if (quarantine.size === 0) return;
    const released: string[] = [];
    for (const entry of quarantine.entries()) {
      const service = this.#o.inputs.services.get(entry.key);
      if (!service) {
        quarantine.release(entry.key);
        continue;
      }
      if (programmed.services.has(entry.key) && !quarantine.excludes(entry.key, service)) {
        quarantine.release(entry.key);
        released.push(entry.key);
      }
    }
    if (released.length > 0) {
      result.released = released;
      this.#o.logger.info('quarantined Services reached the kernel; released', { services: released });
    }
  }

  #released(count: number, why: string): void {
    if (count > 0) this.#o.logger.info('quarantined Services released for a retry', { count, why });
  }

  /** Logs each Service's input problems once per change of them, naming the Service. */
  #nameProblems(
    fresh: Contribution[],
    services: ReadonlyMap<string, Service>,
    changed: ReadonlySet<string> | 'all',
  ): void {
    for (const c of fresh) {
      const text = problemsOf(c);
      if (text === '') {
        this.#problems.clear(c.key);
        continue;
      }
      this.#problems.report(c.key, text, () =>
        this.#o.logger.warn('Service input ignored in part', { service: c.key, problems: text }),
      );
    }
    if (changed === 'all') this.#problems.retain((key) => services.has(key));
    else for (const key of changed) if (!services.has(key)) this.#problems.clear(key);
  }
}
