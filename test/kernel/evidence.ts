/**
 * Parsers for the evidence the kernel scenarios write to $LAB: `conntrack -L` text, `nft -j list ...` JSON,
 * the daemon's JSON log lines and `slipstream status` tables. Shared by the kernel suites and the data-plane
 * benchmark.
 */

export interface CtEntry {
  line: string;
  /** `tcp`, `udp`, ... */
  proto: string;
  /** TCP state (`ESTABLISHED`, `TIME_WAIT`, ...); '' for UDP and for offloaded entries (conntrack omits it). */
  state: string;
  /** Original direction: the client and the ClusterIP it connected to. */
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Reply direction's source: the backend (after kube-proxy's DNAT) and its port. */
  replySrc: string;
  replySport: number;
  /** Packets and bytes of the original direction, of the reply direction, and both. */
  origPackets: number;
  replyPackets: number;
  packets: number;
  origBytes: number;
  /** Bytes of both directions. */
  bytes: number;
  offload: boolean;
}

/** Parses `conntrack -L` output (both families); the first src/dst/sport/dport/packets/bytes are the original direction. */
export function parseConntrack(text: string): CtEntry[] {
  const out: CtEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^(tcp|udp|icmp|icmpv6)\s+\d+\s+(?:\d+\s+)?([A-Z_]+\s+)?src=/.exec(line);
    if (!m) continue;
    const all = (key: string) => [...line.matchAll(new RegExp(`\\b${key}=(\\S+)`, 'g'))].map((x) => x[1]!);
    const packets = all('packets').map(Number);
    const bytes = all('bytes').map(Number);
    out.push({
      line,
      proto: m[1]!,
      state: (m[2] ?? '').trim(),
      src: all('src')[0] ?? '',
      dst: all('dst')[0] ?? '',
      sport: Number(all('sport')[0] ?? Number.NaN),
      dport: Number(all('dport')[0] ?? Number.NaN),
      replySrc: all('src')[1] ?? '',
      replySport: Number(all('sport')[1] ?? Number.NaN),
      origPackets: packets[0] ?? 0,
      replyPackets: packets[1] ?? 0,
      packets: (packets[0] ?? 0) + (packets[1] ?? 0),
      origBytes: bytes[0] ?? 0,
      bytes: (bytes[0] ?? 0) + (bytes[1] ?? 0),
      offload: /\[(HW_)?OFFLOAD\]/.test(line),
    });
  }
  return out;
}

/** The connections whose original destination is `dst` `dport`/`proto`. */
export function connectionsTo(entries: CtEntry[], proto: string, dst: string, dport: number): CtEntry[] {
  return entries.filter((e) => e.proto === proto && e.dst === dst && e.dport === dport);
}

/**
 * The bulk connection to a Service port: of the connections to it, the one that carried the most bytes
 * from the client (iperf3 opens a small control connection next to its data connection). Undefined if none.
 */
const CLOSED = new Set(['TIME_WAIT', 'CLOSE', 'CLOSE_WAIT', 'LAST_ACK', 'FIN_WAIT']);

/** The live connection to a Service port that carried the most bytes. */
export function bulkConnection(
  entries: CtEntry[],
  proto: string,
  dst: string,
  dport: number,
): CtEntry | undefined {
  // A TCP connection that has ended (an earlier flow to the same port) is never the one measured.
  const conns = connectionsTo(entries, proto, dst, dport).filter((c) => !CLOSED.has(c.state));
  return conns.length === 0 ? undefined : conns.reduce((a, b) => (b.origBytes > a.origBytes ? b : a));
}

/** One line that says what conntrack holds for a Service port (for assertion messages). */
export function describeConnections(entries: CtEntry[], proto: string, dst: string, dport: number): string {
  const conns = connectionsTo(entries, proto, dst, dport);
  if (conns.length === 0) return `no ${proto} connection to ${dst}:${dport} in conntrack`;
  return conns
    .map(
      (e) =>
        `${proto} ${e.src}:${e.sport} -> ${dst}:${dport} ${e.state || '-'} packets ${e.origPackets}+${e.replyPackets}` +
        ` bytes ${e.origBytes}${e.offload ? ' [OFFLOAD]' : ''}`,
    )
    .join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// nft -j

interface NftExpr {
  counter?: { packets: number; bytes: number };
  match?: { op: string; left: unknown; right: unknown };
  [key: string]: unknown;
}

export interface NftJson {
  nftables: Array<{
    rule?: {
      family: string;
      table: string;
      chain: string;
      handle: number;
      comment?: string;
      expr: NftExpr[];
    };
    map?: {
      family: string;
      table: string;
      name: string;
      elem?: Array<[{ concat: Array<string | number> }, unknown]>;
    };
    flowtable?: { family: string; table: string; name: string; dev?: string | string[] };
    set?: { family: string; table: string; name: string; elem?: unknown[] };
    chain?: { family: string; table: string; name: string };
    table?: { family: string; name: string };
    [key: string]: unknown;
  }>;
}

function counterOf(expr: NftExpr[]): number | undefined {
  return expr.find((e) => e.counter)?.counter?.packets;
}

/** The packets of every counter rule with a comment in `table`'s chain (the observer's per-Service counters). */
export function commentCounters(json: NftJson, table: string, chain = 'forward'): Record<string, number> {
  const out: Record<string, number> = {};
  for (const o of json.nftables) {
    const r = o.rule;
    if (!r || r.table !== table || r.chain !== chain || r.comment === undefined) continue;
    const packets = counterOf(r.expr);
    if (packets !== undefined) out[r.comment] = packets;
  }
  return out;
}

/** The packets of the first counter in `table`'s `chain`; undefined when there is no such chain or counter. */
export function chainCounter(json: NftJson, table: string, chain: string): number | undefined {
  for (const o of json.nftables) {
    if (o.rule?.table === table && o.rule.chain === chain) {
      const packets = counterOf(o.rule.expr);
      if (packets !== undefined) return packets;
    }
  }
  return undefined;
}

/** Chain names of a table. */
export function chainNames(json: NftJson, table: string): string[] {
  return json.nftables.flatMap((o) => (o.chain?.table === table ? [o.chain.name] : []));
}

/** The elements of a verdict map as `address . proto . port` → verdict text (`jump threshold-20`). */
export function verdictMap(json: NftJson, table: string, map: string): Map<string, string> {
  const out = new Map<string, string>();
  const m = json.nftables.find((o) => o.map?.table === table && o.map.name === map)?.map;
  for (const [key, verdict] of m?.elem ?? []) {
    const v = verdict as Record<string, { target?: string }>;
    const kind = Object.keys(v)[0] ?? '?';
    out.set(key.concat.join(' . '), v[kind]?.target ? `${kind} ${v[kind].target}` : kind);
  }
  return out;
}

/** The elements of a set, as nft -j prints them (addresses are strings). */
export function setElements(json: NftJson, table: string, name: string): unknown[] {
  return json.nftables.find((o) => o.set?.table === table && o.set.name === name)?.set?.elem ?? [];
}

/** The devices of a flowtable, or undefined when it is not there. */
export function flowtableDevices(json: NftJson, table: string, name = 'ft'): string[] | undefined {
  const ft = json.nftables.find((o) => o.flowtable?.table === table && o.flowtable.name === name)?.flowtable;
  if (!ft) return undefined;
  return ft.dev === undefined ? [] : Array.isArray(ft.dev) ? [...ft.dev].sort() : [ft.dev];
}

// ---------------------------------------------------------------------------------------------------------
// daemon log

export interface LogLine {
  time: string;
  level: string;
  msg: string;
  [key: string]: unknown;
}

/** The daemon's JSON log lines (lines that are not JSON, e.g. a crash trace, are kept as `level: 'text'`). */
export function parseLog(text: string): LogLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as LogLine;
      } catch {
        return { time: '', level: 'text', msg: l };
      }
    });
}

/** Log lines that report a failed or refused transaction, or any error. */
/**
 * Syncs that wrote anything but this node's addresses (nodePorts' sets): a link that goes, or goes DOWN,
 * takes its addresses with it, which is one small set change that touches no flowtable and no flow.
 */
export function writesBeyondAddresses(lines: LogLine[]): LogLine[] {
  return lines.filter(
    (l) =>
      l.msg === 'sync' &&
      Number(l.writes) > 0 &&
      !String(l.change ?? '')
        .split('; ')
        .every((part) => /^[+-]\d+ node addresses$/.test(part)),
  );
}

export function failures(lines: LogLine[]): LogLine[] {
  return lines.filter(
    (l) =>
      l.level === 'error' ||
      l.level === 'text' ||
      l.result === 'error' ||
      /refused|failed/i.test(l.msg) ||
      l.retried === true,
  );
}

/** One row of a `slipstream status` table, by column header (`SERVICE`, `PORT`, `OFFLOADED`, `IN KERNEL`, ...). */
export type StatusRow = Record<string, string>;

/**
 * Parses the table `slipstream status` prints: the line starting with `SERVICE` names the columns, and a
 * column runs from where its header starts to where the next header starts (headers are separated by two or
 * more spaces; a header may hold one: `IN KERNEL`). Cells are trimmed; the lines before the header are skipped.
 */
export function parseStatusTable(text: string): StatusRow[] {
  const lines = text.split('\n');
  const at = lines.findIndex((l) => l.startsWith('SERVICE '));
  if (at < 0) return [];
  const columns = [...lines[at]!.matchAll(/\S+(?: \S+)*/g)].map((m) => ({ name: m[0], from: m.index }));
  return lines
    .slice(at + 1)
    .filter((l) => l.trim() !== '')
    .map((line) =>
      Object.fromEntries(
        columns.map((c, i) => [c.name, line.slice(c.from, columns[i + 1]?.from ?? line.length).trim()]),
      ),
    );
}
