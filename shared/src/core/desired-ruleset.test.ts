import { describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput, scenarioNames } from '../../../test/fixtures/services/load.ts';
import { loadDefaultPolicy } from '../adapters/policy-files.ts';
import { HINT_KEYS, USER_KEYS } from './contract.ts';
import { effectiveDecision } from './decide.ts';
import { contribution, desiredRuleset, newContributionCache } from './desired-ruleset.ts';
import { elementKey, type Ruleset } from './ruleset.ts';
import { readService, type Service } from './service.ts';

function elementLines(r: Ruleset): string[] {
  return [...r.elements.values()].map((e) => `${elementKey(e)} -> ${e.threshold}`).sort();
}

describe('desiredRuleset on the Service fixtures', () => {
  it.each(scenarioNames())('%s', (name) => {
    const s = loadScenario(name);
    const r = desiredRuleset(scenarioInput(s));
    expect(elementLines(r)).toEqual([...s.expect.elements].sort());
    expect(r.thresholds).toEqual(s.expect.thresholds);
    expect([...r.chains.keys()].sort()).toEqual(
      ['forward', ...s.expect.thresholds.map((t) => `threshold-${t}`)].sort(),
    );
    for (const [key, source] of Object.entries(s.expect.decisions ?? {})) {
      expect(r.services.get(key)?.decision.source, key).toBe(source);
    }
    for (const [key, count] of Object.entries(s.expect.skipped ?? {})) {
      expect(r.services.get(key)?.skipped, key).toHaveLength(count);
    }
    // Bookkeeping: every element has exactly one owner, listed in that Service's entry.
    for (const key of r.elements.keys()) {
      const owner = r.owners.get(key);
      expect(owner).toBeDefined();
      expect(r.services.get(owner!)?.elements).toContain(key);
    }
    expect(r.foreign).toEqual([]);
  });

  it('builds the flowtable from the devices, and threshold chains that offload', () => {
    const r = desiredRuleset(scenarioInput(loadScenario('dual-stack')));
    expect(r.flowtable).toEqual({ name: 'ft', devices: ['eth0', 'eth1'], counter: true });
    expect(r.maps).toEqual(['ip', 'ip6', 'np']);
    expect(r.chains.get('threshold-20')).toEqual({
      name: 'threshold-20',
      base: null,
      rules: [{ kind: 'threshold', threshold: 20, offload: true }],
    });
    expect(r.chains.get('forward')?.base).toEqual({
      type: 'filter',
      hook: 'forward',
      priority: 10,
      policy: 'accept',
    });
    expect(r.chains.get('forward')?.rules).toEqual([
      { kind: 'dispatch', family: 'ip', protocol: 'tcp' },
      { kind: 'dispatch', family: 'ip', protocol: 'udp' },
      { kind: 'dispatch', family: 'ip6', protocol: 'tcp' },
      { kind: 'dispatch', family: 'ip6', protocol: 'udp' },
      { kind: 'nodeport', family: 'ip', protocol: 'tcp' },
      { kind: 'nodeport', family: 'ip', protocol: 'udp' },
      { kind: 'nodeport', family: 'ip6', protocol: 'tcp' },
      { kind: 'nodeport', family: 'ip6', protocol: 'udp' },
    ]);
  });

  it('in degraded mode has no flowtable and threshold chains only count', () => {
    const r = desiredRuleset(scenarioInput(loadScenario('dual-stack'), false));
    expect(r.flowtable).toBeNull();
    expect(r.chains.get('threshold-20')?.rules).toEqual([
      { kind: 'threshold', threshold: 20, offload: false },
    ]);
    expect(r.elements.size).toBe(4);
  });

  it('records why ClusterIPs were skipped, never throwing', () => {
    const r = desiredRuleset(scenarioInput(loadScenario('invalid-clusterip')));
    const entry = r.services.get('odd/db')!;
    expect(entry.skipped.map((s) => s.what)).toEqual([
      'ClusterIP "10.96.5.300"',
      'ClusterIP "fe80::1%eth0"',
      'ClusterIP "10.96.5.1; flush ruleset"',
    ]);
    expect(entry.elements).toEqual(['ip 10.96.5.1 6 5432']);
  });

  it('is deterministic when two Services claim one element, whatever the input order', () => {
    const s = loadScenario('conflict');
    const a = desiredRuleset(scenarioInput(s));
    const b = desiredRuleset({ ...scenarioInput(s), services: [...s.services].reverse() });
    expect(elementLines(a)).toEqual(elementLines(b));
    expect(a.owners.get('ip 10.96.6.1 6 5432')).toBe('a/first');
    expect(a.services.get('b/second')?.skipped[0]?.reason).toBe('already programmed for Service a/first');
  });

  it('keeps the trace annotation of a Service for span links', () => {
    const s = loadScenario('invalid-hints');
    const r = desiredRuleset(scenarioInput(s));
    expect(r.services.get('app/cache')?.trace).toBe('not-a-traceparent');
  });

  it('drops device names that cannot be interface names and sorts the rest', () => {
    const r = desiredRuleset({
      ...scenarioInput(loadScenario('sctp')),
      devices: ['veth1', 'eth0', 'a b', 'x/y', 'eth0'],
    });
    expect(r.flowtable?.devices).toEqual(['eth0', 'veth1']);
  });

  it('programs nothing for a Service without offloaded ports or without a ClusterIP', () => {
    const svc = (spec: Record<string, unknown>) => {
      const read = readService({ metadata: { name: 'x', namespace: 'n' }, spec });
      if (!read.ok) throw new Error(read.error);
      return read.value;
    };
    const r = desiredRuleset({
      services: [
        svc({ clusterIP: 'None', ports: [{ port: 5432 }] }),
        svc({ clusterIP: '10.96.9.9', ports: [{ port: 53, protocol: 'UDP' }] }),
      ],
      namespaces: new Map(),
      devices: [],
      capabilities: { flowtable: true },
      policy: loadDefaultPolicy(),
    });
    expect(r.elements.size).toBe(0);
    expect(r.thresholds).toEqual([]);
    expect([...r.chains.keys()]).toEqual(['forward']);
  });
});

describe('huge Services', () => {
  const svc = (name: string, ports: unknown[], annotations: Record<string, string> = {}) => {
    const read = readService({
      metadata: { name, namespace: 'n', annotations },
      spec: { clusterIP: `10.96.9.${name.length}`, ports },
    });
    if (!read.ok) throw new Error(read.error);
    return read.value;
  };

  it('a Service with 131,070 ports contributes nothing and holds back no other Service', () => {
    const every: unknown[] = [];
    for (let port = 1; port <= 65535; port++) every.push({ port }, { port, protocol: 'UDP' });
    const huge = svc('huge', every, { [USER_KEYS.acceleration]: 'enabled' });
    const r = desiredRuleset({
      services: [huge, svc('pg', [{ port: 5432 }])],
      namespaces: new Map(),
      devices: [],
      capabilities: { flowtable: true },
      policy: loadDefaultPolicy(),
    });
    expect(r.services.get('n/huge')?.decision.rule).toBe('contract:hint-limit');
    expect(r.services.get('n/huge')?.elements).toEqual([]);
    expect(elementLines(r)).toEqual(['ip 10.96.9.2 6 5432 -> 20']);
  });

  it('a Service with 1,100 offloaded ports gets one element per port, each at its own threshold', () => {
    const ports = Array.from({ length: 1100 }, (_, i) =>
      i % 2 === 0 ? { port: 20_000 + i } : { port: 20_000 + i, name: `grpc-${i}` },
    );
    const c = contribution(svc('wide', ports), loadDefaultPolicy(), undefined);
    expect(c.candidates).toHaveLength(1100);
    const byThreshold = new Map<number | null, number>();
    for (const { element } of c.candidates)
      byThreshold.set(element.threshold, (byThreshold.get(element.threshold) ?? 0) + 1);
    expect(Object.fromEntries(byThreshold)).toEqual({ 20: 550, 100: 550 });
  });
});

describe('the contribution cache', () => {
  it('gives the same ruleset as no cache, and recomputes only replaced objects', () => {
    const s = loadScenario('namespace-opt-out');
    const input = scenarioInput(s);
    const cache = newContributionCache();
    const plain = desiredRuleset(input);
    expect(desiredRuleset(input, cache)).toEqual(plain);
    expect(desiredRuleset(input, cache)).toEqual(plain);
    // A replaced Namespace object (the label changed) is noticed although the Service objects are the same.
    const namespaces = new Map(s.namespaces);
    namespaces.set('loud', { name: 'loud', labels: { 'slipstream.dev/acceleration': 'disabled' } });
    const optedOut = desiredRuleset({ ...input, namespaces }, cache);
    expect(optedOut.elements.size).toBe(0);
    expect(optedOut).toEqual(desiredRuleset({ ...input, namespaces }));
    // A replaced Service object is recomputed.
    const services = input.services as typeof s.services;
    const changed = services.map((x) => (x.namespace === 'loud' ? { ...x, clusterIPs: ['10.96.3.9'] } : x));
    expect(elementLines(desiredRuleset({ ...input, services: changed }, cache))).toEqual([
      'ip 10.96.3.9 6 5432 -> 20',
    ]);
  });
});

describe('decisions shared by shape', () => {
  it('depend on nothing a shape leaves out (name, uid, ClusterIPs, trace)', () => {
    const policy = loadDefaultPolicy();
    const a: Service = {
      namespace: 'data',
      name: 'a',
      uid: 'u1',
      annotations: { [HINT_KEYS.trace]: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
      type: 'ClusterIP',
      clusterIPs: ['10.96.0.1'],
      ports: [{ port: 5432, protocol: 'TCP' }],
    };
    const b: Service = { ...a, name: 'b', uid: 'u2', annotations: {}, clusterIPs: ['10.96.0.2', 'fd00::2'] };
    expect(effectiveDecision(b, policy)).toEqual(effectiveDecision(a, policy));
    const memo = new Map();
    const ca = contribution(a, policy, undefined, memo);
    const cb = contribution(b, policy, undefined, memo);
    expect(cb.entry.decision).toBe(ca.entry.decision);
    expect(memo.size).toBe(1);
    expect(cb.candidates).toHaveLength(2);
  });
});

describe('conflicts', () => {
  const policy = loadDefaultPolicy();
  const svc = (name: string, uid: string): Service => ({
    namespace: 'n',
    name,
    uid,
    annotations: {},
    type: 'ClusterIP',
    clusterIPs: ['10.96.0.1'],
    ports: [{ port: 5432, protocol: 'TCP' }],
  });
  const owner = (services: Service[]) => {
    const r = desiredRuleset({
      services,
      namespaces: new Map(),
      devices: [],
      capabilities: { flowtable: true },
      policy,
    });
    return [...r.owners.values()];
  };

  it('go to the first Service by namespace/name then uid, as the strings key + line feed + uid compare', () => {
    // One namespace/name twice: the lower uid wins, whatever the input order.
    expect(owner([svc('a', 'u2'), svc('a', 'u1')])).toEqual(['n/a']);
    const twice = desiredRuleset({
      services: [svc('a', 'u2'), svc('a', 'u1')],
      namespaces: new Map(),
      devices: [],
      capabilities: { flowtable: true },
      policy,
    });
    expect(twice.services.get('n/a')?.uid).toBe('u1');
    // A name that another continues: the shorter one first...
    expect(owner([svc('a-b', 'u0'), svc('a', 'u9')])).toEqual(['n/a']);
    // ...unless the longer one continues it with a line feed, which sorts before the uid.
    expect(owner([svc('a', 'u0'), svc('a\n0', 'u9')])).toEqual(['n/a\n0']);
  });
});
