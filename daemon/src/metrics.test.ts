// The daemon's metrics against a real Reconciler on a MemoryKernel: each metric moves when the
// loop does what it counts, and the initial state is not mistaken for changes.

import { silentLogger } from '@slipstream/shared/adapters/log';
import { createMetricsRegistry } from '@slipstream/shared/adapters/metrics';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { USER_KEYS } from '@slipstream/shared/core/contract';
import type { Service } from '@slipstream/shared/core/service';
import type { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { loadScenario } from '../../test/fixtures/services/load.ts';
import { flowKey } from './conntrack.ts';
import { kernelError } from './kernel.ts';
import { MemoryKernel } from './memory-kernel.ts';
import { DaemonMetrics, SYNC_BUCKETS } from './metrics.ts';
import { Reconciler } from './reconciler.ts';

const policy = loadDefaultPolicy();
const reconcilers: Reconciler[] = [];
afterEach(async () => {
  for (const r of reconcilers.splice(0)) await r.stop();
});

type Labels = Record<string, string>;

/** The value of one series (`name` may end in _count, _sum or _bucket for histograms). */
async function value(registry: Registry, name: string, labels: Labels = {}): Promise<number | undefined> {
  const base = name.replace(/_(count|sum|bucket)$/, '');
  const metric = registry.getSingleMetric(base) ?? registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  return values.find(
    (v) =>
      ((v as { metricName?: string }).metricName ?? base) === name &&
      Object.entries(labels).every(([k, l]) => String((v.labels as Labels)[k]) === l) &&
      Object.keys(v.labels).filter((k) => k !== 'le').length === Object.keys(labels).length,
  )?.value;
}

function setup(kernel = new MemoryKernel(), scenario = 'dual-stack') {
  const s = loadScenario(scenario);
  const r = new Reconciler({
    kernel,
    policy,
    minSyncIntervalMs: 10,
    resyncIntervalMs: 0,
    retryInitialMs: 10,
    logger: silentLogger,
  });
  reconcilers.push(r);
  r.update({ services: s.services, namespaces: s.namespaces.values(), devices: s.devices });
  const registry = createMetricsRegistry('daemon');
  const metrics = new DaemonMetrics(registry, r);
  return { r, kernel, registry, metrics, s };
}

function service(name: string, ip: string, port = 5432): Service {
  return {
    namespace: 'shop',
    name,
    uid: `uid-${name}`,
    type: 'ClusterIP',
    clusterIPs: [ip],
    ports: [{ name: 'pg', port, protocol: 'TCP' }],
    annotations: {},
    labels: {},
  } as unknown as Service;
}

describe('DaemonMetrics', () => {
  it('uses kube-proxy sync buckets: 1 ms doubling to 16.384 s', () => {
    expect(SYNC_BUCKETS).toHaveLength(15);
    expect(SYNC_BUCKETS[0]).toBe(0.001);
    expect(SYNC_BUCKETS.at(-1)).toBe(16.384);
  });

  it('after start-up: one full sync, its timestamps, the kernel state and the decisions', async () => {
    const { r, registry } = setup();
    const before = Date.now() / 1000;
    await r.start();
    expect(await value(registry, 'slipstream_sync_duration_seconds_count', { mode: 'full' })).toBe(1);
    expect(await value(registry, 'slipstream_sync_duration_seconds_count', { mode: 'partial' })).toBe(0);
    const last = (await value(registry, 'slipstream_sync_last_timestamp_seconds'))!;
    const queued = (await value(registry, 'slipstream_sync_last_queued_timestamp_seconds'))!;
    expect(last).toBeGreaterThanOrEqual(before - 1);
    expect(queued).toBeGreaterThanOrEqual(before - 1);
    expect(last).toBeGreaterThanOrEqual(queued);
    expect(await value(registry, 'slipstream_elements', { map: 'svc4' })).toBe(2);
    expect(await value(registry, 'slipstream_elements', { map: 'svc6' })).toBe(2);
    expect(await value(registry, 'slipstream_services', { decision: 'offload', source: 'policy' })).toBe(1);
    expect(await value(registry, 'slipstream_flowtable_devices')).toBe(2);
    expect(await value(registry, 'slipstream_flowtable_missing_devices')).toBe(0);
    expect(await value(registry, 'slipstream_degraded')).toBe(0);
    expect(await value(registry, 'slipstream_quarantined_services', { stage: 'kernel' })).toBe(0);
    // The Services present at start are the initial state, not changes.
    expect(await value(registry, 'slipstream_network_programming_duration_seconds_count')).toBe(0);
  });

  it('a Service added: a partial sync and one network-programming observation', async () => {
    const { r, registry } = setup();
    await r.start();
    r.setService(service('pg-new', '10.96.0.50'));
    r.request('service');
    await r.nextSync((x) => x.result === 'ok');
    expect(await value(registry, 'slipstream_sync_duration_seconds_count', { mode: 'partial' })).toBe(1);
    expect(await value(registry, 'slipstream_network_programming_duration_seconds_count')).toBe(1);
    const seconds = (await value(registry, 'slipstream_network_programming_duration_seconds_sum'))!;
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThan(5);
    expect(await value(registry, 'slipstream_elements', { map: 'svc4' })).toBe(3);
    expect(await value(registry, 'slipstream_services', { decision: 'offload', source: 'policy' })).toBe(2);
  });

  it('a failed sync counts by error class and keeps its changes until they reach the kernel', async () => {
    const { r, kernel, registry } = setup();
    await r.start();
    const last = await value(registry, 'slipstream_sync_last_timestamp_seconds');
    kernel.failNext(kernelError('Error: Could not process rule: Invalid argument', 'invalid'), 3);
    r.setService(service('pg-new', '10.96.0.50'));
    const retried = r.nextSync((x) => x.result === 'ok');
    expect(await r.sync('service')).toMatchObject({ result: 'error' });
    expect(await value(registry, 'slipstream_sync_failures_total', { error_class: 'invalid' })).toBe(1);
    expect(await value(registry, 'slipstream_sync_failures_total', { error_class: 'full' })).toBe(0);
    expect(await value(registry, 'slipstream_sync_last_timestamp_seconds')).toBe(last);
    expect(await value(registry, 'slipstream_network_programming_duration_seconds_count')).toBe(0);
    await retried;
    // Programmed by the retry: observed once, from when it was first seen.
    expect(await value(registry, 'slipstream_network_programming_duration_seconds_count')).toBe(1);
    expect(await value(registry, 'slipstream_sync_last_timestamp_seconds')).toBeGreaterThan(last!);
  });

  it("someone else's change: a kernel event and a drift repair", async () => {
    const { r, kernel, registry } = setup();
    await r.start();
    const repaired = r.nextSync((x) => x.trigger === 'drift');
    kernel.tamper((t) => {
      t!.elements.delete('ip 10.96.0.10 6 5432');
      return t;
    });
    await repaired;
    expect(await value(registry, 'slipstream_kernel_table_events_total', { event: 'foreign-change' })).toBe(
      1,
    );
    expect(await value(registry, 'slipstream_drift_repairs_total')).toBe(1);
    kernel.overrun();
    expect(await value(registry, 'slipstream_kernel_table_events_total', { event: 'events-lost' })).toBe(1);
  });

  it('a Service the kernel refuses: quarantined, and left out of the programming latency', async () => {
    const kernel = new MemoryKernel({ mapSize: 2 });
    const { r, registry } = setup(kernel);
    await r.start();
    r.setService(service('pg-big', '10.96.0.51'));
    r.request('service');
    await r.nextSync((x) => x.quarantined === 1 && x.result !== 'error');
    expect(await value(registry, 'slipstream_quarantined_services', { stage: 'kernel' })).toBe(1);
    expect(await value(registry, 'slipstream_network_programming_duration_seconds_count')).toBe(0);
  });

  it('a degraded kernel: degraded 1, no devices hooked and none counted missing', async () => {
    const { r, registry } = setup(new MemoryKernel({ flowtable: false }));
    await r.start();
    expect(await value(registry, 'slipstream_degraded')).toBe(1);
    expect(await value(registry, 'slipstream_flowtable_devices')).toBe(0);
    expect(await value(registry, 'slipstream_flowtable_missing_devices')).toBe(0);
  });

  it('a link not hooked yet, or one whose name cannot be hooked, is a missing device', async () => {
    const { r, registry } = setup();
    await r.start();
    r.update({ devices: ['eth0', 'eth1', 'eth2'] });
    expect(await value(registry, 'slipstream_flowtable_missing_devices')).toBe(1);
    await r.sync('link');
    expect(await value(registry, 'slipstream_flowtable_missing_devices')).toBe(0);
    r.update({ devices: ['eth0', 'eth1', 'eth2', 'a:b'] });
    await r.sync('link');
    expect(await value(registry, 'slipstream_flowtable_devices')).toBe(3);
    expect(await value(registry, 'slipstream_flowtable_missing_devices')).toBe(1);
  });

  it('conntrack samples: connections and bytes by the threshold of the element they hit, never by Service', async () => {
    const { r, registry, metrics } = setup();
    await r.start();
    metrics.sampled({
      flows: new Map([
        [flowKey('10.96.0.10', 6, 5432), { connections: 3, packets: 0, bytes: 3000 }],
        [flowKey('fd00:10:96::a', 17, 443), { connections: 1, packets: 0, bytes: 10 }],
        [flowKey('10.1.2.3', 6, 80), { connections: 2, packets: 0, bytes: 5 }],
      ]),
      truncated: true,
      durationMs: 12,
    });
    expect(await value(registry, 'slipstream_offloaded_connections', { threshold: '20' })).toBe(4);
    expect(await value(registry, 'slipstream_offloaded_bytes', { threshold: '20' })).toBe(3010);
    expect(await value(registry, 'slipstream_offloaded_connections', { threshold: 'none' })).toBe(2);
    expect(await value(registry, 'slipstream_conntrack_sample_duration_seconds')).toBe(0.012);
    expect(await value(registry, 'slipstream_conntrack_sample_failures_total', { reason: 'truncated' })).toBe(
      1,
    );
    const text = await registry.metrics();
    expect(text).not.toMatch(/namespace=|service=|shop/);
    // The next sample replaces the last one.
    metrics.sampled({ flows: new Map(), truncated: false, durationMs: 1 });
    expect(await value(registry, 'slipstream_offloaded_connections', { threshold: '20' })).toBe(0);
    metrics.sampleFailed('unavailable');
    expect(
      await value(registry, 'slipstream_conntrack_sample_failures_total', { reason: 'unavailable' }),
    ).toBe(1);
  });

  it('a nodePort connection counts under its threshold when its destination is this node', async () => {
    const { r, registry, metrics, s } = setup(new MemoryKernel(), 'vips');
    r.update({ nodeAddresses: s.nodeAddresses });
    await r.start();
    metrics.sampled({
      flows: new Map([
        [flowKey('192.168.50.10', 6, 30443), { connections: 2, packets: 0, bytes: 200 }],
        [flowKey('192.168.50.99', 6, 30443), { connections: 1, packets: 0, bytes: 1 }],
      ]),
      truncated: false,
      durationMs: 1,
    });
    expect(await value(registry, 'slipstream_offloaded_connections', { threshold: '100' })).toBe(2);
    expect(await value(registry, 'slipstream_offloaded_connections', { threshold: 'none' })).toBe(1);
  });

  it('counts the evictions the loop made: offload ended for a port that still had offloaded connections', async () => {
    const pg: Service = {
      ...service('pg', '10.96.7.7'),
      annotations: { [USER_KEYS.acceleration]: 'enabled' },
    };
    const r = new Reconciler({
      kernel: new MemoryKernel({ links: ['eth0'] }),
      policy,
      minSyncIntervalMs: 10,
      resyncIntervalMs: 0,
      logger: silentLogger,
      readOffloaded: async () =>
        new Map([[flowKey('10.96.7.7', 6, 5432), { connections: 2, packets: 40, bytes: 4000 }]]),
    });
    reconcilers.push(r);
    r.update({ services: [pg], namespaces: [], devices: ['eth0'] });
    const registry = createMetricsRegistry('daemon');
    new DaemonMetrics(registry, r);
    await r.start();
    expect(await value(registry, 'slipstream_evictions_total')).toBe(0);
    r.setService({ ...pg, annotations: { [USER_KEYS.acceleration]: 'disabled' } });
    expect(await r.sync('service')).toMatchObject({ result: 'ok', evicted: { ports: 1, connections: 2 } });
    expect(await value(registry, 'slipstream_evictions_total')).toBe(1);
  });
});
