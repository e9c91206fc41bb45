import { describe, expect, it } from 'vitest';
import { loadDefaultPolicy } from '../adapters/policy-files.ts';
import { HINT_KEYS, specHash, USER_KEYS } from './contract.ts';
import { decide, effectiveDecision, hintAnnotations } from './decide.ts';
import { type Namespace, readService, type Service } from './service.ts';

const policy = loadDefaultPolicy();

function svc(spec: Record<string, unknown>, annotations: Record<string, string> = {}): Service {
  const read = readService({ metadata: { name: 's', namespace: 'ns', annotations }, spec });
  if (!read.ok) throw new Error(read.error);
  return read.value;
}

const postgres = { clusterIP: '10.96.0.5', ports: [{ port: 5432, name: 'pg' }] };

describe('decide', () => {
  it('offloads a database port with the rule and reason that decided it', () => {
    const d = decide(svc(postgres), policy);
    expect(d.offload).toEqual([{ port: 5432, protocol: 'TCP' }]);
    expect(d.threshold).toBe(20);
    expect(d.rule).toBe('sql-databases');
    expect(d.reason).toContain('5432/TCP offload: sql-databases');
    expect(d.policy).toBe(policy.id);
  });

  it('never offloads SCTP', () => {
    const d = decide(
      svc({ clusterIP: '10.96.0.5', ports: [{ port: 5432, protocol: 'SCTP' }] }),
      policy,
      undefined,
    );
    expect(d.offload).toEqual([]);
    expect(d.threshold).toBeNull();
    expect(d.reason).toContain('only TCP and UDP');
  });

  it.each([
    [{ clusterIP: 'None', ports: [{ port: 5432 }] }, 'headless'],
    [{ type: 'ExternalName', externalName: 'db.example', ports: [{ port: 5432 }] }, 'ExternalName'],
  ])('gives no offload to a Service without a ClusterIP (%#)', (spec, word) => {
    const d = decide(svc(spec), policy);
    expect(d).toMatchObject({ offload: [], threshold: null, source: 'no-cluster-ip' });
    expect(d.reason).toContain(word);
    expect(d.reason).toContain('no ClusterIP');
  });

  it('lets the user disable, enable, restrict and set the threshold', () => {
    const dns = {
      clusterIP: '10.96.0.10',
      ports: [{ port: 53, protocol: 'UDP' }, { port: 53 }, { port: 9153 }],
    };
    expect(decide(svc(postgres, { [USER_KEYS.acceleration]: 'disabled' }), policy).offload).toEqual([]);
    expect(decide(svc(dns, { [USER_KEYS.acceleration]: 'enabled' }), policy).offload).toEqual([
      { port: 53, protocol: 'TCP' },
      { port: 53, protocol: 'UDP' },
      { port: 9153, protocol: 'TCP' },
    ]);
    const restricted = decide(
      svc(dns, { [USER_KEYS.acceleration]: 'enabled', [USER_KEYS.ports]: '53/UDP' }),
      policy,
    );
    expect(restricted.offload).toEqual([{ port: 53, protocol: 'UDP' }]);
    // ports restricts; it does not force: without `enabled` the policy still keeps DNS.
    expect(decide(svc(dns, { [USER_KEYS.ports]: '53' }), policy).offload).toEqual([]);
    const threshold = decide(svc(postgres, { [USER_KEYS.packetThreshold]: '500' }), policy);
    expect(threshold.threshold).toBe(500);
    expect(threshold.reason).toContain(USER_KEYS.packetThreshold);
  });

  it('ignores an invalid user value as if absent, with a warning naming the key', () => {
    const d = decide(
      svc(postgres, { [USER_KEYS.packetThreshold]: 'abc', [USER_KEYS.acceleration]: 'maybe' }),
      policy,
    );
    expect(d.offload).toEqual([{ port: 5432, protocol: 'TCP' }]);
    expect(d.threshold).toBe(20);
    expect(d.warnings.map((w) => w.key).sort()).toEqual([USER_KEYS.acceleration, USER_KEYS.packetThreshold]);
  });

  it('uses the lowest threshold among the offloaded ports when no user threshold is set', () => {
    const d = decide(svc({ clusterIP: '10.96.0.5', ports: [{ port: 5432 }, { port: 31000 }] }), policy);
    expect(d.offload).toHaveLength(2);
    expect(d.threshold).toBe(20);
    const unknownOnly = decide(svc({ clusterIP: '10.96.0.5', ports: [{ port: 31000 }] }), policy);
    expect(unknownOnly.threshold).toBe(100);
  });

  it('honours the namespace opt-out label', () => {
    const ns: Namespace = { name: 'ns', labels: { 'slipstream.dev/acceleration': 'disabled' } };
    const d = decide(svc(postgres, { [USER_KEYS.acceleration]: 'enabled' }), policy, ns);
    expect(d).toMatchObject({ offload: [], source: 'namespace' });
  });

  it('keeps the reason on one bounded line', () => {
    const ports = Array.from({ length: 200 }, (_, i) => ({ port: 10000 + i, name: `p\n${i}` }));
    const d = decide(svc({ clusterIP: '10.96.0.5', ports }), policy);
    expect(d.reason).not.toMatch(/[\r\n]/);
    expect(d.reason.length).toBeLessThanOrEqual(1000);
  });
});

describe('effectiveDecision (the daemon’s view)', () => {
  it('uses valid webhook hints that match the spec', () => {
    const hinted = svc(postgres, {
      [HINT_KEYS.offload]: '5432/TCP',
      [HINT_KEYS.packetThreshold]: '77',
      [HINT_KEYS.reason]: 'from the webhook',
      [HINT_KEYS.policy]: 'other@3#abc',
      [HINT_KEYS.specHash]: specHash(svc(postgres)),
    });
    expect(effectiveDecision(hinted, policy)).toMatchObject({
      offload: [{ port: 5432, protocol: 'TCP' }],
      threshold: 77,
      source: 'hints',
      policy: 'other@3#abc',
    });
  });

  it('falls back to the local policy when hints are stale, and says why', () => {
    const stale = svc(postgres, { [HINT_KEYS.offload]: '3306/TCP', [HINT_KEYS.packetThreshold]: '20' });
    const d = effectiveDecision(stale, policy);
    expect(d.source).toBe('policy');
    expect(d.offload).toEqual([{ port: 5432, protocol: 'TCP' }]);
    expect(d.reason).toContain('stale');
  });

  it('lets user keys win over hints written before the user changed them', () => {
    const d = effectiveDecision(
      svc(postgres, {
        [HINT_KEYS.offload]: '5432/TCP',
        [HINT_KEYS.packetThreshold]: '20',
        [USER_KEYS.acceleration]: 'disabled',
      }),
      policy,
    );
    expect(d.offload).toEqual([]);
  });

  it('excludes Services hinted before their namespace opted out', () => {
    const hinted = svc(postgres, { [HINT_KEYS.offload]: '5432/TCP', [HINT_KEYS.packetThreshold]: '20' });
    const ns: Namespace = { name: 'ns', labels: { 'slipstream.dev/acceleration': 'disabled' } };
    expect(effectiveDecision(hinted, policy, ns).offload).toEqual([]);
  });
});

describe('hintAnnotations', () => {
  it('writes the threshold only when something is offloaded', () => {
    const on = hintAnnotations(decide(svc(postgres), policy));
    expect(on[HINT_KEYS.offload]).toBe('5432/TCP');
    expect(on[HINT_KEYS.packetThreshold]).toBe('20');
    const off = hintAnnotations(decide(svc({ clusterIP: 'None', ports: [{ port: 5432 }] }), policy));
    expect(off[HINT_KEYS.offload]).toBe('none');
    expect(off[HINT_KEYS.packetThreshold]).toBeUndefined();
  });

  it('round-trips through the daemon’s parser', () => {
    const s = svc({
      clusterIP: '10.96.0.5',
      ports: [{ port: 9042 }, { port: 5432 }, { port: 443, protocol: 'UDP' }],
    });
    const local = decide(s, policy);
    const hinted = svc(
      { clusterIP: '10.96.0.5', ports: [{ port: 9042 }, { port: 5432 }, { port: 443, protocol: 'UDP' }] },
      hintAnnotations(local),
    );
    const read = effectiveDecision(hinted, policy);
    expect(read.source).toBe('hints');
    expect(read.offload).toEqual(local.offload);
    expect(read.threshold).toBe(local.threshold);
  });
});

describe('thresholds follow the deciding rule', () => {
  it('takes an appProtocol or port-name rule’s threshold, not the default’s', () => {
    const grpc = decide(
      svc({ clusterIP: '10.96.0.5', ports: [{ port: 50051, appProtocol: 'grpc' }] }),
      policy,
    );
    expect(grpc).toMatchObject({ rule: 'grpc-http2-app-protocol', threshold: 20 });
    const http = decide(svc({ clusterIP: '10.96.0.5', ports: [{ port: 8080, name: 'http' }] }), policy);
    expect(http).toMatchObject({ rule: 'http-tcp-port-name', threshold: 100 });
  });
});
