// `kubectl slipstream status`: the daemons' /status of every node folded into one row per Service
// port: the decision most nodes hold, how many nodes hold it in their kernel and which do not (or
// keep it QUARANTINED, with the reason), the connections offloaded summed over the nodes, and the
// nodes whose decision or threshold differs (a node still on an older policy). Pure: reading the
// daemons is daemon-pods.ts.

import type { VipKind } from '@slipstream/shared/core/desired-ruleset';
import { formatTable, type NodeStatus, type PortStatus, shortBytes, VIP_TEXT } from './status.ts';

/** One daemon's answer. */
export interface NodeReport {
  node: string;
  pod: string;
  status: NodeStatus;
}

/** A daemon that did not answer, and why. */
export interface UnreachableDaemon {
  node: string;
  pod: string;
  reason: string;
}

export interface NodeNote {
  node: string;
  reason: string;
}

/** A node whose row differs from the one most nodes hold. */
export interface NodeDifference {
  node: string;
  decision: 'offload' | 'keep';
  threshold: number | null;
}

export interface FleetPort {
  service: string;
  port: string;
  /** What most answering nodes decided (ties: the first node by name). */
  decision: 'offload' | 'keep';
  threshold: number | null;
  reason: string;
  /** The kinds of address programmed on at least one node. */
  vips: VipKind[];
  /** Nodes whose kernel holds every element of this port with its threshold. */
  programmed: string[];
  /** How many daemons answered (the M of N/M). */
  nodes: number;
  /** Nodes that do not hold it: not in their kernel, or the Service is not among theirs. */
  missing: NodeNote[];
  quarantined: NodeNote[];
  disagree: NodeDifference[];
  /** Summed over the nodes that counted (null: no node could count). */
  offloaded: number | null;
  offloadedBytes: number | null;
}

export interface FleetStatus {
  /** The nodes whose daemon answered, by name. */
  answered: string[];
  unreachable: UnreachableDaemon[];
  degraded: NodeNote[];
  notReady: NodeNote[];
  /** Services each node keeps out of its kernel. */
  quarantinedServices: { node: string; count: number }[];
  ports: FleetPort[];
}

const QUARANTINED = 'QUARANTINED: ';

function sum(values: (number | null | undefined)[]): number | null {
  const known = values.filter((v): v is number => typeof v === 'number');
  return known.length === 0 ? null : known.reduce((a, b) => a + b, 0);
}

/** One row per Service port over all answering nodes; `namespace` keeps only that namespace's Services. */
export function fleetStatus(
  reports: readonly NodeReport[],
  unreachable: readonly UnreachableDaemon[],
  namespace?: string,
): FleetStatus {
  // Two daemons answering for one node (a rollout's old and new pod): each named by its pod.
  const seen = new Map<string, number>();
  for (const r of reports) seen.set(r.node, (seen.get(r.node) ?? 0) + 1);
  const nodes = reports
    .map((r) => ((seen.get(r.node) ?? 0) > 1 ? { ...r, node: `${r.node}/${r.pod}` } : r))
    .sort((a, b) => a.node.localeCompare(b.node));
  const rows = new Map<string, { service: string; port: string; byNode: Map<string, PortStatus> }>();
  for (const r of nodes) {
    for (const row of r.status.ports) {
      if (namespace !== undefined && !row.service.startsWith(`${namespace}/`)) continue;
      const key = `${row.service}\u0000${row.port}`;
      let entry = rows.get(key);
      if (!entry) {
        entry = { service: row.service, port: row.port, byNode: new Map() };
        rows.set(key, entry);
      }
      entry.byNode.set(r.node, row);
    }
  }
  const ports: FleetPort[] = [];
  for (const { service, port, byNode } of rows.values()) {
    // The decision most nodes hold; a node on another policy is named, not outvoted silently.
    const groups = new Map<string, string[]>();
    for (const [node, row] of byNode) {
      const k = `${row.decision}/${row.threshold}`;
      groups.set(k, [...(groups.get(k) ?? []), node]);
    }
    const majority = [...groups.values()].reduce((best, g) => (g.length > best.length ? g : best));
    const first = byNode.get(majority[0]!)!;
    const disagree: NodeDifference[] = [];
    const missing: NodeNote[] = [];
    const quarantined: NodeNote[] = [];
    const programmed: string[] = [];
    const vips = new Set<VipKind>();
    for (const { node } of nodes) {
      const row = byNode.get(node);
      if (!row) {
        missing.push({ node, reason: 'the Service is not among its Services' });
        continue;
      }
      if (row.decision !== first.decision || row.threshold !== first.threshold)
        disagree.push({ node, decision: row.decision, threshold: row.threshold });
      for (const kind of row.vips ?? []) vips.add(kind);
      if (row.state === 'programmed') programmed.push(node);
      else if (row.state === 'quarantined')
        quarantined.push({
          node,
          reason: row.reason.startsWith(QUARANTINED) ? row.reason.slice(QUARANTINED.length) : row.reason,
        });
      else if (row.state === 'missing') missing.push({ node, reason: 'not in its kernel' });
    }
    const all = [...byNode.values()];
    ports.push({
      service,
      port,
      decision: first.decision,
      threshold: first.threshold,
      reason:
        first.state === 'quarantined'
          ? (all.find((r) => r.state !== 'quarantined') ?? first).reason
          : first.reason,
      vips: [...vips],
      programmed,
      nodes: nodes.length,
      missing,
      quarantined,
      disagree,
      offloaded: sum(all.map((r) => r.offloaded)),
      offloadedBytes: sum(all.map((r) => r.offloadedBytes)),
    });
  }
  ports.sort((a, b) => a.service.localeCompare(b.service));
  return {
    answered: nodes.map((r) => r.node),
    unreachable: [...unreachable].sort((a, b) => a.node.localeCompare(b.node)),
    degraded: nodes
      .filter((r) => r.status.degraded)
      .map((r) => ({ node: r.node, reason: r.status.degradedReason ?? 'no flowtable support' })),
    notReady: nodes
      .filter((r) => r.status.ready && !r.status.ready.ready)
      .map((r) => ({ node: r.node, reason: r.status.ready!.reason })),
    quarantinedServices: nodes
      .filter((r) => (r.status.quarantined ?? 0) > 0)
      .map((r) => ({ node: r.node, count: r.status.quarantined! })),
    ports,
  };
}

const notes = (list: NodeNote[]) => list.map((n) => `${n.node} (${n.reason})`).join(', ');

/** The table for people: who answered, then one row per Service port, then the exceptions by node. */
export function formatFleetStatus(fleet: FleetStatus, reasonWidth = 60): string {
  const total = fleet.answered.length + fleet.unreachable.length;
  const lines = [
    `daemons: ${fleet.answered.length} of ${total} answered${fleet.answered.length > 0 ? ` (${fleet.answered.join(', ')})` : ''}`,
  ];
  for (const u of fleet.unreachable) lines.push(`UNREACHABLE: ${u.node} (pod ${u.pod}): ${u.reason}`);
  if (fleet.degraded.length > 0)
    lines.push(`DEGRADED (rules kept, nothing offloaded): ${notes(fleet.degraded)}`);
  if (fleet.notReady.length > 0) lines.push(`NOT READY: ${notes(fleet.notReady)}`);
  if (fleet.quarantinedServices.length > 0)
    lines.push(
      `quarantined Services: ${fleet.quarantinedServices.map((q) => `${q.node}: ${q.count}`).join(', ')}`,
    );
  lines.push('');
  const header = [
    'SERVICE',
    'PORT',
    'DECISION',
    'THRESHOLD',
    'NODES',
    'VIPS',
    'OFFLOADED',
    'BYTES',
    'REASON',
  ];
  const rows = fleet.ports.map((p) => [
    p.service,
    p.port,
    p.disagree.length > 0 ? `${p.decision}*` : p.decision,
    p.threshold === null ? '-' : String(p.threshold),
    p.decision === 'offload' ? `${p.programmed.length}/${p.nodes}` : '-',
    p.vips.length > 0 ? p.vips.map((k) => VIP_TEXT[k]).join(',') : '-',
    p.offloaded === null ? '-' : String(p.offloaded),
    p.offloadedBytes === null ? '-' : shortBytes(p.offloadedBytes),
    p.reason,
  ]);
  // No spread: a cluster's rows can exceed the arguments a call takes.
  for (const line of formatTable(header, rows, reasonWidth)) lines.push(line);
  const partial = fleet.ports.filter((p) => p.missing.length > 0 || p.quarantined.length > 0);
  if (partial.length > 0) {
    lines.push('', 'not on every node:');
    for (const p of partial) {
      const parts = [
        ...(p.missing.length > 0 ? [`missing on ${notes(p.missing)}`] : []),
        ...(p.quarantined.length > 0 ? [`QUARANTINED on ${notes(p.quarantined)}`] : []),
      ];
      lines.push(`  ${p.service} ${p.port}: ${parts.join('; ')}`);
    }
  }
  const split = fleet.ports.filter((p) => p.disagree.length > 0);
  if (split.length > 0) {
    lines.push('', '* nodes disagree (a node on another policy?):');
    for (const p of split) {
      const others = p.disagree.map(
        (d) => `${d.node} decides ${d.decision}${d.threshold === null ? '' : ` at ${d.threshold}`}`,
      );
      lines.push(`  ${p.service} ${p.port}: ${others.join(', ')}`);
    }
  }
  return lines.join('\n');
}
