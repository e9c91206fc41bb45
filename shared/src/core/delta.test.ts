import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadDefaultPolicy } from '../adapters/policy-files.ts';
import { USER_KEYS } from './contract.ts';
import { applyServiceDelta, isConflictFree, thresholdRefs } from './delta.ts';
import { contribution, desiredRuleset } from './desired-ruleset.ts';
import { diff, diffDelta } from './diff.ts';
import { type Service, serviceKey } from './service.ts';

describe('applyServiceDelta and diffDelta (incremental)', () => {
  const policy = loadDefaultPolicy();
  const caps = { flowtable: true };
  const namespaces = new Map([['data', { name: 'data', labels: {} }]]);
  const base = (i: number, ip: string, threshold?: string, port = 5432): Service => ({
    namespace: 'data',
    name: `s${i}`,
    annotations: threshold ? { [USER_KEYS.packetThreshold]: threshold } : {},
    type: 'ClusterIP',
    clusterIPs: [ip, `fd00::${i}`],
    ports: [{ port, protocol: 'TCP' }],
  });
  const full = (services: Service[]) =>
    desiredRuleset({ services, namespaces, devices: ['eth0'], capabilities: caps, policy });
  const contrib = (s: Service) => contribution(s, policy, namespaces.get(s.namespace));

  it('gives the full result and the full diff over random edits (property)', () => {
    const arbService = fc
      .record({
        i: fc.integer({ min: 0, max: 7 }),
        ip: fc.constantFrom('10.96.0.1', '10.96.0.2', '10.96.0.3', '10.96.0.4', 'nope'),
        threshold: fc.constantFrom(undefined, '5', '20', '90'),
        port: fc.constantFrom(5432, 8080),
      })
      .map((g) => base(g.i, g.ip, g.threshold, g.port));
    fc.assert(
      fc.property(
        fc.array(fc.oneof(arbService, fc.integer({ min: 0, max: 7 })), { maxLength: 30 }),
        (edits) => {
          let services: Service[] = [];
          let ruleset = full(services);
          let refs = thresholdRefs(ruleset);
          for (const edit of edits) {
            const name = typeof edit === 'number' ? `s${edit}` : edit.name;
            const old = services.find((s) => s.name === name);
            const next = services.filter((s) => s.name !== name);
            if (typeof edit !== 'number') next.push(edit);
            const before = structuredClone(ruleset);
            if (!isConflictFree(ruleset, services.length)) {
              // Not a precondition the incremental path accepts (the Reconciler recomputes in full).
              services = next;
              ruleset = full(services);
              refs = thresholdRefs(ruleset);
              continue;
            }
            const delta = applyServiceDelta(
              ruleset,
              refs,
              old ? [serviceKey(old)] : [],
              typeof edit === 'number' ? [] : [contrib(edit)],
              caps,
            );
            services = next;
            const want = full(services);
            if (!delta) {
              // Refused (a conflict): nothing was touched; the caller recomputes in full.
              expect(ruleset).toEqual(before);
              ruleset = want;
              refs = thresholdRefs(ruleset);
              continue;
            }
            expect(ruleset).toEqual(want);
            expect(refs).toEqual(thresholdRefs(want));
            expect(diffDelta(delta, ruleset)).toEqual(diff(before, want));
          }
          return true;
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses conflicts: a claimed element, a second object with one namespace/name, an unknown removal', () => {
    const r = full([base(1, '10.96.0.1')]);
    const refs = thresholdRefs(r);
    const snapshot = structuredClone(r);
    expect(applyServiceDelta(r, refs, [], [contrib(base(2, '10.96.0.1'))], caps)).toBeNull();
    expect(applyServiceDelta(r, refs, [], [contrib(base(1, '10.96.0.9'))], caps)).toBeNull();
    expect(applyServiceDelta(r, refs, ['data/s9'], [], caps)).toBeNull();
    expect(r).toEqual(snapshot);
    expect(isConflictFree(r, 1)).toBe(true);
    expect(isConflictFree(full([base(1, '10.96.0.1'), base(2, '10.96.0.1')]), 2)).toBe(false);
  });
});
