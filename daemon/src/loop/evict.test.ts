// Eviction: the pure choice (which removed ports still have offloaded connections) and the loop
// doing it (one flowtable re-creation after the commit that removed them, recorded on the sync)
// against the in-memory kernel twin, with conntrack's view given as data. The kernel's side (flows
// really leaving the flowtable, without reset, without changing backend) is proven in the VM:
// test/kernel/daemon-eviction.test.ts.

import { trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { silentLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { NAMESPACE_OPT_OUT_LABEL, USER_KEYS } from '@slipstream/shared/core/contract';
import { desiredRuleset } from '@slipstream/shared/core/desired-ruleset';
import { elementKey } from '@slipstream/shared/core/ruleset';
import type { Namespace, Service } from '@slipstream/shared/core/service';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput } from '../../../test/fixtures/services/load.ts';
import { flowKey, type OffloadedFlows } from '../conntrack.ts';
import { kernelError } from '../kernel.ts';
import { MemoryKernel } from '../memory-kernel.ts';
import { Reconciler } from '../reconciler.ts';
import { evictionChange, evictionDue, RemovedPorts } from './evict.ts';

const policy = loadDefaultPolicy();
const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
beforeAll(() => trace.setGlobalTracerProvider(provider));
afterAll(async () => {
  trace.disable();
  await provider.shutdown();
});
beforeEach(() => exporter.reset());

const pgA = { family: 'ip' as const, address: '10.96.2.1', protocol: 6, port: 5432, threshold: 20 };
const pgB = { family: 'ip' as const, address: '10.96.2.2', protocol: 6, port: 5432, threshold: 20 };
const flows = (...entries: [typeof pgA, number][]): OffloadedFlows =>
  new Map(
    entries.map(([e, n]) => [
      flowKey(e.address, e.protocol, e.port),
      { connections: n, packets: 100 * n, bytes: 1000 * n },
    ]),
  );

describe('evictionDue', () => {
  it('names the removed ports that still have offloaded connections, and how many', () => {
    expect(evictionDue([pgA, pgB], flows([pgA, 2], [pgB, 0]))).toEqual({
      ports: [elementKey(pgA)],
      connections: 2,
    });
    expect(evictionDue([pgA, pgB], flows())).toBeNull();
    expect(evictionDue([], flows([pgA, 1]))).toBeNull();
  });

  it('conntrack unreadable: every removed port is evicted (offload must end), connections unknown', () => {
    expect(evictionDue([pgB, pgA], null)).toEqual({
      ports: [elementKey(pgA), elementKey(pgB)],
      connections: null,
    });
  });
});

describe('RemovedPorts', () => {
  it('keeps the elements deleted by committed Changes that the kernel no longer holds', () => {
    const belief = desiredRuleset(scenarioInput(loadScenario('thresholds-shared')));
    const removed = new RemovedPorts();
    const gone = { ...pgB, address: '10.96.9.9' };
    // pgA was deleted to change its threshold (the belief holds it again): not removed.
    removed.committed({
      ops: [{ op: 'delete-elements', family: 'ip', elements: [pgA, gone] }],
      summary: evictionChange(belief).summary,
    });
    expect(removed.pending(belief)).toEqual([gone]);
    expect(removed.size).toBe(1);
  });
});

describe('the loop evicts when offload ends for a port with offloaded connections', () => {
  let reconcilers: Reconciler[] = [];
  afterEach(async () => {
    for (const r of reconcilers) await r.stop();
    reconcilers = [];
  });

  async function setup(offloaded: () => OffloadedFlows | null) {
    const s = loadScenario('thresholds-shared');
    const kernel = new MemoryKernel({ links: ['eth0'] });
    let reads = 0;
    const r = new Reconciler({
      kernel,
      policy,
      minSyncIntervalMs: 10,
      resyncIntervalMs: 0,
      retryInitialMs: 10,
      logger: silentLogger,
      readOffloaded: async () => {
        reads++;
        return offloaded();
      },
    });
    reconcilers.push(r);
    const namespaces = new Map<string, Namespace>(s.namespaces);
    r.update({ services: s.services, namespaces, devices: ['eth0'] });
    await r.start();
    const byName = (name: string) => s.services.find((x) => x.name === name)!;
    return { s, kernel, r, byName, reads: () => reads };
  }

  const disabled = (svc: Service): Service => ({
    ...svc,
    annotations: { ...svc.annotations, [USER_KEYS.acceleration]: 'disabled' },
  });

  it('acceleration: disabled: the element goes, then the flowtable is re-created in a second transaction', async () => {
    const { kernel, r, byName } = await setup(() => flows([pgA, 3]));
    const before = kernel.writes;
    r.setService(disabled(byName('pg-a')));
    const result = await r.sync('service');
    expect(result).toMatchObject({
      result: 'ok',
      elementsRemoved: 1,
      writes: 2,
      evicted: { ports: 1, connections: 3, examples: [elementKey(pgA)] },
    });
    expect(result.change).toMatch(/-1 elements; evict: re-create flowtable$/);
    expect(kernel.writes - before).toBe(2);
    const [removal, eviction] = kernel.applied.slice(-2);
    expect(removal!.summary.flowtableRecreated).toBeUndefined();
    expect(eviction!.summary).toMatchObject({
      flowtableRecreated: true,
      elementsAdded: 0,
      elementsRemoved: 0,
    });
    // The flowtable is back as it was, the other Services' elements untouched.
    expect(kernel.table?.flowtable).toEqual({ name: 'ft', devices: ['eth0'], counter: true });
    expect(kernel.table?.elements.has(elementKey(pgB))).toBe(true);
    expect(r.evictions).toMatchObject({ count: 1, ports: 1, connections: 3 });

    // On the sync span: an `evict` child, and the counts.
    const spans = exporter.getFinishedSpans();
    const sync = spans.filter((x) => x.name === 'sync').at(-1)!;
    expect(sync.attributes).toMatchObject({
      'slipstream.evicted.ports': 1,
      'slipstream.evicted.connections': 3,
    });
    const evict = spans.find((x) => x.name === 'evict');
    expect(evict?.parentSpanContext?.spanId).toBe(sync.spanContext().spanId);
  });

  it('no offloaded connection on the removed port: no eviction, one write', async () => {
    const { kernel, r, byName, reads } = await setup(() => flows([pgB, 5]));
    const before = kernel.writes;
    r.deleteService('data', 'pg-a');
    const result = await r.sync('service');
    expect(result).toMatchObject({ result: 'ok', writes: 1 });
    expect(result.evicted).toBeUndefined();
    expect(kernel.writes - before).toBe(1);
    expect(reads()).toBe(1);
    // A sync that removes nothing never reads conntrack.
    r.setService({ ...byName('web'), annotations: { 'example.com/x': 'y' } });
    await r.sync('service');
    expect(reads()).toBe(1);
  });

  it('a threshold change deletes and re-adds the element: still offloaded, nothing evicted', async () => {
    const { r, byName, reads } = await setup(() => flows([pgA, 3]));
    r.setService({ ...byName('pg-a'), annotations: { [USER_KEYS.packetThreshold]: '50' } });
    const result = await r.sync('service');
    expect(result).toMatchObject({ result: 'ok', writes: 1, elementsRemoved: 1, elementsAdded: 1 });
    expect(result.evicted).toBeUndefined();
    expect(reads()).toBe(0);
  });

  it('conntrack unreadable: evicts anyway', async () => {
    const { r } = await setup(() => null);
    r.deleteService('data', 'pg-b');
    expect(await r.sync('service')).toMatchObject({
      writes: 2,
      evicted: { ports: 1, connections: null },
    });
  });

  it('a namespace opted out: every port of it, in one step', async () => {
    const { kernel, r } = await setup(() => flows([pgA, 1], [pgB, 2]));
    const before = kernel.writes;
    r.setNamespace({ name: 'data', labels: { [NAMESPACE_OPT_OUT_LABEL]: 'disabled' } });
    const result = await r.sync('namespace');
    expect(result).toMatchObject({ elementsRemoved: 3, writes: 2, evicted: { ports: 2, connections: 3 } });
    expect(kernel.writes - before).toBe(2);
    expect(kernel.table?.elements.size).toBe(0);
  });

  it('a refused eviction fails the sync; the retry evicts', async () => {
    const { kernel, r, byName } = await setup(() => flows([pgA, 1]));
    r.setService(disabled(byName('pg-a')));
    // The element removal goes through; the re-creation of the flowtable is refused once.
    const original = kernel.apply.bind(kernel);
    let refused = false;
    kernel.apply = async (change) => {
      if (change.summary.flowtableRecreated && !refused) {
        refused = true;
        throw kernelError('Error: Could not process rule: Device or resource busy', 'busy');
      }
      return original(change);
    };
    const retried = r.nextSync((x) => x.trigger === 'retry');
    expect(await r.sync('service')).toMatchObject({ result: 'error', errorClass: 'busy' });
    expect(kernel.table?.elements.has(elementKey(pgA))).toBe(false);
    expect(await retried).toMatchObject({ result: 'ok', evicted: { ports: 1, connections: 1 } });
  });
});
