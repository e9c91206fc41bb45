// `slipstream status`: for every Service port, the decision, threshold and reason, whether this
// node's kernel holds it, and how many of its connections are offloaded right now with their
// bytes; and which links the flowtable hooks, and why the others are left out. The rows are
// computed by a pure function from (desired ruleset, kernel ruleset, conntrack counts); reading
// the kernel and conntrack happens at the edges (daemon.ts, status-main.ts).

import type { Decision } from '@slipstream/shared/core/decide';
import { serviceVips, type VipKind } from '@slipstream/shared/core/desired-ruleset';
import { elementKey, type Ruleset } from '@slipstream/shared/core/ruleset';
import type { Service, ServicePort } from '@slipstream/shared/core/service';
import { flowKey, groupByElement, type OffloadedFlows } from './conntrack.ts';
import type { ExcludedDevice } from './devices.ts';

export type PortState =
  /** Offloaded: every element of this port is in the kernel with its threshold. */
  | 'programmed'
  /** The kernel refused this Service's part (or computing it failed): kept out, retried with backoff. */
  | 'quarantined'
  /** Offload was decided but nothing of it is (yet) in the kernel: see `problems` and the reason. */
  | 'missing'
  /** Not offloaded (the decision says why). */
  | 'keep';

export interface PortStatus {
  service: string;
  port: string;
  decision: 'offload' | 'keep';
  state: PortState;
  threshold: number | null;
  reason: string;
  /** Why part of this Service's input was ignored (an invalid ClusterIP, an ignored annotation). */
  problems?: string;
  /** The kinds of address whose elements for this port are in the kernel (ClusterIP, external IP, load balancer IP, nodePort). */
  vips?: VipKind[];
  /** Every element of this port is in the kernel with the right threshold (null: nothing to program). */
  inKernel: boolean | null;
  /** Connections to this port's ClusterIPs that conntrack marks [OFFLOAD] now (null: unknown). */
  offloaded: number | null;
  /** The bytes those connections carried, both directions (null: unknown). */
  offloadedBytes: number | null;
}

export interface DeviceStatus {
  /** What the flowtable hooks (the kernel's own list when it was read). */
  hooked: string[];
  /** Links left out, with the reason (the daemon's choice; absent when computed without it). */
  excluded?: ExcludedDevice[];
}

export interface NodeStatus {
  degraded: boolean;
  degradedReason?: string;
  tablePresent: boolean;
  /** Where the rows come from: the running daemon, or computed from the sources by `status` itself. */
  source?: 'daemon' | 'local';
  /** Services kept out of the kernel (the daemon's quarantine). */
  quarantined?: number;
  /** The daemon's readiness, when the rows come from it. */
  ready?: { ready: boolean; reason: string };
  /** The flowtable's devices (absent without a flowtable). */
  devices?: DeviceStatus;
  ports: PortStatus[];
}

/** A quarantined Service, as the rows show it. */
export interface QuarantineView {
  key: string;
  reason: string;
}

const PROTO_NUMBER: Record<string, number> = { TCP: 6, UDP: 17 };

export { flowKey };

/** Which kinds of address reach this port through the kernel now. */
function vipKinds(service: Service, port: ServicePort, kernel: Ruleset | null): VipKind[] {
  if (!kernel || port.protocol === 'SCTP') return [];
  const protocol = PROTO_NUMBER[port.protocol]!;
  const kinds = new Set<VipKind>();
  for (const vip of serviceVips(service).vips) {
    if (
      kernel.elements.has(elementKey({ family: vip.family, address: vip.address, protocol, port: port.port }))
    ) {
      kinds.add(vip.kind);
    }
  }
  if (
    port.nodePort !== undefined &&
    kernel.elements.has(elementKey({ family: 'np', address: '', protocol, port: port.nodePort }))
  ) {
    kinds.add('nodePort');
  }
  return [...kinds];
}

/** The rows, one per Service port, from what is wanted, what the kernel holds and conntrack. */
export function portStatuses(
  services: readonly Service[],
  desired: Ruleset,
  kernel: Ruleset | null,
  offloaded: OffloadedFlows | null,
  /** The full decision (with per-port reasons); the ruleset keeps only the Service-level line. */
  decisionOf: (service: Service) => Decision,
  quarantined: ReadonlyMap<string, QuarantineView> = new Map(),
): PortStatus[] {
  const rows: PortStatus[] = [];
  const byElement = offloaded ? groupByElement(desired, offloaded, (e) => (e ? elementKey(e) : null)) : null;
  const sorted = [...services].sort((a, b) =>
    `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`),
  );
  for (const service of sorted) {
    const key = `${service.namespace}/${service.name}`;
    const held = quarantined.get(key);
    const full = decisionOf(service);
    const entry = desired.services.get(key);
    if (!entry && !held) continue;
    const d = entry?.decision ?? full;
    const problems = [
      ...(entry?.skipped ?? []).map((x) => `${x.what}: ${x.reason}`),
      ...(full.warnings ?? []).map((w) => `${w.key}: ${w.message}`),
    ].join('; ');
    const ports = service.ports.length > 0 ? service.ports : [];
    if (ports.length === 0) {
      rows.push({
        service: key,
        port: '-',
        decision: 'keep',
        state: held ? 'quarantined' : 'keep',
        threshold: null,
        reason: held?.reason ?? d.reason,
        ...(problems ? { problems } : {}),
        inKernel: null,
        offloaded: null,
        offloadedBytes: null,
      });
      continue;
    }
    for (const p of ports) {
      const on = d.offload.find((o) => o.port === p.port && o.protocol === p.protocol);
      const proto = PROTO_NUMBER[p.protocol];
      // The port's elements: one per address (ClusterIP, external, load balancer), and its nodePort.
      const elements = (entry?.elements ?? [])
        .map((k) => desired.elements.get(k))
        .filter(
          (e) =>
            e !== undefined &&
            e.protocol === proto &&
            (e.family === 'np' ? e.port === p.nodePort : e.port === p.port),
        );
      const kinds = vipKinds(service, p, kernel);
      let inKernel: boolean | null = null;
      let count: number | null = null;
      let bytes: number | null = null;
      if (on) {
        inKernel =
          kernel !== null &&
          elements.length > 0 &&
          elements.every((e) => kernel.elements.get(elementKey(e!))?.threshold === e!.threshold);
        if (byElement) {
          count = 0;
          bytes = 0;
          for (const e of elements) {
            const flows = byElement.get(elementKey(e!));
            count += flows?.connections ?? 0;
            bytes += flows?.bytes ?? 0;
          }
        }
      }
      // Per-port reason when the decision was made per port; else the Service-level line.
      const perPort = full.ports.find((x) => x.port === p.port && x.protocol === p.protocol);
      const portReason =
        perPort && (full.source === 'policy' || full.source === 'user' || full.source === 'hints')
          ? `${perPort.rule}: ${perPort.reason}`
          : d.reason;
      const state: PortState = held ? 'quarantined' : !on ? 'keep' : inKernel ? 'programmed' : 'missing';
      rows.push({
        service: key,
        port: `${p.port}/${p.protocol}${p.name ? ` (${p.name})` : ''}`,
        decision: on ? 'offload' : 'keep',
        state,
        threshold: on ? on.threshold : null,
        reason: held ? `QUARANTINED: ${held.reason}` : portReason,
        ...(problems ? { problems } : {}),
        inKernel,
        vips: on ? kinds : [],
        offloaded: count,
        offloadedBytes: bytes,
      });
    }
  }
  return rows;
}

function cell(value: string, width: number): string {
  return value.length > width ? `${value.slice(0, width - 1)}…` : value.padEnd(width);
}

/** 1234567 -> `1.2M` (decimal units, like `ip -h`). */
export function shortBytes(n: number): string {
  if (n < 1000) return String(n);
  const units = ['K', 'M', 'G', 'T', 'P'];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)}${units[u]}`;
}
export const VIP_TEXT: Record<VipKind, string> = {
  clusterIP: 'cluster',
  externalIP: 'external',
  loadBalancer: 'lb',
  nodePort: 'nodeport',
};

const STATE_TEXT: Record<PortState, string> = {
  programmed: 'yes',
  quarantined: 'QUARANTINED',
  missing: 'NO',
  keep: '-',
};

/** Fixed-width columns as wide as their widest cell (at most 40), the last one `lastWidth`. */
export function formatTable(header: string[], rows: string[][], lastWidth: number): string[] {
  const last = header.length - 1;
  const widths = header.map((h, i) =>
    i === last ? lastWidth : rows.reduce((w, row) => Math.max(w, Math.min(row[i]!.length, 40)), h.length),
  );
  const render = (row: string[]) =>
    row
      .map((c, i) => cell(c, widths[i]!))
      .join('  ')
      .trimEnd();
  return [render(header), ...rows.map(render)];
}

/** The table for people. */
export function formatStatus(status: NodeStatus, reasonWidth = 70): string {
  const head = status.degraded
    ? `node: DEGRADED (${status.degradedReason ?? 'no flowtable support'}): rules are kept, nothing is offloaded`
    : 'node: flowtable offload available';
  const lines = [
    head,
    status.tablePresent ? 'table inet slipstream: present' : 'table inet slipstream: ABSENT',
  ];
  if (status.source === 'local')
    lines.push('(no daemon answered: computed from the sources; quarantine unknown)');
  if (status.ready && !status.ready.ready) lines.push(`daemon: NOT READY: ${status.ready.reason}`);
  if (status.quarantined) lines.push(`quarantined Services: ${status.quarantined}`);
  if (status.devices) {
    lines.push(`flowtable devices: ${status.devices.hooked.join(', ') || '(none)'}`);
    for (const d of status.devices.excluded ?? []) lines.push(`  not hooked: ${d.name}: ${d.reason}`);
  }
  lines.push('');
  const header = [
    'SERVICE',
    'PORT',
    'DECISION',
    'THRESHOLD',
    'IN KERNEL',
    'VIPS',
    'OFFLOADED',
    'BYTES',
    'REASON',
  ];
  const rows = status.ports.map((r) => [
    r.service,
    r.port,
    r.decision,
    r.threshold === null ? '-' : String(r.threshold),
    STATE_TEXT[r.state],
    r.vips && r.vips.length > 0 ? r.vips.map((k) => VIP_TEXT[k]).join(',') : '-',
    r.offloaded === null ? '-' : String(r.offloaded),
    r.offloadedBytes === null || r.offloadedBytes === undefined ? '-' : shortBytes(r.offloadedBytes),
    r.reason,
  ]);
  for (const line of formatTable(header, rows, reasonWidth)) lines.push(line);
  const problems = new Map<string, string>();
  for (const r of status.ports) if (r.problems) problems.set(r.service, r.problems);
  if (problems.size > 0) {
    lines.push('', 'input ignored:');
    for (const [service, text] of problems) lines.push(`  ${service}: ${text}`);
  }
  return lines.join('\n');
}
