// Folding the nodes' status rows into one row per Service port: majority decision, N/M, the
// missing and QUARANTINED nodes with reasons, sums, and the table.

import { describe, expect, it } from 'vitest';
import { fleetStatus, formatFleetStatus, type NodeReport } from './fleet-status.ts';
import type { NodeStatus, PortStatus } from './status.ts';

const row = (over: Partial<PortStatus> = {}): PortStatus => ({
  service: 'shop/postgres',
  port: '5432/TCP',
  decision: 'offload',
  state: 'programmed',
  threshold: 20,
  reason: 'datastore',
  inKernel: true,
  vips: ['clusterIP'],
  offloaded: 1,
  offloadedBytes: 1000,
  ...over,
});

const node = (name: string, ports: PortStatus[], over: Partial<NodeStatus> = {}): NodeReport => ({
  node: name,
  pod: `daemon-${name}`,
  status: { degraded: false, tablePresent: true, source: 'daemon', ports, ...over },
});

describe('fleetStatus', () => {
  it('sums the offloaded connections and bytes, and unions the VIP kinds, over the nodes', () => {
    const fleet = fleetStatus(
      [
        node('b', [row({ offloaded: 2, offloadedBytes: 500, vips: ['clusterIP', 'nodePort'] })]),
        node('a', [row()]),
        node('c', [row({ offloaded: null, offloadedBytes: null })]),
      ],
      [],
    );
    expect(fleet.answered).toEqual(['a', 'b', 'c']);
    expect(fleet.ports).toEqual([
      {
        service: 'shop/postgres',
        port: '5432/TCP',
        decision: 'offload',
        threshold: 20,
        reason: 'datastore',
        vips: ['clusterIP', 'nodePort'],
        programmed: ['a', 'b', 'c'],
        nodes: 3,
        missing: [],
        quarantined: [],
        disagree: [],
        offloaded: 3,
        offloadedBytes: 1500,
      },
    ]);
  });

  it('names the nodes that lack it, keep it QUARANTINED (with the reason) or hold another decision', () => {
    const fleet = fleetStatus(
      [
        node('a', [row()]),
        node('b', [row({ state: 'missing', inKernel: false })]),
        node('c', [row({ state: 'quarantined', reason: 'QUARANTINED: kernel refused: File exists' })]),
        node('d', []),
        node('e', [row({ decision: 'keep', state: 'keep', threshold: null, reason: 'no hint' })]),
        node('f', [row({ threshold: 100 })]),
      ],
      [],
    );
    const [p] = fleet.ports;
    expect(p).toMatchObject({
      decision: 'offload',
      threshold: 20,
      programmed: ['a', 'f'],
      nodes: 6,
      missing: [
        { node: 'b', reason: 'not in its kernel' },
        { node: 'd', reason: 'the Service is not among its Services' },
      ],
      quarantined: [{ node: 'c', reason: 'kernel refused: File exists' }],
      disagree: [
        { node: 'e', decision: 'keep', threshold: null },
        { node: 'f', decision: 'offload', threshold: 100 },
      ],
    });
    const text = formatFleetStatus(fleet);
    expect(text).toContain(
      '  shop/postgres 5432/TCP: missing on b (not in its kernel), d (the Service is not among its Services); QUARANTINED on c (kernel refused: File exists)',
    );
    expect(text).toContain('  shop/postgres 5432/TCP: e decides keep, f decides offload at 100');
    expect(text.split('\n')).toContainEqual(
      expect.stringMatching(/^shop\/postgres +5432\/TCP +offload\* +20 +2\/6 /),
    );
  });

  it('the majority decides the row; a keep row has no N/M', () => {
    const keep = row({
      decision: 'keep',
      state: 'keep',
      threshold: null,
      reason: 'no hint',
      offloaded: null,
    });
    const fleet = fleetStatus([node('a', [row()]), node('b', [keep]), node('c', [keep])], []);
    expect(fleet.ports[0]).toMatchObject({ decision: 'keep', reason: 'no hint', disagree: [{ node: 'a' }] });
    expect(formatFleetStatus(fleet).split('\n')).toContainEqual(
      expect.stringMatching(/^shop\/postgres +5432\/TCP +keep\* +- +- +cluster +1 /),
    );
  });

  it('keeps one namespace; names the unreachable, degraded and not-ready nodes', () => {
    const fleet = fleetStatus(
      [
        node('a', [row(), row({ service: 'media/iperf3', port: '5201/UDP' })], {
          degraded: true,
          degradedReason: 'no flowtable support',
          ready: { ready: false, reason: 'kernel differs' },
          quarantined: 2,
        }),
      ],
      [{ node: 'z', pod: 'daemon-z', reason: 'no answer within 5s' }],
      'media',
    );
    expect(fleet.ports.map((p) => p.service)).toEqual(['media/iperf3']);
    const lines = formatFleetStatus(fleet).split('\n');
    expect(lines.slice(0, 5)).toEqual([
      'daemons: 1 of 2 answered (a)',
      'UNREACHABLE: z (pod daemon-z): no answer within 5s',
      'DEGRADED (rules kept, nothing offloaded): a (no flowtable support)',
      'NOT READY: a (kernel differs)',
      'quarantined Services: a: 2',
    ]);
  });

  it('two daemons of one node (a rollout) are both counted, each named by its pod', () => {
    const old = node('a', [row({ threshold: 100 })]);
    old.pod = 'daemon-old';
    const fleet = fleetStatus([node('a', [row()]), old, node('b', [row()])], []);
    expect(fleet.answered).toEqual(['a/daemon-a', 'a/daemon-old', 'b']);
    expect(fleet.ports[0]).toMatchObject({
      nodes: 3,
      threshold: 20,
      disagree: [{ node: 'a/daemon-old', threshold: 100 }],
    });
  });
});
