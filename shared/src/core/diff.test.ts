import { describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput } from '../../../test/fixtures/services/load.ts';
import { type Change, isEmpty, type Op } from './change.ts';
import { USER_KEYS } from './contract.ts';
import { type DesiredInput, desiredRuleset } from './desired-ruleset.ts';
import { diff } from './diff.ts';
import type { Ruleset } from './ruleset.ts';
import type { Service } from './service.ts';

/** One line per op: what it does and to what (elements as `address/proto/port>threshold`). */
function show(change: Change): string[] {
  return change.ops.map((op: Op) => {
    switch (op.op) {
      case 'add-elements':
      case 'delete-elements':
        return `${op.op} ${op.family} ${op.elements.map((e) => `${e.address}/${e.protocol}/${e.port}>${e.threshold}`).join(' ')}`;
      case 'add-flowtable':
        return `add-flowtable ${op.devices.join(',')}`;
      case 'add-rule':
        return `add-rule ${op.chain} ${op.rule.kind === 'threshold' ? `>${op.rule.threshold}${op.rule.offload ? ' offload' : ''}` : op.rule.kind === 'dispatch' ? `${op.rule.family}/${op.rule.protocol}` : op.rule.kind === 'nodeport' ? `nodeport ${op.rule.family}/${op.rule.protocol}` : 'foreign'}`;
      case 'add-chain':
      case 'flush-chain':
      case 'delete-chain':
        return `${op.op} ${op.chain}`;
      case 'add-map':
      case 'add-set':
      case 'flush-map':
      case 'delete-map':
        return `${op.op} ${op.family}`;
      case 'delete-flowtable-devices':
        return `${op.op} ${op.devices.join(',')}`;
      case 'delete-object':
        return `${op.op} ${op.object.kind} ${op.object.handle}`;
      default:
        return op.op;
    }
  });
}

function withoutService(input: DesiredInput, key: string): DesiredInput {
  return { ...input, services: [...input.services].filter((s) => `${s.namespace}/${s.name}` !== key) };
}

function withAnnotations(
  input: DesiredInput,
  key: string,
  annotations: Record<string, string>,
): DesiredInput {
  return {
    ...input,
    services: [...input.services].map((s: Service) =>
      `${s.namespace}/${s.name}` === key ? { ...s, annotations: { ...s.annotations, ...annotations } } : s,
    ),
  };
}

const clone = (r: Ruleset): Ruleset => structuredClone(r);

describe('diff', () => {
  it('creates everything, in a valid order, when there is no table', () => {
    const desired = desiredRuleset(scenarioInput(loadScenario('dual-stack')));
    const change = diff(null, desired);
    expect(show(change)).toEqual([
      'add-table',
      'add-flowtable eth0,eth1',
      'add-map ip',
      'add-map ip6',
      'add-map np',
      'add-set ip',
      'add-set ip6',
      'add-chain threshold-20',
      'add-chain forward',
      'add-elements ip 10.96.0.10/17/443>20 10.96.0.10/6/5432>20',
      'add-elements ip6 fd00:10:96::a/17/443>20 fd00:10:96::a/6/5432>20',
      'add-rule threshold-20 >20 offload',
      'add-rule forward ip/tcp',
      'add-rule forward ip/udp',
      'add-rule forward ip6/tcp',
      'add-rule forward ip6/udp',
      'add-rule forward nodeport ip/tcp',
      'add-rule forward nodeport ip/udp',
      'add-rule forward nodeport ip6/tcp',
      'add-rule forward nodeport ip6/udp',
    ]);
    expect(change.summary).toMatchObject({
      tableCreated: true,
      elementsAdded: 4,
      elementsRemoved: 0,
      chainsAdded: ['threshold-20', 'forward'],
      services: ['shop/db'],
    });
  });

  it('is empty, and detectably so, when nothing changed', () => {
    const input = scenarioInput(loadScenario('dual-stack'));
    const change = diff(desiredRuleset(input), desiredRuleset(input));
    expect(isEmpty(change)).toBe(true);
    expect(change.ops).toEqual([]);
  });

  it('keeps a shared threshold chain while one user is left, and deletes it with the last', () => {
    const all = scenarioInput(loadScenario('thresholds-shared'));
    const one = withoutService(all, 'data/pg-a');
    const none = withoutService(one, 'data/pg-b');
    const r0 = desiredRuleset(all);
    const r1 = desiredRuleset(one);
    const r2 = desiredRuleset(none);

    const first = diff(r0, r1);
    expect(show(first)).toEqual(['delete-elements ip 10.96.2.1/6/5432>20']);
    expect(first.summary.services).toEqual(['data/pg-a']);

    const second = diff(r1, r2);
    expect(show(second)).toEqual([
      'flush-chain threshold-20',
      'delete-elements ip 10.96.2.2/6/5432>20',
      'delete-chain threshold-20',
    ]);
    expect(second.summary.chainsRemoved).toEqual(['threshold-20']);

    // And back: the chain is created before the element that jumps to it.
    expect(show(diff(r2, r0))).toEqual([
      'add-chain threshold-20',
      'add-elements ip 10.96.2.1/6/5432>20 10.96.2.2/6/5432>20',
      'add-rule threshold-20 >20 offload',
    ]);
  });

  it('deletes and re-adds an element whose threshold changed', () => {
    const input = scenarioInput(loadScenario('thresholds-shared'));
    const before = desiredRuleset(input);
    const after = desiredRuleset(withAnnotations(input, 'data/web', { [USER_KEYS.packetThreshold]: '20' }));
    expect(show(diff(before, after))).toEqual([
      'flush-chain threshold-100',
      'delete-elements ip 10.96.2.3/6/8080>100',
      'delete-chain threshold-100',
      'add-elements ip 10.96.2.3/6/8080>20',
    ]);
  });

  it('removes the elements of a namespace that opts out, also for Services already hinted', () => {
    const s = loadScenario('namespace-opt-out');
    const input = scenarioInput(s);
    const loudOut = new Map(s.namespaces);
    loudOut.set('loud', { name: 'loud', labels: { 'slipstream.dev/acceleration': 'disabled' } });
    const change = diff(desiredRuleset(input), desiredRuleset({ ...input, namespaces: loudOut }));
    expect(show(change)).toEqual([
      'flush-chain threshold-20',
      'delete-elements ip 10.96.3.2/6/5432>20',
      'delete-chain threshold-20',
    ]);
    expect(change.summary.services).toEqual(['loud/db']);
  });

  it('adds only the new devices to an existing flowtable', () => {
    const input = scenarioInput(loadScenario('dual-stack'));
    const change = diff(
      desiredRuleset({ ...input, devices: ['eth0'] }),
      desiredRuleset({ ...input, devices: ['eth0', 'veth9'] }),
    );
    expect(show(change)).toEqual(['add-flowtable veth9']);
    expect(change.summary.devicesAdded).toEqual(['veth9']);
  });

  it('removes a device from the flowtable in place: the flowtable (and its offloaded flows) stays', () => {
    const input = scenarioInput(loadScenario('thresholds-shared'));
    const change = diff(
      desiredRuleset({ ...input, devices: ['eth0', 'veth9'] }),
      desiredRuleset({ ...input, devices: ['eth0'] }),
    );
    expect(show(change)).toEqual(['delete-flowtable-devices veth9']);
    expect(change.summary.devicesRemoved).toEqual(['veth9']);
  });

  it('re-creates the flowtable when asked (eviction): flushed users, delete, add with every device, rules again', () => {
    const input = scenarioInput(loadScenario('thresholds-shared'));
    const before = desiredRuleset({ ...input, devices: ['eth0', 'veth9'] });
    const after = desiredRuleset(withoutService({ ...input, devices: ['eth0', 'veth9'] }, 'data/pg-a'));
    const change = diff(before, after, { recreateFlowtable: true });
    const ops = show(change);
    // In one transaction, in an order the kernel accepts: no rule uses the flowtable when it goes.
    expect(ops.indexOf('delete-flowtable')).toBeGreaterThan(
      Math.max(...ops.flatMap((o, i) => (o.startsWith('flush-chain') ? [i] : []))),
    );
    expect(ops).toContain('add-flowtable eth0,veth9');
    expect(ops.indexOf('add-flowtable eth0,veth9')).toBeGreaterThan(ops.indexOf('delete-flowtable'));
    const rules = ops.filter((o) => o.startsWith('add-rule'));
    expect(rules.length).toBeGreaterThan(0);
    expect(rules.every((o) => o.endsWith('offload'))).toBe(true);
    expect(ops.indexOf(rules[0]!)).toBeGreaterThan(ops.indexOf('add-flowtable eth0,veth9'));
    expect(change.summary).toMatchObject({ flowtableRecreated: true, devicesAdded: [], devicesRemoved: [] });
    expect(change.summary.elementsRemoved).toBeGreaterThan(0);
    // Every threshold chain still in use is flushed and refilled; no other chain is touched.
    const thresholds = [...after.chains.keys()].filter((c) => c.startsWith('threshold-')).sort();
    expect(ops.filter((o) => o.startsWith('flush-chain')).map((o) => o.slice(12))).toEqual(
      expect.arrayContaining(thresholds),
    );
    expect(ops.some((o) => o === 'flush-chain forward')).toBe(false);

    // Without elements to change, it re-creates the flowtable alone; without the option, nothing.
    expect(isEmpty(diff(after, clone(after)))).toBe(true);
    const alone = show(diff(after, clone(after), { recreateFlowtable: true }));
    expect(alone.filter((o) => !o.startsWith('flush-chain') && !o.startsWith('add-rule'))).toEqual([
      'delete-flowtable',
      'add-flowtable eth0,veth9',
    ]);
  });

  it('does not re-create what is not there: no flowtable (degraded), or no table yet', () => {
    const input = scenarioInput(loadScenario('dual-stack'));
    const degraded = desiredRuleset({ ...input, capabilities: { flowtable: false } });
    expect(isEmpty(diff(degraded, clone(degraded), { recreateFlowtable: true }))).toBe(true);
    const full = desiredRuleset(input);
    expect(show(diff(null, full, { recreateFlowtable: true }))).toEqual(show(diff(null, full)));
  });

  it('moves between degraded and full mode by rewriting the threshold chains', () => {
    const input = scenarioInput(loadScenario('dual-stack'));
    const degraded = desiredRuleset({ ...input, capabilities: { flowtable: false } });
    const full = desiredRuleset(input);
    expect(show(diff(degraded, full))).toEqual([
      'flush-chain threshold-20',
      'add-flowtable eth0,eth1',
      'add-rule threshold-20 >20 offload',
    ]);
    expect(show(diff(full, degraded))).toEqual([
      'flush-chain threshold-20',
      'delete-flowtable',
      'add-rule threshold-20 >20',
    ]);
  });

  describe('repairs drift found in the kernel', () => {
    const desired = desiredRuleset(scenarioInput(loadScenario('dual-stack')));

    it('re-adds a deleted element', () => {
      const kernel = clone(desired);
      kernel.elements.delete('ip 10.96.0.10 6 5432');
      expect(show(diff(kernel, desired))).toEqual(['add-elements ip 10.96.0.10/6/5432>20']);
    });

    it('replaces an element whose verdict someone altered', () => {
      const kernel = clone(desired);
      kernel.elements.set('ip 10.96.0.10 6 5432', {
        ...kernel.elements.get('ip 10.96.0.10 6 5432')!,
        threshold: null,
      });
      expect(show(diff(kernel, desired))).toEqual([
        'delete-elements ip 10.96.0.10/6/5432>null',
        'add-elements ip 10.96.0.10/6/5432>20',
      ]);
    });

    it('removes a foreign element and a foreign chain', () => {
      const kernel = clone(desired);
      kernel.elements.set('ip 10.1.1.1 132 9', {
        family: 'ip',
        address: '10.1.1.1',
        protocol: 132,
        port: 9,
        threshold: null,
      });
      kernel.chains.set('mine', { name: 'mine', base: null, rules: [{ kind: 'foreign', text: '[]' }] });
      expect(show(diff(kernel, desired))).toEqual([
        'flush-chain mine',
        'delete-elements ip 10.1.1.1/132/9>null',
        'delete-chain mine',
      ]);
    });

    it('rewrites an altered chain', () => {
      const kernel = clone(desired);
      kernel.chains.get('forward')!.rules.splice(1, 1, { kind: 'foreign', text: 'accept' });
      expect(show(diff(kernel, desired))).toEqual([
        'flush-chain forward',
        'add-rule forward ip/tcp',
        'add-rule forward ip/udp',
        'add-rule forward ip6/tcp',
        'add-rule forward ip6/udp',
        'add-rule forward nodeport ip/tcp',
        'add-rule forward nodeport ip/udp',
        'add-rule forward nodeport ip6/tcp',
        'add-rule forward nodeport ip6/udp',
      ]);
    });

    it('re-creates a deleted map with its elements', () => {
      const kernel = clone(desired);
      kernel.maps = ['ip', 'np'];
      for (const [k, e] of kernel.elements) if (e.family === 'ip6') kernel.elements.delete(k);
      kernel.chains.get('forward')!.rules = kernel.chains.get('forward')!.rules.slice(0, 2);
      expect(show(diff(kernel, desired))).toEqual([
        'flush-chain forward',
        'add-map ip6',
        'add-elements ip6 fd00:10:96::a/17/443>20 fd00:10:96::a/6/5432>20',
        'add-rule forward ip/tcp',
        'add-rule forward ip/udp',
        'add-rule forward ip6/tcp',
        'add-rule forward ip6/udp',
        'add-rule forward nodeport ip/tcp',
        'add-rule forward nodeport ip/udp',
        'add-rule forward nodeport ip6/tcp',
        'add-rule forward nodeport ip6/udp',
      ]);
    });

    it('deletes objects Slipstream does not write by handle, the rest staying as it is', () => {
      const kernel = clone(desired);
      kernel.foreign = [{ kind: 'set', name: 'intruders', handle: 12, why: 'not a Slipstream set' }];
      const change = diff(kernel, desired);
      expect(show(change)).toEqual(['delete-object set 12']);
      expect(change.summary.rebuild).toBe(false);
      expect(change.summary.objectsReplaced).toEqual(['set intruders: not a Slipstream set']);
    });

    it('rebuilds the table, in one transaction, only for an object it cannot delete by itself', () => {
      const kernel = clone(desired);
      kernel.foreign = [{ kind: 'tunnel', name: 't', handle: 3, why: 'not a Slipstream tunnel' }];
      const change = diff(kernel, desired);
      expect(show(change)[0]).toBe('delete-table');
      expect(show(change).slice(1)).toEqual(show(diff(null, desired)));
      expect(change.summary.rebuild).toBe(true);
    });

    it('replaces a base chain with another hook or priority, in place', () => {
      const kernel = clone(desired);
      kernel.chains.get('forward')!.base = { type: 'filter', hook: 'forward', priority: 0, policy: 'accept' };
      expect(show(diff(kernel, desired))).toEqual([
        'flush-chain forward',
        'delete-chain forward',
        'add-chain forward',
        'add-rule forward ip/tcp',
        'add-rule forward ip/udp',
        'add-rule forward ip6/tcp',
        'add-rule forward ip6/udp',
        'add-rule forward nodeport ip/tcp',
        'add-rule forward nodeport ip/udp',
        'add-rule forward nodeport ip6/tcp',
        'add-rule forward nodeport ip6/udp',
      ]);
    });

    it('replaces a map of its name but another size, re-adding its elements and the rules that use it', () => {
      const kernel = clone(desired);
      kernel.maps = ['ip6', 'np'];
      for (const [k, e] of kernel.elements) if (e.family === 'ip') kernel.elements.delete(k);
      kernel.foreign = [{ kind: 'map', name: 'svc4', handle: 4, why: 'size 3' }];
      expect(show(diff(kernel, desired))).toEqual([
        'flush-chain forward',
        'flush-map ip',
        'delete-map ip',
        'add-map ip',
        'add-elements ip 10.96.0.10/17/443>20 10.96.0.10/6/5432>20',
        'add-rule forward ip/tcp',
        'add-rule forward ip/udp',
        'add-rule forward ip6/tcp',
        'add-rule forward ip6/udp',
        'add-rule forward nodeport ip/tcp',
        'add-rule forward nodeport ip/udp',
        'add-rule forward nodeport ip6/tcp',
        'add-rule forward nodeport ip6/udp',
      ]);
    });
  });
});
