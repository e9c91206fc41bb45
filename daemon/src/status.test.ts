// `slipstream status`, the pure parts: the per-port rows against a desired and a kernel ruleset
// and conntrack's counts (parsed in conntrack.ts), and the table for people.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { effectiveDecision } from '@slipstream/shared/core/decide';
import { desiredRuleset } from '@slipstream/shared/core/desired-ruleset';
import { elementKey, type Ruleset } from '@slipstream/shared/core/ruleset';
import type { Namespace, Service } from '@slipstream/shared/core/service';
import { describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput } from '../../test/fixtures/services/load.ts';
import { EXAMPLES_DIR } from './cli.ts';
import { parseOffloaded } from './conntrack.ts';
import { parseManifests } from './sources/manifests.ts';
import { formatStatus, type NodeStatus, type PortStatus, portStatuses, shortBytes } from './status.ts';

// `conntrack -L` lines as conntrack-tools 1.4 prints them (original tuple, reply tuple, flags).
const TCP_OFFLOADED =
  'tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=10.96.0.10 sport=46864 dport=5201 packets=18757 bytes=841605305 src=10.0.2.2 dst=10.0.1.2 sport=5201 dport=46864 packets=14998 bytes=779904 [OFFLOAD] mark=0 use=2';
const TCP_OFFLOADED_IPERF3 =
  'tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=10.96.20.20 sport=46870 dport=5201 packets=20011 bytes=901605305 src=10.0.2.2 dst=10.0.1.2 sport=5201 dport=46870 packets=15023 bytes=781204 [OFFLOAD] mark=0 use=2';
const TCP_OFFLOADED_IPERF3_2 =
  'tcp      6 431999 ESTABLISHED src=10.0.1.3 dst=10.96.20.20 sport=39012 dport=5201 packets=731 bytes=1053002 src=10.0.2.2 dst=10.0.1.3 sport=5201 dport=39012 packets=402 bytes=21004 [HW_OFFLOAD] mark=0 use=2';
const UDP_OFFLOADED =
  'udp      17 119 src=10.0.1.2 dst=10.96.20.20 sport=51234 dport=5201 packets=90412 bytes=130796576 src=10.0.2.3 dst=10.0.1.2 sport=5201 dport=51234 packets=3 bytes=168 [OFFLOAD] mark=0 use=2';
const TCP6_OFFLOADED =
  'tcp      6 431999 ESTABLISHED src=fd00:10:244:1::2 dst=fd00:10:96::1e sport=38122 dport=8080 packets=1207 bytes=90012 src=fd00:10:244:2::5 dst=fd00:10:244:1::2 sport=8080 dport=38122 packets=1180 bytes=1200013 [OFFLOAD] mark=0 use=2';
const TCP_NOT_OFFLOADED =
  'tcp      6 86399 ESTABLISHED src=10.0.1.2 dst=10.96.10.10 sport=50000 dport=5432 packets=5 bytes=300 src=10.0.2.2 dst=10.0.1.2 sport=5432 dport=50000 packets=4 bytes=250 [ASSURED] mark=0 use=1';
const UDP_UNREPLIED =
  'udp      17 29 src=10.0.1.2 dst=10.96.0.10 sport=53012 dport=53 packets=1 bytes=72 [UNREPLIED] src=10.0.2.9 dst=10.0.1.2 sport=53 dport=53012 packets=0 bytes=0 mark=0 use=1';

// The shipped examples, as the daemon's embedded mode reads them.
function examples(): { services: Service[]; namespaces: Map<string, Namespace> } {
  const text = ['services.yaml', 'namespaces.yaml']
    .map((f) => readFileSync(join(EXAMPLES_DIR, f), 'utf8'))
    .join('\n---\n');
  const parsed = parseManifests(text, 'examples');
  if (!parsed.ok) throw new Error(parsed.error);
  return {
    services: parsed.content.services,
    namespaces: new Map(parsed.content.namespaces.map((n) => [n.name, n])),
  };
}

describe('portStatuses', () => {
  const policy = loadDefaultPolicy();
  const { services, namespaces } = examples();
  const desired = desiredRuleset({
    services,
    namespaces,
    devices: [],
    capabilities: { flowtable: false, reason: 'flowtable probe failed' },
    policy,
  });
  const decisionOf = (s: Service) => effectiveDecision(s, policy, namespaces.get(s.namespace));
  /** The kernel as read back: the desired table without bookkeeping, minus what `edit` removes. */
  const kernelWith = (edit: (r: Ruleset) => void): Ruleset => {
    const k = structuredClone(desired);
    k.services = new Map();
    k.owners = new Map();
    edit(k);
    return k;
  };
  const row = (rows: PortStatus[], service: string, port: string) => {
    const found = rows.find((r) => r.service === service && r.port.startsWith(`${port} `));
    if (!found) throw new Error(`no row ${service} ${port}`);
    return found;
  };
  const iperf3Udp = elementKey({ family: 'ip', address: '10.96.20.20', protocol: 17, port: 5201 });
  const catalog6 = elementKey({ family: 'ip6', address: 'fd00:10:96::1e', protocol: 6, port: 8080 });

  it('one row per Service port, sorted by Service, with decisions from the desired ruleset', () => {
    const rows = portStatuses(
      services,
      desired,
      kernelWith(() => {}),
      null,
      decisionOf,
    );
    const ports = services.reduce((n, s) => n + Math.max(s.ports.length, 1), 0);
    expect(rows).toHaveLength(ports);
    const keys = rows.map((r) => r.service);
    expect(keys).toEqual([...keys].sort());
    expect(row(rows, 'shop/postgres', '5432/TCP')).toEqual({
      service: 'shop/postgres',
      port: '5432/TCP (postgres)',
      decision: 'offload',
      state: 'programmed',
      threshold: 20,
      reason: expect.stringMatching(/^datastore-port-name: /),
      inKernel: true,
      vips: ['clusterIP'],
      offloaded: null,
      offloadedBytes: null,
    });
    expect(row(rows, 'shop/search', '9200/TCP')).toMatchObject({ decision: 'offload', threshold: 200 });
    for (const [service, port] of [
      ['platform/dns', '53/UDP'],
      ['shop/exports', '9000/TCP'],
      ['legacy/ledger', '3306/TCP'],
      ['shop/postgres-headless', '5432/TCP'],
      ['shop/payments', '443/TCP'],
    ] as const) {
      expect(row(rows, service, port)).toMatchObject({
        decision: 'keep',
        threshold: null,
        inKernel: null,
        offloaded: null,
      });
    }
    expect(row(rows, 'legacy/ledger', '3306/TCP').reason).toMatch(/namespace legacy/);
    expect(row(rows, 'shop/exports', '9000/TCP').reason).toMatch(/acceleration=disabled/);
  });

  it('a quarantined Service shows QUARANTINED with the reason on each of its ports', () => {
    const quarantined = new Map([
      [
        'media/iperf3',
        { key: 'media/iperf3', reason: 'the kernel refused its elements: Too many open files' },
      ],
    ]);
    const rows = portStatuses(services, desired, desired, null, decisionOf, quarantined);
    for (const port of ['5201/TCP', '5201/UDP']) {
      expect(row(rows, 'media/iperf3', port)).toMatchObject({
        state: 'quarantined',
        reason: 'QUARANTINED: the kernel refused its elements: Too many open files',
      });
    }
    expect(row(rows, 'shop/postgres', '5432/TCP').state).toBe('programmed');
    expect(formatStatus({ degraded: false, tablePresent: true, quarantined: 1, ports: rows })).toMatch(
      /quarantined Services: 1[\s\S]*media\/iperf3 +5201\/TCP.*QUARANTINED/,
    );
  });

  it('shows each port at its own threshold', () => {
    const rows = portStatuses(
      services,
      desired,
      kernelWith(() => {}),
      null,
      decisionOf,
    );
    expect(row(rows, 'media/edge', '443/UDP')).toMatchObject({
      decision: 'offload',
      threshold: 20,
      inKernel: true,
    });
    expect(row(rows, 'media/edge', '443/TCP')).toMatchObject({
      decision: 'offload',
      threshold: 100,
      inKernel: true,
    });
    const table = formatStatus({ degraded: false, tablePresent: true, ports: rows });
    expect(table).toMatch(/media\/edge\s+443\/TCP \(https\)\s+offload\s+100\s/);
    expect(table).toMatch(/media\/edge\s+443\/UDP \(quic\)\s+offload\s+20\s/);
  });

  it('a port whose element is missing from the kernel is inKernel false; the other ports are unaffected', () => {
    const kernel = kernelWith((k) => k.elements.delete(iperf3Udp));
    const rows = portStatuses(services, desired, kernel, null, decisionOf);
    expect(row(rows, 'media/iperf3', '5201/UDP')).toMatchObject({ inKernel: false, state: 'missing' });
    expect(row(rows, 'media/iperf3', '5201/TCP').inKernel).toBe(true);
    const offloadRows = rows.filter((r) => r.decision === 'offload');
    expect(offloadRows.filter((r) => r.inKernel === false).map((r) => `${r.service} ${r.port}`)).toEqual([
      'media/iperf3 5201/UDP (iperf3-udp)',
    ]);
  });

  it('dual-stack: every ClusterIP of the port must be in the kernel', () => {
    const rows = portStatuses(
      services,
      desired,
      kernelWith((k) => k.elements.delete(catalog6)),
      null,
      decisionOf,
    );
    expect(row(rows, 'shop/catalog', '8080/TCP').inKernel).toBe(false);
  });

  it('an element jumping to another threshold is not "in kernel"', () => {
    const key = elementKey({ family: 'ip', address: '10.96.10.40', protocol: 6, port: 9200 });
    const kernel = kernelWith((k) => {
      const e = k.elements.get(key)!;
      k.elements.set(key, { ...e, threshold: 20 });
    });
    const rows = portStatuses(services, desired, kernel, null, decisionOf);
    expect(row(rows, 'shop/search', '9200/TCP').inKernel).toBe(false);
    expect(row(rows, 'shop/postgres', '5432/TCP').inKernel).toBe(true);
  });

  it('no table in the kernel: every offloaded port is inKernel false, kept ports stay null', () => {
    const rows = portStatuses(services, desired, null, null, decisionOf);
    for (const r of rows) expect(r.inKernel).toBe(r.decision === 'offload' ? false : null);
  });

  it('offloaded connections are summed over the port elements (both families, per protocol)', () => {
    const counts = parseOffloaded(
      [
        TCP_OFFLOADED,
        TCP_OFFLOADED_IPERF3,
        TCP_OFFLOADED_IPERF3_2,
        UDP_OFFLOADED,
        TCP6_OFFLOADED,
        TCP_NOT_OFFLOADED,
        UDP_UNREPLIED,
      ].join('\n'),
    );
    const rows = portStatuses(
      services,
      desired,
      kernelWith(() => {}),
      counts,
      decisionOf,
    );
    expect(row(rows, 'media/iperf3', '5201/TCP').offloaded).toBe(2);
    expect(row(rows, 'media/iperf3', '5201/TCP').offloadedBytes).toBe(901605305 + 781204 + 1053002 + 21004);
    expect(row(rows, 'media/iperf3', '5201/UDP').offloadedBytes).toBe(130796576 + 168);
    expect(row(rows, 'shop/postgres', '5432/TCP').offloadedBytes).toBe(0);
    expect(row(rows, 'media/iperf3', '5201/UDP').offloaded).toBe(1);
    expect(row(rows, 'shop/catalog', '8080/TCP').offloaded).toBe(1);
    expect(row(rows, 'shop/postgres', '5432/TCP').offloaded).toBe(0);
    // 10.96.0.10:5201 is no Service port: counted by conntrack, shown nowhere. Kept ports: unknown.
    expect(row(rows, 'platform/dns', '53/TCP').offloaded).toBeNull();
    expect(row(rows, 'platform/dns', '53/TCP').offloadedBytes).toBeNull();
  });

  it("a nodePort connection (to this node's address) counts on its port, with the ClusterIP and load balancer ones", () => {
    const s = loadScenario('vips');
    const vipsDesired = desiredRuleset(scenarioInput(s));
    const line = (dst: string, dport: number, bytes: number) =>
      `tcp      6 src=10.0.9.9 dst=${dst} sport=40000 dport=${dport} packets=10 bytes=${bytes} src=10.244.1.5 dst=10.0.9.9 sport=8443 dport=40000 packets=10 bytes=${bytes} [OFFLOAD] mark=0 use=2`;
    const counts = parseOffloaded(
      [
        line('192.168.50.10', 30443, 100), // a node address, the https nodePort
        line('10.0.0.7', 30443, 200), // the other node address
        line('10.96.40.1', 443, 300), // the ClusterIP
        line('203.0.113.40', 443, 400), // the load balancer IP
        line('10.9.9.9', 30443, 800), // not this node: kube-proxy does not answer there either
      ].join('\n'),
    );
    const rows = portStatuses(s.services, vipsDesired, vipsDesired, counts, (svc) =>
      effectiveDecision(svc, policy, s.namespaces.get(svc.namespace)),
    );
    const https = row(rows, 'ingress/controller', '443/TCP');
    expect(https).toMatchObject({ offloaded: 4, offloadedBytes: 2 * (100 + 200 + 300 + 400) });
    expect(https.vips).toEqual(
      expect.arrayContaining(['clusterIP', 'externalIP', 'loadBalancer', 'nodePort']),
    );
  });
});

describe('formatStatus', () => {
  const ports: PortStatus[] = [
    {
      service: 'media/iperf3',
      port: '5201/TCP (iperf3)',
      decision: 'offload',
      state: 'programmed',
      threshold: 20,
      reason: 'iperf3: iperf3 bulk transfer',
      inKernel: true,
      offloaded: 3,
      offloadedBytes: 841605305,
    },
    {
      service: 'media/iperf3',
      port: '5201/UDP (iperf3-udp)',
      decision: 'offload',
      state: 'missing',
      threshold: 20,
      reason: 'iperf3: iperf3 bulk transfer',
      inKernel: false,
      offloaded: null,
      offloadedBytes: null,
    },
    {
      service: 'platform/dns',
      port: '53/UDP (dns)',
      decision: 'keep',
      state: 'keep',
      threshold: null,
      reason: 'dns: DNS is request/response; flows end before any threshold',
      inKernel: null,
      offloaded: null,
      offloadedBytes: null,
    },
  ];

  it('says DEGRADED with the reason when the kernel has no flowtables', () => {
    const status: NodeStatus = {
      degraded: true,
      degradedReason: 'flowtable probe failed: Error: Could not process rule: No such file or directory',
      tablePresent: true,
      ports,
    };
    const lines = formatStatus(status).split('\n');
    expect(lines[0]).toBe(
      'node: DEGRADED (flowtable probe failed: Error: Could not process rule: No such file or directory): rules are kept, nothing is offloaded',
    );
    expect(lines[1]).toBe('table inet slipstream: present');
    expect(lines[3]).toMatch(
      /^SERVICE\s+PORT\s+DECISION\s+THRESHOLD\s+IN KERNEL\s+VIPS\s+OFFLOADED\s+BYTES\s+REASON$/,
    );
    expect(lines[4]).toMatch(
      /^media\/iperf3\s+5201\/TCP \(iperf3\)\s+offload\s+20\s+yes\s+-\s+3\s+842M\s+iperf3: /,
    );
    expect(lines[5]).toMatch(
      /^media\/iperf3\s+5201\/UDP \(iperf3-udp\)\s+offload\s+20\s+NO\s+-\s+-\s+-\s+iperf3: /,
    );
    expect(lines[6]).toMatch(/^platform\/dns\s+53\/UDP \(dns\)\s+keep\s+-\s+-\s+-\s+-\s+-\s+dns: /);
    expect(lines).toHaveLength(7);
  });

  it('lists the hooked devices and the links left out, with the reason', () => {
    const lines = formatStatus({
      degraded: false,
      tablePresent: true,
      devices: {
        hooked: ['eth0', 'vc'],
        excluded: [
          { name: 'lo', reason: 'loopback: forwarded traffic never enters through it' },
          { name: 'docker0', reason: 'matched by --flowtable-exclude docker*' },
        ],
      },
      ports: [],
    }).split('\n');
    expect(lines.slice(1, 5)).toEqual([
      'table inet slipstream: present',
      'flowtable devices: eth0, vc',
      '  not hooked: lo: loopback: forwarded traffic never enters through it',
      '  not hooked: docker0: matched by --flowtable-exclude docker*',
    ]);
  });

  it('prints bytes short', () => {
    expect([0, 999, 1000, 15_300, 841_605_305, 2e12].map(shortBytes)).toEqual([
      '0',
      '999',
      '1.0K',
      '15K',
      '842M',
      '2.0T',
    ]);
  });

  it('without a reason, and with no table', () => {
    const text = formatStatus({ degraded: true, tablePresent: false, ports: [] });
    expect(text).toContain('node: DEGRADED (no flowtable support)');
    expect(text).toContain('table inet slipstream: ABSENT');
  });

  it('a capable node is not DEGRADED', () => {
    const text = formatStatus({ degraded: false, tablePresent: true, ports });
    expect(text.split('\n')[0]).toBe('node: flowtable offload available');
    expect(text).not.toContain('DEGRADED');
  });

  it('lays out 200,000 rows (a Service with every port) without exhausting the stack', () => {
    const many = Array.from({ length: 200_000 }, (_, i) => ({ ...ports[2]!, port: `${i}/UDP` }));
    const lines = formatStatus({ degraded: false, tablePresent: true, ports: many }).split('\n');
    expect(lines).toHaveLength(200_004);
  });

  it('cuts long reasons to the given width with an ellipsis', () => {
    const long = { ...ports[0]!, reason: 'x'.repeat(200) };
    const last = formatStatus({ degraded: false, tablePresent: true, ports: [long] }, 30)
      .split('\n')
      .at(-1)!;
    expect(last.endsWith(`${'x'.repeat(29)}…`)).toBe(true);
  });
});
