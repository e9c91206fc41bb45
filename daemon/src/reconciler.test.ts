import { SpanStatusCode, trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { memoryLogger, silentLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { HINT_KEYS, NAMESPACE_OPT_OUT_LABEL, USER_KEYS } from '@slipstream/shared/core/contract';
import { desiredRuleset } from '@slipstream/shared/core/desired-ruleset';
import { diff } from '@slipstream/shared/core/diff';
import { parsePolicy } from '@slipstream/shared/core/policy';
import type { Ruleset } from '@slipstream/shared/core/ruleset';
import type { Service } from '@slipstream/shared/core/service';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadScenario, type Scenario, scenarioInput } from '../../test/fixtures/services/load.ts';
import { kernelError } from './kernel.ts';
import { MemoryKernel } from './memory-kernel.ts';
import { Reconciler, type ReconcilerOptions } from './reconciler.ts';

const policy = loadDefaultPolicy();
const exporter = new InMemorySpanExporter();
const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });

beforeAll(() => {
  trace.setGlobalTracerProvider(provider);
});
afterAll(async () => {
  trace.disable();
  await provider.shutdown();
});
beforeEach(() => exporter.reset());

const view = (r: Ruleset | null | undefined) => (r ? { ...r, services: new Map(), owners: new Map() } : r);

let reconcilers: Reconciler[] = [];
afterEach(async () => {
  for (const r of reconcilers) await r.stop();
  reconcilers = [];
});

function make(kernel: MemoryKernel, s: Scenario, options: Partial<ReconcilerOptions> = {}): Reconciler {
  const r = new Reconciler({
    kernel,
    policy,
    minSyncIntervalMs: 20,
    resyncIntervalMs: 0,
    retryInitialMs: 20,
    logger: silentLogger,
    ...options,
  });
  r.update({ services: s.services, namespaces: s.namespaces.values(), devices: s.devices });
  reconcilers.push(r);
  return r;
}

function hinted(s: Service, trace: string): Service {
  return { ...s, annotations: { ...s.annotations, [HINT_KEYS.trace]: trace } };
}

const TRACE_A = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
const TRACE_B = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00';

describe('Reconciler with a MemoryKernel', () => {
  it('creates the table at start-up in one transaction', async () => {
    const kernel = new MemoryKernel();
    const s = loadScenario('dual-stack');
    const r = make(kernel, s);
    const result = await r.start();
    expect(result).toMatchObject({
      trigger: 'startup',
      result: 'ok',
      degraded: false,
      writes: 1,
      elementsAdded: 4,
      elementsRemoved: 0,
      chains: 2,
      readBack: true,
    });
    expect(view(kernel.table)).toEqual(view(desiredRuleset(scenarioInput(s))));
  });

  it('adopts an existing table with zero writes when it is already as desired', async () => {
    const s = loadScenario('thresholds-shared');
    const kernel = new MemoryKernel({ table: desiredRuleset(scenarioInput(s)) });
    const r = make(kernel, s);
    const result = await r.start();
    expect(result).toMatchObject({ result: 'noop', writes: 0, readBack: true });
    expect(kernel.writes).toBe(0);
    // A later sync with the same inputs writes nothing and reads nothing.
    const reads = kernel.reads;
    expect(await r.sync('service')).toMatchObject({ result: 'noop', writes: 0, readBack: false });
    expect(kernel.reads).toBe(reads);
  });

  it('repairs only what differs when adopting a table left by an older run', async () => {
    const s = loadScenario('thresholds-shared');
    const old = desiredRuleset({ ...scenarioInput(s), services: s.services.slice(0, 1) });
    const kernel = new MemoryKernel({ table: old });
    const result = await make(kernel, s).start();
    expect(result).toMatchObject({ result: 'ok', writes: 1, elementsAdded: 2, elementsRemoved: 0 });
  });

  it('writes nothing until every source has reported once', async () => {
    const kernel = new MemoryKernel();
    const r = new Reconciler({
      kernel,
      policy,
      logger: silentLogger,
      resyncIntervalMs: 0,
      minSyncIntervalMs: 10,
    });
    reconcilers.push(r);
    r.update({ services: [] });
    expect(await r.start()).toMatchObject({
      result: 'noop',
      waitingFor: ['namespaces', 'devices'],
      writes: 0,
    });
    r.update({ namespaces: [], devices: ['eth0'] });
    expect(await r.sync('namespace')).toMatchObject({ result: 'ok', writes: 1 });
  });

  it('takes source snapshots by reference and never mutates them', async () => {
    const s = loadScenario('thresholds-shared');
    const kernel = new MemoryKernel();
    const r = new Reconciler({
      kernel,
      policy,
      logger: silentLogger,
      resyncIntervalMs: 0,
      minSyncIntervalMs: 10,
    });
    reconcilers.push(r);
    const snapshot = { services: s.services, namespaces: s.namespaces, rejected: [] };
    r.update(snapshot);
    r.update({ devices: [] });
    await r.start();
    expect(kernel.table?.elements.size).toBe(3);
    r.deleteService('data', 'pg-a');
    r.setNamespace({ name: 'data', labels: { 'slipstream.dev/acceleration': 'disabled' } });
    expect(await r.sync('namespace')).toMatchObject({ result: 'ok', elementsRemoved: 3 });
    expect(snapshot.services).toHaveLength(3);
    expect(snapshot.namespaces.get('data')?.labels).toEqual({});
    // A new snapshot replaces the local edits.
    r.update(snapshot);
    expect(await r.sync('service')).toMatchObject({ result: 'ok', elementsAdded: 3 });
  });

  it('re-decides every Service when the policy is replaced', async () => {
    const s = loadScenario('thresholds-shared');
    const kernel = new MemoryKernel();
    const r = make(kernel, s);
    await r.start();
    r.setPolicy(parsePolicy('{name: strict, version: 1, default: {offload: false, reason: off}, rules: []}'));
    expect(await r.sync('service')).toMatchObject({ result: 'ok', elementsRemoved: 3, elements: 0 });
    expect(r.desired?.services.get('data/pg-a')?.decision.policy).toMatch(/^strict@1#/);
  });

  it('coalesces a burst of requests into few syncs', async () => {
    const s = loadScenario('thresholds-shared');
    const kernel = new MemoryKernel();
    const r = make(kernel, s, { minSyncIntervalMs: 200 });
    await r.start();
    const results: string[] = [];
    r.onSync((x) => results.push(`${x.trigger}:${x.result}`));
    const done = r.nextSync((x) => x.result === 'ok');
    for (const svc of s.services) {
      r.deleteService(svc.namespace, svc.name);
      r.request('service');
    }
    await done;
    expect(results).toEqual(['service:ok']);
    expect(kernel.writes).toBe(2);
    expect(kernel.table?.elements.size).toBe(0);
    expect(kernel.table?.thresholds).toEqual([]);
  });

  it('adds a new link to the flowtable, and removes a vanished one without a write', async () => {
    const s = loadScenario('sctp');
    const kernel = new MemoryKernel({ links: ['eth0'] });
    const r = make(kernel, s);
    await r.start();
    kernel.setLinks(['eth0', 'veth1']);
    r.update({ devices: ['eth0', 'veth1'] });
    expect(await r.sync('link')).toMatchObject({ result: 'ok', writes: 1, change: '+devices veth1' });
    expect(kernel.table?.flowtable?.devices).toEqual(['eth0', 'veth1']);
    // The link is deleted: the kernel unhooks it by itself; the reconciler notices, writes nothing.
    kernel.setLinks(['eth0']);
    r.update({ devices: ['eth0'] });
    expect(await r.sync('link')).toMatchObject({ result: 'noop', writes: 0 });
    // A link no longer wanted (excluded by a pattern) but still there is removed in place: the
    // flowtable stays.
    kernel.setLinks(['eth0', 'veth2']);
    r.update({ devices: ['eth0', 'veth2'] });
    await r.sync('link');
    r.update({ devices: ['eth0'] });
    expect(await r.sync('link')).toMatchObject({
      result: 'ok',
      writes: 1,
      change: '-devices veth2',
    });
    expect(kernel.table?.flowtable?.devices).toEqual(['eth0']);
    expect(kernel.table?.chains.get('threshold-20')?.rules).toEqual([
      { kind: 'threshold', threshold: 20, offload: true },
    ]);
  });

  it('hooks a link deleted and created again under its name: the names are the same, the kernel list is not', async () => {
    const s = loadScenario('sctp');
    const kernel = new MemoryKernel({ links: ['eth0', 'vb'] });
    const r = make(kernel, s);
    r.update({ devices: ['eth0', 'vb'] });
    await r.start();
    expect(kernel.table?.flowtable?.devices).toEqual(['eth0', 'vb']);
    // One `ip -batch` (del, add, up): the kernel drops the old link's hook; the new link is not hooked.
    kernel.setLinks(['eth0']);
    kernel.setLinks(['eth0', 'vb']);
    r.update({ devices: ['eth0', 'vb'] });
    const result = await r.sync('link');
    expect(result).toMatchObject({ result: 'ok', writes: 1, change: '+devices vb' });
    expect(kernel.table?.flowtable?.devices).toEqual(['eth0', 'vb']);
    // Without a link event, the list is not read: a Service sync stays free of kernel reads.
    expect(await r.sync('service')).toMatchObject({ result: 'noop', writes: 0, readBack: false });
  });

  it('survives a device vanishing between listing and commit: re-reads links and retries', async () => {
    const s = loadScenario('sctp');
    const kernel = new MemoryKernel({ links: ['eth0'] });
    let listings = 0;
    const r = make(kernel, s, {
      refreshDevices: async () => {
        listings++;
        return ['eth0'];
      },
    });
    await r.start();
    r.update({ devices: ['eth0', 'veth-gone'] }); // listed, then deleted before the commit
    const result = await r.sync('link');
    // The retry finds nothing to do: the vanished device is gone from the desired state too.
    expect(result).toMatchObject({ result: 'noop', retried: true, writes: 0 });
    expect(result.error).toBeUndefined();
    expect(listings).toBe(1);
    expect(kernel.table?.flowtable?.devices).toEqual(['eth0']);
  });

  it('records a transaction the kernel refuses as a whole, keeps the last good state, and succeeds on the retry', async () => {
    const s = loadScenario('thresholds-shared');
    const kernel = new MemoryKernel();
    const r = make(kernel, s);
    await r.start();
    const good = kernel.table;
    // The first try, the retry with fresh facts, and the structure-only try of the isolation.
    kernel.failNext(kernelError('Error: Could not process rule: Invalid argument', 'invalid'), 3);
    r.deleteService('data', 'pg-a');
    const retried = r.nextSync((x) => x.result === 'ok');
    const failed = await r.sync('service');
    expect(failed).toMatchObject({
      result: 'error',
      errorClass: 'invalid',
      error: 'Error: Could not process rule: Invalid argument',
      retried: true,
      writes: 0,
      quarantined: 0,
    });
    expect(r.lastError).toMatchObject({ errorClass: 'invalid' });
    expect(view(kernel.table)).toEqual(view(good));
    // The retry (after the backoff) reads the table back and applies the change.
    expect(await retried).toMatchObject({ trigger: 'retry', result: 'ok', readBack: true, writes: 1 });
    expect(kernel.table?.elements.has('ip 10.96.2.1 6 5432')).toBe(false);
  });

  it("repairs someone else's change as soon as the kernel reports it: deleted element, altered verdict, deleted table", async () => {
    const s = loadScenario('dual-stack');
    const kernel = new MemoryKernel();
    const r = make(kernel, s);
    await r.start();
    const want = view(kernel.table);

    const repaired = r.nextSync((x) => x.trigger === 'drift');
    kernel.tamper((t) => {
      t!.elements.delete('ip 10.96.0.10 6 5432');
      const e = t!.elements.get('ip6 fd00:10:96::a 17 443')!;
      e.threshold = null;
      return t;
    });
    expect(await repaired).toMatchObject({
      result: 'ok',
      readBack: true,
      drift: true,
      elementsAdded: 2,
      elementsRemoved: 1,
    });
    expect(view(kernel.table)).toEqual(want);

    const rebuilt = r.nextSync((x) => x.trigger === 'drift');
    kernel.tamper(() => null);
    expect(await rebuilt).toMatchObject({
      result: 'ok',
      drift: true,
      writes: 1,
      driftDetail: 'the table was deleted',
    });
    expect(view(kernel.table)).toEqual(want);
  });

  it('repairs a change it was not told of at the resync (events lost)', async () => {
    const s = loadScenario('dual-stack');
    const kernel = new MemoryKernel();
    const r = make(kernel, s);
    await r.start();
    const want = view(kernel.table);
    kernel.tamper(
      (t) => {
        t!.elements.delete('ip 10.96.0.10 6 5432');
        return t;
      },
      { silent: true },
    );
    expect(await r.sync('service')).toMatchObject({ result: 'noop', readBack: false }); // belief: no change
    expect(await r.sync('resync')).toMatchObject({
      result: 'ok',
      readBack: true,
      drift: true,
      elementsAdded: 1,
    });
    expect(view(kernel.table)).toEqual(want);
  });

  it('reads the table back when the kernel says events were lost', async () => {
    const s = loadScenario('dual-stack');
    const kernel = new MemoryKernel();
    const r = make(kernel, s);
    await r.start();
    kernel.tamper(
      (t) => {
        t!.elements.delete('ip 10.96.0.10 6 5432');
        return t;
      },
      { silent: true },
    );
    const repaired = r.nextSync((x) => x.trigger === 'drift');
    kernel.overrun();
    expect(await repaired).toMatchObject({ result: 'ok', readBack: true, drift: true, elementsAdded: 1 });
  });

  it('repairs drift behind its back on the next write: the refused delete triggers a read-back', async () => {
    const s = loadScenario('thresholds-shared');
    const kernel = new MemoryKernel();
    const r = make(kernel, s);
    await r.start();
    kernel.tamper(
      (t) => {
        t!.elements.delete('ip 10.96.2.1 6 5432');
        return t;
      },
      { silent: true },
    );
    r.deleteService('data', 'pg-a');
    expect(await r.sync('service')).toMatchObject({ result: 'noop', retried: true, readBack: true });
  });

  it('reports degraded mode and programs counting chains only', async () => {
    const s = loadScenario('dual-stack');
    const kernel = new MemoryKernel({ flowtable: false });
    const result = await make(kernel, s).start();
    expect(result).toMatchObject({ result: 'ok', degraded: true });
    expect(result.degradedReason).toContain('not supported');
    expect(kernel.table?.flowtable).toBeNull();
    expect(kernel.dump()).toContain('ct packets > 20 counter\n');
  });

  it('runs the periodic resync', async () => {
    const s = loadScenario('sctp');
    const kernel = new MemoryKernel();
    const r = make(kernel, s, { resyncIntervalMs: 30 });
    await r.start();
    kernel.tamper(() => null, { silent: true });
    const repaired = await r.nextSync((x) => x.trigger === 'resync' && x.result === 'ok');
    expect(repaired.drift).toBe(true);
    expect(kernel.table?.elements.size).toBe(1);
  });
});

describe('tracing', () => {
  it('emits sync with compute, diff and commit children, and links to the changed Services', async () => {
    const s = loadScenario('thresholds-shared');
    s.services = s.services.map((svc, i) =>
      i === 0 ? hinted(svc, TRACE_A) : i === 1 ? hinted(svc, TRACE_B) : hinted(svc, 'garbage'),
    );
    const kernel = new MemoryKernel();
    const r = make(kernel, s);
    await r.start();
    const spans = exporter.getFinishedSpans();
    const sync = spans.find((x) => x.name === 'sync')!;
    expect(sync.attributes).toMatchObject({
      'slipstream.sync.trigger': 'startup',
      'slipstream.services': 3,
      'slipstream.elements.added': 3,
      'slipstream.elements.removed': 0,
      'slipstream.chains': 3,
      'slipstream.degraded': false,
      'slipstream.sync.result': 'ok',
      'slipstream.kernel.writes': 1,
    });
    expect(sync.parentSpanContext).toBeUndefined();
    const children = spans
      .filter((x) => x.parentSpanContext?.spanId === sync.spanContext().spanId)
      .map((x) => x.name);
    expect(children).toEqual(['compute', 'diff', 'commit']);
    expect(sync.links.map((l) => l.context.traceId).sort()).toEqual(
      ['0af7651916cd43dd8448eb211c80319c', '4bf92f3577b34da6a3ce929d0e0e4736'].sort(),
    );

    // Only the Services whose elements change are linked; a no-op has no commit span.
    exporter.reset();
    r.deleteService('data', 'pg-b');
    await r.sync('service');
    const second = exporter.getFinishedSpans().find((x) => x.name === 'sync')!;
    expect(second.links.map((l) => l.context.spanId)).toEqual(['00f067aa0ba902b7']);
    // …and each changed Service is a searchable event on the sync span.
    expect(second.events.map((e) => [e.name, e.attributes?.['k8s.service.name']])).toEqual([
      ['service.programmed', 'pg-b'],
    ]);
    expect(second.events[0]!.attributes?.['slipstream.decision.offload']).toBe('removed');
    exporter.reset();
    await r.sync('service');
    const names = exporter.getFinishedSpans().map((x) => x.name);
    expect(names).toEqual(['compute', 'diff', 'sync']);
    expect(
      exporter.getFinishedSpans().find((x) => x.name === 'sync')?.attributes['slipstream.sync.result'],
    ).toBe('noop');
  });

  it('records errors on the spans', async () => {
    const kernel = new MemoryKernel();
    const r = make(kernel, loadScenario('sctp'), { retryInitialMs: 60_000 });
    kernel.failNext(kernelError('Error: Could not process rule: Device or resource busy', 'busy'), 3);
    expect(await r.start()).toMatchObject({ result: 'error', errorClass: 'busy' });
    const sync = exporter.getFinishedSpans().find((x) => x.name === 'sync')!;
    expect(sync.status.code).toBe(SpanStatusCode.ERROR);
    expect(sync.attributes['slipstream.sync.result']).toBe('error');
    expect(sync.events.some((e) => e.name === 'exception')).toBe(true);
    const commits = exporter.getFinishedSpans().filter((x) => x.name === 'commit');
    expect(commits).toHaveLength(3);
    expect(commits.every((c) => c.status.code === SpanStatusCode.ERROR)).toBe(true);
  });
});

describe('diff sanity for the reconciler', () => {
  it('a ruleset diffed against itself is empty', () => {
    const d = desiredRuleset(scenarioInput(loadScenario('dual-stack')));
    expect(diff(d, d).ops).toEqual([]);
  });
});

describe('Reconciler incremental syncs', () => {
  // A small pool of names, addresses and ports, so that random edits collide: two Services on one
  // ClusterIP and port (the first by name owns it), one namespace/name twice, invalid addresses,
  // thresholds that come and go (chains appear with their first element and go with their last).
  const NAMES = ['a', 'b', 'c', 'd', 'e'];
  const NAMESPACES = ['data', 'web'];
  const IPS = ['10.96.0.1', '10.96.0.2', '10.96.0.3', '10.96.0.4', 'fd00::1', 'fd00:0::2', 'bogus'];
  const PORTS = [
    { port: 5432, protocol: 'TCP' as const },
    { port: 8080, protocol: 'TCP' as const, name: 'http' },
    { port: 53, protocol: 'UDP' as const, name: 'dns' },
  ];
  const THRESHOLDS = [undefined, '7', '20', '300'];
  const arbService = fc.record({
    namespace: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom(...NAMES),
    uid: fc.constantFrom('u1', 'u2'),
    ips: fc.uniqueArray(fc.constantFrom(...IPS), { maxLength: 2 }),
    ports: fc.uniqueArray(fc.constantFrom(...PORTS), { minLength: 1, maxLength: 3 }),
    threshold: fc.constantFrom(...THRESHOLDS),
    trace: fc.constantFrom(undefined, TRACE_A, TRACE_B),
  });
  interface Gen {
    namespace: string;
    name: string;
    uid: string;
    ips: string[];
    ports: { port: number; protocol: 'TCP' | 'UDP'; name?: string }[];
    threshold: string | undefined;
    trace: string | undefined;
  }
  const toService = (g: Gen): Service =>
    ({
      namespace: g.namespace,
      name: g.name,
      uid: g.uid,
      annotations: {
        ...(g.threshold !== undefined ? { [USER_KEYS.packetThreshold]: g.threshold } : {}),
        ...(g.trace !== undefined ? { [HINT_KEYS.trace]: g.trace } : {}),
      },
      type: 'ClusterIP',
      clusterIPs: g.ips,
      ports: g.ports.map((p) => ({ ...p })),
    }) satisfies Service;
  const arbStep = fc.oneof(
    { weight: 6, arbitrary: arbService.map((s) => ({ kind: 'set' as const, service: toService(s) })) },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('delete' as const),
        ns: fc.constantFrom(...NAMESPACES),
        name: fc.constantFrom(...NAMES),
      }),
    },
    // A full replace (as sources do), sometimes holding one namespace/name twice (stale input).
    {
      weight: 1,
      arbitrary: fc
        .array(arbService, { maxLength: 6 })
        .map((l) => ({ kind: 'replace' as const, services: l.map(toService) })),
    },
    { weight: 1, arbitrary: fc.constant({ kind: 'resync' as const }) },
  );

  it('keeps the desired ruleset and the kernel equal to a full recompute after every edit', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(arbService, { maxLength: 6 }),
        fc.array(arbStep, { maxLength: 25 }),
        async (initial, steps) => {
          const kernel = new MemoryKernel({ flowtable: false });
          const r = new Reconciler({
            kernel,
            policy,
            minSyncIntervalMs: 0,
            resyncIntervalMs: 0,
            logger: silentLogger,
          });
          const namespaces = new Map(NAMESPACES.map((name) => [name, { name, labels: {} }]));
          const lastWins = (list: Service[]) => [
            ...new Map(list.map((x) => [`${x.namespace}/${x.name}`, x])).values(),
          ];
          let services = lastWins(initial.map(toService));
          r.update({ services: initial.map(toService), namespaces, devices: [] });
          try {
            expect((await r.start()).result).not.toBe('error');
            for (const step of steps) {
              // The model: what the reconciler's own map holds (one Service per namespace/name).
              const byKey = () => new Map(services.map((s) => [`${s.namespace}/${s.name}`, s]));
              if (step.kind === 'set') {
                r.setService(step.service);
                const m = byKey();
                m.set(`${step.service.namespace}/${step.service.name}`, step.service);
                services = [...m.values()];
              } else if (step.kind === 'delete') {
                r.deleteService(step.ns, step.name);
                const m = byKey();
                m.delete(`${step.ns}/${step.name}`);
                services = [...m.values()];
              } else if (step.kind === 'replace') {
                // One Service per namespace/name: the last of a list wins, as in the sources.
                services = lastWins(step.services);
                r.update({ services: step.services });
              }
              const result = await r.sync(step.kind === 'resync' ? 'resync' : 'service');
              expect(result.result).not.toBe('error');
              expect(result.drift).toBe(false);
              const full = desiredRuleset({
                services,
                namespaces,
                devices: [],
                capabilities: { flowtable: false },
                policy,
              });
              expect(r.desired).toEqual(full);
              expect(view(kernel.table)).toEqual(view(full));
            }
          } finally {
            await r.stop();
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('patches only the changed Service: the Change equals a full diff', async () => {
    const kernel = new MemoryKernel({ flowtable: false });
    const r = new Reconciler({
      kernel,
      policy,
      minSyncIntervalMs: 0,
      resyncIntervalMs: 0,
      logger: silentLogger,
    });
    reconcilers.push(r);
    const mk = (i: number, threshold?: string): Service => ({
      namespace: 'data',
      name: `s${i}`,
      annotations: threshold ? { [USER_KEYS.packetThreshold]: threshold } : {},
      type: 'ClusterIP',
      clusterIPs: [`10.96.1.${i}`],
      ports: [{ port: 5432, protocol: 'TCP' }],
    });
    const list = [mk(1), mk(2), mk(3)];
    const namespaces = new Map([['data', { name: 'data', labels: {} }]]);
    r.update({ services: list, namespaces, devices: [] });
    await r.start();
    const incremental = () =>
      exporter
        .getFinishedSpans()
        .filter((x) => x.name === 'compute')
        .at(-1)?.attributes['slipstream.compute.incremental'];
    expect(incremental()).toBe(false);
    const before = structuredClone(r.desired!);
    // As daemon.ts does: the whole snapshot, with the same Namespaces Map and devices.
    r.update({ services: [list[0]!, mk(2, '77'), list[2]!, mk(4)], namespaces, devices: [] });
    const result = await r.sync('service');
    expect(incremental()).toBe(true);
    expect(result).toMatchObject({
      result: 'ok',
      readBack: false,
      elementsAdded: 2,
      elementsRemoved: 1,
      writes: 1,
    });
    const change = kernel.applied.at(-1)!;
    expect(change).toEqual(diff(before, r.desired!));
    expect(change.summary.chainsAdded).toEqual(['threshold-77']);
    // The last Service on threshold 77 goes: so does its chain.
    r.update({ services: list });
    await r.sync('service');
    expect(kernel.applied.at(-1)!.summary.chainsRemoved).toEqual(['threshold-77']);
    expect(incremental()).toBe(true);
    // A Namespace change (here: opted out) recomputes in full.
    const optedOut = new Map([['data', { name: 'data', labels: { [NAMESPACE_OPT_OUT_LABEL]: 'disabled' } }]]);
    r.update({ namespaces: optedOut });
    expect(await r.sync('namespace')).toMatchObject({ result: 'ok', elements: 0, elementsRemoved: 3 });
    expect(incremental()).toBe(false);
    r.update({ namespaces });
    await r.sync('namespace');
    expect(view(kernel.table)).toEqual(
      view(
        desiredRuleset({
          services: list,
          namespaces: new Map([['data', { name: 'data', labels: {} }]]),
          devices: [],
          capabilities: { flowtable: false },
          policy,
        }),
      ),
    );
  });
});

describe('isolation: one bad Service never holds back the others', () => {
  const three = () => {
    const mk = (name: string, ip: string): Service => ({
      namespace: 'data',
      name,
      annotations: {},
      type: 'ClusterIP',
      clusterIPs: [ip],
      ports: [{ port: 5432, protocol: 'TCP' }],
    });
    return [mk('a', '10.96.9.1'), mk('b', '10.96.9.2'), mk('c', '10.96.9.3')];
  };
  const setup = (options: Partial<ReconcilerOptions> = {}) => {
    const kernel = new MemoryKernel();
    const logger = memoryLogger();
    const r = new Reconciler({
      kernel,
      policy,
      logger,
      minSyncIntervalMs: 10,
      resyncIntervalMs: 0,
      quarantineBackoff: { initialMs: 60_000, maxMs: 60_000, jitter: false },
      ...options,
    });
    reconcilers.push(r);
    const services = three();
    r.update({ services, namespaces: [{ name: 'data', labels: {} }], devices: [] });
    return { kernel, logger, r, services };
  };
  const quarantineLines = (logger: ReturnType<typeof memoryLogger>) =>
    logger.lines.filter((l) => l.msg.startsWith('Service quarantined'));

  it('quarantines the Service whose elements the kernel refuses and commits the others, naming it once', async () => {
    const { kernel, logger, r } = setup();
    kernel.refuseElements((e) => e.address === '10.96.9.2');
    const first = await r.start();
    expect(first).toMatchObject({ result: 'ok', quarantined: 1 });
    expect([...kernel.table!.elements.keys()].sort()).toEqual(['ip 10.96.9.1 6 5432', 'ip 10.96.9.3 6 5432']);
    expect(r.quarantined).toEqual([
      expect.objectContaining({
        key: 'data/b',
        stage: 'kernel',
        errorClass: 'invalid',
        reason: expect.stringMatching(/10\.96\.9\.2 5432\/TCP.*Invalid argument/),
      }),
    ]);
    // More syncs (a full recompute too) say nothing new.
    await r.sync('service');
    await r.sync('resync');
    expect(quarantineLines(logger)).toHaveLength(1);
    expect(quarantineLines(logger)[0]!.fields).toMatchObject({ service: 'data/b', stage: 'kernel' });
    expect(r.readiness().ready).toBe(true);
  });

  it('a new valid Service reaches the kernel while another is quarantined', async () => {
    const { kernel, r, services } = setup();
    kernel.refuseElements((e) => e.address === '10.96.9.2');
    await r.start();
    r.setService({ ...services[0]!, name: 'd', clusterIPs: ['10.96.9.4'] });
    expect(await r.sync('service')).toMatchObject({
      result: 'ok',
      elementsAdded: 1,
      writes: 1,
      quarantined: 1,
    });
    expect(kernel.table!.elements.has('ip 10.96.9.4 6 5432')).toBe(true);
  });

  it('releases a quarantined Service when it changes, and when the kernel changes', async () => {
    const { kernel, logger, r, services } = setup();
    kernel.refuseElements((e) => e.address === '10.96.9.2' || e.address === '10.96.9.3');
    await r.start();
    expect(r.quarantined.map((q) => q.key)).toEqual(['data/b', 'data/c']);
    // b changes (a new object from the source): tried again at once.
    kernel.refuseElements((e) => e.address === '10.96.9.3');
    r.setService({ ...services[1]!, annotations: { note: 'new' } });
    expect(await r.sync('service')).toMatchObject({ result: 'ok', released: ['data/b'], quarantined: 1 });
    expect(kernel.table!.elements.has('ip 10.96.9.2 6 5432')).toBe(true);
    // Someone else changes the table: everything is tried again.
    kernel.refuseElements(null);
    const repaired = r.nextSync((x) => x.trigger === 'drift');
    kernel.tamper((t) => {
      t!.elements.delete('ip 10.96.9.1 6 5432');
      return t;
    });
    expect(await repaired).toMatchObject({ result: 'ok', quarantined: 0 });
    expect(kernel.table!.elements.has('ip 10.96.9.3 6 5432')).toBe(true);
    expect(logger.lines.some((l) => l.msg.startsWith('quarantined Services released'))).toBe(true);
  });

  it('retries a quarantined Service after its backoff, silently while it fails the same way', async () => {
    const { kernel, logger, r } = setup({ quarantineBackoff: { initialMs: 50, maxMs: 50, jitter: false } });
    kernel.refuseElements((e) => e.address === '10.96.9.2');
    await r.start();
    // The retry writes nothing (the kernel refuses b again) and says nothing new.
    const retried = r.nextSync((x) => x.triggers.includes('retry') && x.retried);
    expect(await retried).toMatchObject({ writes: 0, quarantined: 1 });
    expect(quarantineLines(logger), JSON.stringify(quarantineLines(logger))).toHaveLength(1);
    kernel.refuseElements(null);
    const released = await r.nextSync((x) => (x.released ?? []).includes('data/b'));
    expect(released.quarantined).toBe(0);
    expect(kernel.table!.elements.has('ip 10.96.9.2 6 5432')).toBe(true);
  });

  it('a Service whose rules cannot be computed is quarantined; the others are programmed', async () => {
    const { kernel, r, services } = setup();
    const broken = { ...services[1]! } as Service;
    Object.defineProperty(broken, 'ports', {
      get() {
        throw new Error('ports unreadable');
      },
    });
    r.update({ services: [services[0]!, broken, services[2]!] });
    expect(await r.start()).toMatchObject({ result: 'ok', quarantined: 1 });
    expect(kernel.table!.elements.size).toBe(2);
    expect(r.quarantined[0]).toMatchObject({
      key: 'data/b',
      stage: 'compute',
      reason: expect.stringContaining('ports unreadable'),
    });
  });

  it('names invalid input once per change of the Service: ClusterIPs, families, annotations', async () => {
    const { logger, r, services } = setup();
    const bad: Service = {
      ...services[0]!,
      name: 'odd',
      clusterIPs: ['999.1.1.1', 'fe80::1%eth0', '::ffff:10.1.2.3', 'fd00::9'],
      ipFamilies: ['IPv4'],
      annotations: { 'slipstream.dev/packet-threshold': 'soon' },
    };
    r.setService(bad);
    await r.start();
    await r.sync('resync');
    await r.sync('service');
    const named = logger.lines.filter((l) => l.msg === 'Service input ignored in part');
    expect(named).toHaveLength(1);
    const problems = String(named[0]!.fields?.problems);
    expect(named[0]!.fields?.service).toBe('data/odd');
    expect(problems).toMatch(/999\.1\.1\.1.*not an IPv4 or IPv6 address/);
    expect(problems).toMatch(/zone index/);
    expect(problems).toMatch(/IPv4-mapped/);
    expect(problems).toMatch(/fd00::9.*spec\.ipFamilies is \[IPv4\]/);
    expect(problems).toMatch(/slipstream\.dev\/packet-threshold/);
    // A change of the Service names it again; its deletion forgets it.
    r.setService({ ...bad, clusterIPs: ['999.1.1.2'] });
    await r.sync('service');
    expect(logger.lines.filter((l) => l.msg === 'Service input ignored in part')).toHaveLength(2);
  });
});

describe('Reconciler: what it reports for metrics', () => {
  it('reports, per Service change that reached the kernel, the time since it was first seen; the initial state is none', async () => {
    const s = loadScenario('thresholds-shared');
    const r = make(new MemoryKernel(), s);
    const reported: number[][] = [];
    r.onProgrammed((latencies) => reported.push([...latencies]));
    await r.start();
    expect(reported).toEqual([]);
    // A whole new list (files-source style): the Service that went away is one change.
    const seen = Date.now();
    r.update({ services: s.services.slice(1) });
    await new Promise((resolve) => setTimeout(resolve, 30));
    r.update({ services: s.services.slice(1) });
    const before = Date.now();
    await r.sync('service');
    expect(reported).toHaveLength(1);
    expect(reported[0]).toHaveLength(1);
    // Stamped when the first list arrived, not when the sync took it.
    expect(reported[0]![0]!).toBeGreaterThanOrEqual(before - seen - 5);
    expect(r.lastQueuedAt!.getTime()).toBeGreaterThanOrEqual(before);
  });

  it("passes on the kernel watch's events", async () => {
    const s = loadScenario('dual-stack');
    const kernel = new MemoryKernel();
    const r = make(kernel, s);
    const events: string[] = [];
    r.onKernelEvent((e) => events.push(e));
    await r.start();
    kernel.overrun();
    kernel.tamper((t) => t);
    expect(events).toEqual(['overrun', 'foreign-change']);
  });
});
