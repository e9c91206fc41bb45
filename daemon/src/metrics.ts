// The daemon's Prometheus metrics, in kube-proxy's shape (sync duration, last sync and last queued
// timestamps, network-programming latency, sync failures) plus what is Slipstream's own (elements,
// Services per decision, flowtable devices, degraded, offloaded connections, evictions, drift).
// Events are counted as the loop reports them (onSync, onProgrammed, onKernelEvent); state is read
// from the loop when Prometheus scrapes. No metric carries a per-Service label: a node with 100,000
// Services exposes the same few series as one with ten.

import { MAP_NAMES, MAPS, type MapId } from '@slipstream/shared/core/ruleset';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { groupByElement, type OffloadReading } from './conntrack.ts';

/** What conntrack counts are grouped by before the first sync: nothing, so every flow is 'none'. */
const NO_ELEMENTS = { elements: new Map(), nodeAddresses: { ip: [], ip6: [] } };

import type { KernelEvent, NftErrorClass } from './kernel.ts';
import type { Reconciler, SyncResult } from './reconciler.ts';

/** kube-proxy's sync_proxy_rules_duration_seconds buckets: 1 ms doubling to 16.384 s (15 buckets). */
export const SYNC_BUCKETS: readonly number[] = Array.from({ length: 15 }, (_, i) => 2 ** i / 1000);

/** Seen -> committed: milliseconds for a change served at once, up to minutes for one retried with backoff. */
export const PROGRAMMING_BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
];

/** Every error class, so each failure series exists (at 0) before the first failure. */
const ERROR_CLASSES: Record<NftErrorClass, true> = {
  'not-supported': true,
  'no-such-object': true,
  exists: true,
  busy: true,
  permission: true,
  invalid: true,
  full: true,
  unknown: true,
};

const KERNEL_EVENTS: Record<KernelEvent['type'], string> = {
  'foreign-change': 'foreign-change',
  overrun: 'events-lost',
  unverified: 'unverified',
  unavailable: 'unavailable',
};

/** The slice of the Reconciler the metrics read (a Reconciler is one). */
export type LoopView = Pick<
  Reconciler,
  | 'onSync'
  | 'onProgrammed'
  | 'onKernelEvent'
  | 'lastQueuedAt'
  | 'quarantined'
  | 'capabilities'
  | 'belief'
  | 'desired'
  | 'devices'
>;

export class DaemonMetrics {
  readonly #syncDuration: Histogram<'mode'>;
  readonly #lastSync: Gauge;
  readonly #programming: Histogram;
  readonly #failures: Counter<'error_class'>;
  readonly #drift: Counter;
  readonly #kernelEvents: Counter<'event'>;
  readonly #evictions: Counter;
  readonly #offloaded: Gauge<'threshold'>;
  readonly #offloadedBytes: Gauge<'threshold'>;
  readonly #sampleDuration: Gauge;
  readonly #sampleFailures: Counter<'reason'>;
  readonly #loop: LoopView;

  constructor(registry: Registry, loop: LoopView) {
    const registers = [registry];
    this.#loop = loop;
    this.#syncDuration = new Histogram({
      name: 'slipstream_sync_duration_seconds',
      help: 'Duration of a sync in seconds (kube-proxy buckets): mode="partial" patched only the changed Services, mode="full" computed everything or read the table back.',
      labelNames: ['mode'],
      buckets: [...SYNC_BUCKETS],
      registers,
    });
    for (const mode of ['full', 'partial']) this.#syncDuration.zero({ mode });
    this.#lastSync = new Gauge({
      name: 'slipstream_sync_last_timestamp_seconds',
      help: 'Unix time in seconds of the last sync that brought the kernel to the desired state (0: none yet).',
      registers,
    });
    this.#lastSync.set(0);
    new Gauge({
      name: 'slipstream_sync_last_queued_timestamp_seconds',
      help: 'Unix time in seconds a sync was last asked for (a change, the periodic resync, a retry; 0: never).',
      registers,
      collect() {
        this.set((loop.lastQueuedAt?.getTime() ?? 0) / 1000);
      },
    });
    this.#programming = new Histogram({
      name: 'slipstream_network_programming_duration_seconds',
      help: 'Seconds from the moment the daemon saw a Service change to the sync that committed it in the kernel (quarantined Services are left out).',
      buckets: [...PROGRAMMING_BUCKETS],
      registers,
    });
    this.#failures = new Counter({
      name: 'slipstream_sync_failures_total',
      help: 'Syncs that failed as a whole (the kernel keeps its last state; retried with backoff), by the kernel error class.',
      labelNames: ['error_class'],
      registers,
    });
    for (const c of Object.keys(ERROR_CLASSES)) this.#failures.inc({ error_class: c }, 0);
    new Gauge({
      name: 'slipstream_quarantined_services',
      help: 'Services kept out of the kernel and retried with backoff: stage="kernel" (the kernel refused their elements) or "compute" (computing them failed).',
      labelNames: ['stage'],
      registers,
      collect() {
        const counts = { kernel: 0, compute: 0 };
        for (const q of loop.quarantined) counts[q.stage]++;
        for (const [stage, n] of Object.entries(counts)) this.set({ stage }, n);
      },
    });
    new Gauge({
      name: 'slipstream_elements',
      help: 'Map elements in the kernel table as the daemon knows it, by map: svc4 and svc6 (address, protocol, port), nodeports (protocol, port).',
      labelNames: ['map'],
      registers,
      collect() {
        const counts: Record<MapId, number> = { ip: 0, ip6: 0, np: 0 };
        for (const e of loop.belief?.elements.values() ?? []) counts[e.family]++;
        for (const id of MAPS) this.set({ map: MAP_NAMES[id] }, counts[id]);
      },
    });
    new Gauge({
      name: 'slipstream_services',
      help: 'Services in the desired ruleset, by decision (offload: at least one port offloaded; keep: none) and by what decided (hints, policy, user, namespace, no-cluster-ip).',
      labelNames: ['decision', 'source'],
      registers,
      collect() {
        this.reset();
        const counts = new Map<string, { decision: string; source: string; n: number }>();
        for (const entry of loop.desired?.services.values() ?? []) {
          const decision = entry.decision.offload.length > 0 ? 'offload' : 'keep';
          const id = `${decision} ${entry.decision.source}`;
          const c = counts.get(id);
          if (c) c.n++;
          else counts.set(id, { decision, source: entry.decision.source, n: 1 });
        }
        for (const c of counts.values()) this.set({ decision: c.decision, source: c.source }, c.n);
      },
    });
    new Gauge({
      name: 'slipstream_flowtable_devices',
      help: "Devices hooked by the daemon's flowtable, as the daemon knows the kernel holds them.",
      registers,
      collect() {
        this.set(loop.belief?.flowtable?.devices.length ?? 0);
      },
    });
    new Gauge({
      name: 'slipstream_flowtable_missing_devices',
      help: 'Links the flowtable should hook that it does not (not synced yet, refused, or a name that cannot be hooked); 0 when degraded.',
      registers,
      collect() {
        const caps = loop.capabilities;
        if (!caps?.flowtable) return this.set(0);
        const hooked = new Set(loop.belief?.flowtable?.devices ?? []);
        this.set(loop.devices.filter((d) => !hooked.has(d)).length);
      },
    });
    new Gauge({
      name: 'slipstream_degraded',
      help: '1 when this kernel cannot offload (no flowtable support, or no flowtable counter flag): rules are kept, nothing is offloaded; 0 otherwise.',
      registers,
      collect() {
        const caps = loop.capabilities;
        this.set(!caps?.flowtable || caps.flowtableCounter === false ? 1 : 0);
      },
    });
    this.#offloaded = new Gauge({
      name: 'slipstream_offloaded_connections',
      help: 'Connections to Slipstream elements offloaded to the flowtable now (sampled from conntrack), by the packet threshold of their element; threshold="none": their element is gone.',
      labelNames: ['threshold'],
      registers,
    });
    this.#offloadedBytes = new Gauge({
      name: 'slipstream_offloaded_bytes',
      help: 'Bytes (both directions) carried so far by the connections offloaded now, by threshold; 0 without conntrack accounting (nf_conntrack_acct).',
      labelNames: ['threshold'],
      registers,
    });
    this.#sampleDuration = new Gauge({
      name: 'slipstream_conntrack_sample_duration_seconds',
      help: 'Seconds the last conntrack sample of offloaded connections took.',
      registers,
    });
    this.#sampleFailures = new Counter({
      name: 'slipstream_conntrack_sample_failures_total',
      help: 'Conntrack samples that failed (unavailable: no conntrack tool; timeout; failed) or were cut at their entry bound (truncated).',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of ['unavailable', 'timeout', 'failed', 'truncated'])
      this.#sampleFailures.inc({ reason }, 0);
    this.#evictions = new Counter({
      name: 'slipstream_evictions_total',
      help: 'Eviction steps: offload ended for Service ports and their offloaded connections were returned to the slow path.',
      registers,
    });
    this.#drift = new Counter({
      name: 'slipstream_drift_repairs_total',
      help: "Syncs that found the kernel table changed behind the daemon's back (someone else's edit, lost events) and repaired it.",
      registers,
    });
    this.#kernelEvents = new Counter({
      name: 'slipstream_kernel_table_events_total',
      help: "Events of the kernel table watch: foreign-change (someone else's commit), events-lost, unverified (our commit not confirmed), unavailable (no watch).",
      labelNames: ['event'],
      registers,
    });
    for (const event of Object.values(KERNEL_EVENTS)) this.#kernelEvents.inc({ event }, 0);

    loop.onSync((r) => this.#synced(r));
    loop.onProgrammed((latencies) => {
      for (const ms of latencies) this.#programming.observe(ms / 1000);
    });
    loop.onKernelEvent((type) => this.#kernelEvents.inc({ event: KERNEL_EVENTS[type] }));
  }

  #synced(r: SyncResult): void {
    if (r.waitingFor !== undefined) return;
    this.#syncDuration.observe({ mode: r.incremental ? 'partial' : 'full' }, r.durationMs / 1000);
    if (r.result === 'error') {
      this.#failures.inc({ error_class: r.errorClass ?? 'unknown' });
      return;
    }
    this.#lastSync.set(Date.now() / 1000);
    if (r.drift) this.#drift.inc();
    if (r.evicted) this.#evictions.inc();
  }

  /** A conntrack sample: offloaded connections and bytes by the threshold of the element they hit. */
  sampled(reading: OffloadReading): void {
    const belief = this.#loop.belief;
    const byThreshold = groupByElement(belief ?? NO_ELEMENTS, reading.flows, (e) =>
      e?.threshold != null ? String(e.threshold) : 'none',
    );
    this.#offloaded.reset();
    this.#offloadedBytes.reset();
    // Every threshold in use (and 'none') has its series, 0 when nothing is offloaded there.
    for (const threshold of [...(belief?.thresholds ?? []).map(String), 'none']) {
      this.#offloaded.set({ threshold }, 0);
      this.#offloadedBytes.set({ threshold }, 0);
    }
    for (const [threshold, sum] of byThreshold) {
      this.#offloaded.set({ threshold }, sum.connections);
      this.#offloadedBytes.set({ threshold }, sum.bytes);
    }
    this.#sampleDuration.set(reading.durationMs / 1000);
    if (reading.truncated) this.#sampleFailures.inc({ reason: 'truncated' });
  }

  /** A conntrack sample that could not be taken. */
  sampleFailed(reason: 'unavailable' | 'timeout' | 'failed'): void {
    this.#sampleFailures.inc({ reason });
  }
}
