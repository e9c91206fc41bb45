import { describe, expect, it } from 'vitest';
import { loadDefaultPolicy } from '../adapters/policy-files.ts';
import { HINT_KEYS, specHash, USER_KEYS, VALUE_MAX_LENGTH } from './contract.ts';
import { decide, effectiveDecision } from './decide.ts';
import { formatHints, formatOffload } from './hints.ts';
import { parsePolicy } from './policy.ts';
import { type Namespace, readService, type Service } from './service.ts';

const policy = loadDefaultPolicy();

function svc(spec: Record<string, unknown>, annotations: Record<string, string> = {}): Service {
  const read = readService({ metadata: { name: 's', namespace: 'ns', annotations }, spec });
  if (!read.ok) throw new Error(read.error);
  return read.value;
}

const postgres = { clusterIP: '10.96.0.5', ports: [{ port: 5432, name: 'pg' }] };
const dns = {
  clusterIP: '10.96.0.10',
  ports: [
    { port: 53, protocol: 'UDP', name: 'dns' },
    { port: 53, name: 'dns-tcp' },
    { port: 9153, name: 'metrics' },
  ],
};

/** The thresholds a decision applies, as the offload hint writes them. */
const hint = (d: { offload: Parameters<typeof formatOffload>[0] }) => formatOffload(d.offload);

describe('decide', () => {
  it('offloads a database port with the rule, threshold and reason that decided it', () => {
    const d = decide(svc(postgres), policy);
    expect(d.offload).toEqual([{ port: 5432, protocol: 'TCP', threshold: 20 }]);
    expect(d.rule).toBe('sql-databases');
    expect(d.reason).toBe(
      '5432/TCP offload after 20 packets: sql-databases (SQL database connections are pooled and long-lived)',
    );
    expect(d.ports[0]).toMatchObject({ offload: true, threshold: 20 });
    expect(d.policy).toBe(policy.id);
  });

  it('never offloads SCTP', () => {
    const d = decide(svc({ clusterIP: '10.96.0.5', ports: [{ port: 5432, protocol: 'SCTP' }] }), policy);
    expect(d.offload).toEqual([]);
    expect(d.ports[0]).toMatchObject({ offload: false, threshold: null });
    expect(d.reason).toContain('only TCP and UDP');
  });

  it.each([
    [{ clusterIP: 'None', ports: [{ port: 5432 }] }, 'headless'],
    [{ type: 'ExternalName', externalName: 'db.example', ports: [{ port: 5432 }] }, 'ExternalName'],
  ])('gives no offload to a Service without a ClusterIP (%#)', (spec, word) => {
    const d = decide(svc(spec), policy);
    expect(d).toMatchObject({ offload: [], source: 'no-cluster-ip' });
    expect(d.reason).toContain(word);
    expect(d.reason).toContain('no ClusterIP');
  });

  it('lets the user disable, enable, restrict and set the threshold', () => {
    expect(decide(svc(postgres, { [USER_KEYS.acceleration]: 'disabled' }), policy).offload).toEqual([]);
    expect(hint(decide(svc(dns, { [USER_KEYS.acceleration]: 'enabled' }), policy))).toBe(
      '53/TCP=20,53/UDP=20,9153/TCP=20',
    );
    const restricted = decide(
      svc(dns, { [USER_KEYS.acceleration]: 'enabled', [USER_KEYS.ports]: '53/UDP' }),
      policy,
    );
    expect(hint(restricted)).toBe('53/UDP=20');
    // ports restricts; it does not force: without `enabled` the policy still keeps DNS.
    expect(hint(decide(svc(dns, { [USER_KEYS.ports]: '53' }), policy))).toBe('none');
    const threshold = decide(svc(postgres, { [USER_KEYS.packetThreshold]: '500' }), policy);
    expect(hint(threshold)).toBe('5432/TCP=500');
    expect(threshold.reason).toContain(`5432/TCP offload after 500 packets (${USER_KEYS.packetThreshold})`);
  });
});

describe('a threshold per port', () => {
  const mixed = {
    clusterIP: '10.96.0.7',
    ports: [
      { port: 80, name: 'http' },
      { port: 5432, name: 'postgres' },
    ],
  };

  it('gives each offloaded port its own rule’s threshold', () => {
    const d = decide(svc(mixed), policy);
    expect(d.offload).toEqual([
      { port: 80, protocol: 'TCP', threshold: 100 },
      { port: 5432, protocol: 'TCP', threshold: 20 },
    ]);
    expect(d.ports.map((p) => [p.port, p.threshold, p.thresholdSource])).toEqual([
      [80, 100, 'rule'],
      [5432, 20, 'policy'],
    ]);
  });

  it('says in the reason exactly the threshold each port gets', () => {
    const d = decide(svc(mixed), policy);
    expect(d.reason).toContain('80/TCP offload after 100 packets: http-port-name');
    expect(d.reason).toContain('5432/TCP offload after 20 packets: datastore-port-name');
    // Every "after N packets" in the reason is the threshold the port gets, and no other number of
    // packets is claimed anywhere (the policy's reasons say why, never how many).
    const claimed = [...d.reason.matchAll(/(\d+)\/TCP offload after (\d+) packets/g)].map((m) => [
      Number(m[1]),
      Number(m[2]),
    ]);
    expect(claimed).toEqual(d.offload.map((o) => [o.port, o.threshold]));
    expect([...d.reason.matchAll(/(\d+) packets/g)]).toHaveLength(d.offload.length);
  });

  it('applies the user’s threshold to every port', () => {
    const d = decide(svc(mixed, { [USER_KEYS.packetThreshold]: '7' }), policy);
    expect(hint(d)).toBe('80/TCP=7,5432/TCP=7');
  });

  it('takes the policy’s defaultThreshold for a rule without one, and 20 without either', () => {
    const own = (defaultThreshold: string) =>
      parsePolicy(
        `name: t\nversion: 1\n${defaultThreshold}default: { offload: true, reason: r }\nrules:\n  - { name: pg, match: { ports: [5432] }, offload: true, reason: pg }\n  - { name: web, match: { ports: [80] }, offload: true, threshold: 300, reason: web }\n`,
      );
    expect(hint(decide(svc(mixed), own('defaultThreshold: 45\n')))).toBe('80/TCP=300,5432/TCP=45');
    expect(hint(decide(svc(mixed), own('')))).toBe('80/TCP=300,5432/TCP=20');
    expect(
      hint(decide(svc(mixed, { [USER_KEYS.acceleration]: 'enabled' }), own('defaultThreshold: 45\n'))),
    ).toBe('80/TCP=45,5432/TCP=45');
  });
});

describe('a contract that fails closed', () => {
  it.each([['5432,'], ['5432/Tcpx'], ['53;drop'], [''], ['9999'], ['dns,9999']])(
    'an invalid ports value %j offloads nothing, with a warning, even with acceleration enabled',
    (ports) => {
      const d = decide(svc(dns, { [USER_KEYS.acceleration]: 'enabled', [USER_KEYS.ports]: ports }), policy);
      expect(d.offload).toEqual([]);
      expect(d.rule).toBe('user:invalid');
      expect(d.warnings.map((w) => w.key)).toEqual([USER_KEYS.ports]);
      expect(d.reason).toContain(`${USER_KEYS.ports} is invalid`);
      expect(d.reason).toContain('nothing is offloaded until it is fixed');
    },
  );

  it('reads the protocol suffix in any case, so 5432/Tcp restricts as 5432/TCP does', () => {
    const s = {
      clusterIP: '10.96.0.5',
      ports: [{ port: 5432 }, { port: 5432, protocol: 'UDP' }, { port: 53 }],
    };
    for (const ports of ['5432/Tcp', '5432/tcp', ' 5432/TCP ']) {
      const d = decide(svc(s, { [USER_KEYS.acceleration]: 'enabled', [USER_KEYS.ports]: ports }), policy);
      expect(hint(d), ports).toBe('5432/TCP=20');
      expect(d.warnings).toEqual([]);
    }
  });

  it('an invalid acceleration or threshold offloads nothing either, with a warning naming the key', () => {
    for (const [key, value] of [
      [USER_KEYS.acceleration, 'maybe'],
      [USER_KEYS.acceleration, 'Disabled'],
      [USER_KEYS.packetThreshold, 'abc'],
      [USER_KEYS.packetThreshold, '1e6'],
    ] as const) {
      const d = decide(svc(postgres, { [key]: value }), policy);
      expect(d.offload, `${key}=${value}`).toEqual([]);
      expect(d.warnings.map((w) => w.key)).toEqual([key]);
    }
  });

  it('reports every invalid key at once', () => {
    const d = decide(
      svc(postgres, { [USER_KEYS.packetThreshold]: 'abc', [USER_KEYS.acceleration]: 'maybe' }),
      policy,
    );
    expect(d.warnings.map((w) => w.key).sort()).toEqual([USER_KEYS.acceleration, USER_KEYS.packetThreshold]);
  });
});

describe('the hint limit', () => {
  // 5-digit ports with a 3-digit threshold: `10000/TCP=100,` is 14 characters per port.
  const ports = (n: number) => Array.from({ length: n }, (_, i) => ({ port: 10_000 + i }));

  it('offloads a Service whose offload hint fits, and the daemon reads that hint back', () => {
    const s = svc({ clusterIP: '10.96.0.5', ports: ports(1100) });
    const d = decide(s, policy);
    expect(d.offload).toHaveLength(1100);
    const hints = formatHints(d);
    expect(hints[HINT_KEYS.offload]!.length).toBeLessThanOrEqual(VALUE_MAX_LENGTH);
    const read = effectiveDecision(svc({ clusterIP: '10.96.0.5', ports: ports(1100) }, hints), policy);
    expect(read.source).toBe('hints');
    expect(read.offload).toEqual(d.offload);
  });

  it('past the limit decides none with a reason, for the webhook and the daemon alike', () => {
    const s = svc({ clusterIP: '10.96.0.5', ports: ports(1300) });
    const d = decide(s, policy);
    expect(d.offload).toEqual([]);
    expect(d.rule).toBe('contract:hint-limit');
    expect(d.reason).toContain(`more than the ${VALUE_MAX_LENGTH} a hint may carry`);
    expect(effectiveDecision(s, policy).offload).toEqual([]);
  });
});

describe('a huge Service', () => {
  it('131,070 ports (every TCP and UDP port) are decided without exhausting the stack', () => {
    const ports = [];
    for (let port = 1; port <= 65535; port++) ports.push({ port }, { port, protocol: 'UDP' });
    const s = svc({ clusterIP: '10.96.0.5', ports }, { [USER_KEYS.acceleration]: 'enabled' });
    const d = decide(s, policy);
    expect(d.offload).toEqual([]);
    expect(d.rule).toBe('contract:hint-limit');
    expect(d.reason).toContain('131070 ports would be offloaded');
    // Without the user's key the policy decides each port; the hint limit still applies.
    const byPolicy = decide(svc({ clusterIP: '10.96.0.5', ports }), policy);
    expect(byPolicy.rule).toBe('contract:hint-limit');
    expect(byPolicy.reason.length).toBeLessThanOrEqual(1000);
  });
});

describe('namespace and reason bounds', () => {
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
  it('uses valid webhook hints that match the spec, each port at its hinted threshold', () => {
    const two = { clusterIP: '10.96.0.5', ports: [{ port: 5432, name: 'pg' }, { port: 8080 }] };
    const hinted = svc(two, {
      [HINT_KEYS.offload]: '5432/TCP=77,8080/TCP=300',
      [HINT_KEYS.reason]: 'from the webhook',
      [HINT_KEYS.policy]: 'other@3#abc',
      [HINT_KEYS.specHash]: specHash(svc(two)),
    });
    const d = effectiveDecision(hinted, policy);
    expect(d).toMatchObject({
      offload: [
        { port: 5432, protocol: 'TCP', threshold: 77 },
        { port: 8080, protocol: 'TCP', threshold: 300 },
      ],
      source: 'hints',
      policy: 'other@3#abc',
    });
    expect(d.ports.map((p) => p.threshold)).toEqual([77, 300]);
  });

  it('uses hints of the older form at their one threshold', () => {
    const hinted = svc(postgres, {
      [HINT_KEYS.offload]: '5432/TCP',
      [HINT_KEYS.packetThreshold]: '77',
      [HINT_KEYS.specHash]: specHash(svc(postgres)),
    });
    expect(effectiveDecision(hinted, policy)).toMatchObject({
      offload: [{ port: 5432, protocol: 'TCP', threshold: 77 }],
      source: 'hints',
    });
  });

  it('falls back to the local policy when hints are stale, and says why', () => {
    const stale = svc(postgres, { [HINT_KEYS.offload]: '3306/TCP=20' });
    const d = effectiveDecision(stale, policy);
    expect(d.source).toBe('policy');
    expect(d.offload).toEqual([{ port: 5432, protocol: 'TCP', threshold: 20 }]);
    expect(d.reason).toContain('stale');
  });

  it('lets user keys win over hints written before the user changed them', () => {
    const d = effectiveDecision(
      svc(postgres, { [HINT_KEYS.offload]: '5432/TCP=20', [USER_KEYS.acceleration]: 'disabled' }),
      policy,
    );
    expect(d.offload).toEqual([]);
  });

  it('excludes Services hinted before their namespace opted out', () => {
    const hinted = svc(postgres, { [HINT_KEYS.offload]: '5432/TCP=20' });
    const ns: Namespace = { name: 'ns', labels: { 'slipstream.dev/acceleration': 'disabled' } };
    expect(effectiveDecision(hinted, policy, ns).offload).toEqual([]);
  });

  it('round-trips what the webhook writes through the daemon’s parser', () => {
    const spec = {
      clusterIP: '10.96.0.5',
      ports: [{ port: 9042 }, { port: 5432 }, { port: 443, protocol: 'UDP' }, { port: 8080, name: 'http' }],
    };
    const local = decide(svc(spec), policy);
    const read = effectiveDecision(svc(spec, formatHints(local)), policy);
    expect(read.source).toBe('hints');
    expect(read.offload).toEqual(local.offload);
    expect(new Set(read.offload.map((o) => o.threshold))).toEqual(new Set([20, 100]));
  });
});
