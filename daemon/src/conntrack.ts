// Reading conntrack for what is offloaded now, at a bounded cost: `conntrack -L --status OFFLOAD`
// (the tool filters by status, so only offloaded entries cross the pipe), read line by line
// (memory stays flat however large the table), stopped after `maxEntries` lines or `timeoutMs`.
// Counts are by original destination (the ClusterIP and port a client connected to, before
// kube-proxy's DNAT), which is what Slipstream's map elements are keyed by; the flowtable's
// `counter` flag keeps packets and bytes counting after offload. One parser for conntrack's text
// lines: status, the metrics and eviction all count with it.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { type Element, elementHit, type Ruleset } from '@slipstream/shared/core/ruleset';

/** Key under which conntrack counts are kept: `<address> <protocol number> <port>`. */
export function flowKey(address: string, protocol: number, port: number): string {
  return `${address} ${protocol} ${port}`;
}

export interface ConntrackEntry {
  /** The original direction's destination (a ClusterIP before kube-proxy's DNAT). */
  key: string;
  /** Packets and bytes of both directions; 0 when conntrack accounting (nf_conntrack_acct) is off. */
  packets: number;
  bytes: number;
  offloaded: boolean;
}

/** The value after `marker` (up to the next space) from `from` on, and where it ends; null when absent. */
function valueAfter(line: string, marker: string, from: number): [string, number] | null {
  const at = line.indexOf(marker, from);
  if (at < 0) return null;
  const start = at + marker.length;
  const end = line.indexOf(' ', start);
  return [line.slice(start, end < 0 ? line.length : end), end < 0 ? line.length : end];
}

function numberAfter(line: string, marker: string, from: number): [number, number] {
  const v = valueAfter(line, marker, from);
  if (!v) return [0, from];
  const n = Number(v[0]);
  return [Number.isFinite(n) ? n : 0, v[1]];
}

/**
 * One `conntrack -L` line (`tcp 6 [timeout] [state] src=… dst=… sport=… dport=… [packets=… bytes=…]
 * src=… … [OFFLOAD] …`), or null. A scan, not a regular expression per field: a node may list
 * hundreds of thousands of lines.
 */
export function parseConntrackLine(line: string): ConntrackEntry | null {
  let i = 0;
  while (i < line.length && line[i] === ' ') i++;
  i = line.indexOf(' ', i);
  if (i < 0) return null;
  while (i < line.length && line[i] === ' ') i++;
  let protocol = 0;
  for (; i < line.length && line[i]! >= '0' && line[i]! <= '9'; i++)
    protocol = protocol * 10 + (line.charCodeAt(i) - 48);
  const dst = valueAfter(line, ' dst=', i);
  const dport = valueAfter(line, ' dport=', dst?.[1] ?? i);
  if (!dst || !dport || protocol === 0 || !/^\d+$/.test(dport[0])) return null;
  const [packetsOut, p1] = numberAfter(line, ' packets=', dport[1]);
  const [bytesOut, b1] = numberAfter(line, ' bytes=', dport[1]);
  const [packetsBack] = numberAfter(line, ' packets=', Math.max(p1, b1));
  const [bytesBack] = numberAfter(line, ' bytes=', Math.max(p1, b1));
  return {
    key: flowKey(dst[0], protocol, Number(dport[0])),
    packets: packetsOut + packetsBack,
    bytes: bytesOut + bytesBack,
    offloaded: line.includes('[OFFLOAD]') || line.includes('[HW_OFFLOAD]'),
  };
}

export interface FlowCount {
  connections: number;
  /** Both directions. */
  packets: number;
  bytes: number;
}

/** Offloaded connections by original destination (`flowKey`). */
export type OffloadedFlows = Map<string, FlowCount>;

/** Adds one entry to `into`. */
export function countEntry(into: OffloadedFlows, entry: ConntrackEntry): void {
  const count = into.get(entry.key);
  if (count) {
    count.connections++;
    count.packets += entry.packets;
    count.bytes += entry.bytes;
  } else into.set(entry.key, { connections: 1, packets: entry.packets, bytes: entry.bytes });
}

/**
 * Offloaded connections grouped by `group` of the element each hits in `ruleset` (undefined: it
 * hits none; a nodePort connection hits by a node address); a null group leaves the flow out.
 */
export function groupByElement(
  ruleset: Pick<Ruleset, 'elements' | 'nodeAddresses'>,
  flows: OffloadedFlows,
  group: (element: Element | undefined) => string | null,
): Map<string, FlowCount> {
  const out = new Map<string, FlowCount>();
  for (const [key, count] of flows) {
    const [address = '', protocol, port] = key.split(' ');
    const name = group(elementHit(ruleset, address, Number(protocol), Number(port)));
    if (name === null) continue;
    const sum = out.get(name) ?? { connections: 0, packets: 0, bytes: 0 };
    sum.connections += count.connections;
    sum.packets += count.packets;
    sum.bytes += count.bytes;
    out.set(name, sum);
  }
  return out;
}

/** The offloaded connections in `conntrack -L` text. */
export function parseOffloaded(text: string): OffloadedFlows {
  const flows: OffloadedFlows = new Map();
  for (const line of text.split('\n')) {
    const entry = parseConntrackLine(line);
    if (entry?.offloaded) countEntry(flows, entry);
  }
  return flows;
}

export interface OffloadReading {
  flows: OffloadedFlows;
  /** Stopped at `maxEntries`: the counts are a lower bound. */
  truncated: boolean;
  durationMs: number;
}

export interface ReadOptions {
  /** Read this network namespace (`ip netns exec`); this one when absent. */
  netns?: string;
  /** Give up after this long (default 5 s): the child is killed. */
  timeoutMs?: number;
  /** Stop after this many entries per family (default 1,000,000). */
  maxEntries?: number;
  /** The conntrack status to list (default OFFLOAD). */
  status?: string;
}

/** Why a reading failed: the tool is missing, it took too long, or it failed. */
export class ConntrackError extends Error {
  override name = 'ConntrackError';
  readonly reason: 'unavailable' | 'timeout' | 'failed';
  constructor(reason: ConntrackError['reason'], message: string) {
    super(message);
    this.reason = reason;
  }
}

function listFamily(family: 'ipv4' | 'ipv6', options: ReadOptions, into: OffloadReading): Promise<void> {
  const prefix = options.netns ? ['ip', 'netns', 'exec', options.netns] : [];
  const [cmd, ...args] = [
    ...prefix,
    'conntrack',
    '-L',
    '-f',
    family,
    '--status',
    options.status ?? 'OFFLOAD',
  ];
  const max = options.maxEntries ?? 1_000_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let seen = 0;
    let stopped: ConntrackError | 'truncated' | null = null;
    const timer = setTimeout(() => {
      stopped = new ConntrackError(
        'timeout',
        `conntrack -L took longer than ${options.timeoutMs ?? 5000} ms`,
      );
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 5000);
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      if (stderr.length < 4096) stderr += c;
    });
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      if (stopped) return;
      if (++seen > max) {
        stopped = 'truncated';
        child.kill('SIGKILL');
        return;
      }
      const entry = parseConntrackLine(line);
      if (entry) countEntry(into.flows, entry);
    });
    child.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new ConntrackError(error.code === 'ENOENT' ? 'unavailable' : 'failed', `${cmd}: ${error.message}`),
      );
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (stopped instanceof ConntrackError) return reject(stopped);
      if (stopped === 'truncated') {
        into.truncated = true;
        return resolve();
      }
      if (code !== 0) {
        const why = stderr.trim().split('\n')[0] ?? '';
        return reject(new ConntrackError('failed', `${cmd} ${args.join(' ')} exited with ${code}: ${why}`));
      }
      resolve();
    });
  });
}

/** Offloaded connections by original destination, both families, at a bounded cost. */
export async function readOffloaded(options: ReadOptions = {}): Promise<OffloadReading> {
  const started = performance.now();
  const reading: OffloadReading = { flows: new Map(), truncated: false, durationMs: 0 };
  await listFamily('ipv4', options, reading);
  await listFamily('ipv6', options, reading);
  reading.durationMs = performance.now() - started;
  return reading;
}

/** The offloaded flows, or null when conntrack cannot be read (the reason goes to `onError`). */
export async function readOffloadedFlows(
  options: ReadOptions = {},
  onError?: (error: ConntrackError) => void,
): Promise<OffloadedFlows | null> {
  try {
    return (await readOffloaded(options)).flows;
  } catch (error) {
    onError?.(asConntrackError(error));
    return null;
  }
}

function asConntrackError(error: unknown): ConntrackError {
  return error instanceof ConntrackError ? error : new ConntrackError('failed', String(error));
}

export interface SamplingOptions extends ReadOptions {
  periodMs: number;
  /** Nothing can be offloaded now (a degraded kernel): an empty reading, without running conntrack. */
  idle?: () => boolean;
  onReading: (reading: OffloadReading) => void;
  onFailure: (error: ConntrackError) => void;
}

/**
 * Samples what is offloaded now, at once and then every `periodMs`, never two readings at a time
 * (a slow one delays the next): a scrape never waits for conntrack. Returns the stop function.
 */
export function sampleOffloaded(options: SamplingOptions): () => void {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const once = async () => {
    try {
      if (options.idle?.()) options.onReading({ flows: new Map(), truncated: false, durationMs: 0 });
      else options.onReading(await readOffloaded(options));
    } catch (error) {
      options.onFailure(asConntrackError(error));
    }
    if (!stopped) {
      timer = setTimeout(() => void once(), options.periodMs);
      timer.unref();
    }
  };
  void once();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** Concurrent callers share the read in flight; the next call after it settles reads again. */
export class SharedRead<T> {
  readonly #read: () => Promise<T>;
  #inFlight: Promise<T> | null = null;

  constructor(read: () => Promise<T>) {
    this.#read = read;
  }

  read(): Promise<T> {
    if (!this.#inFlight) {
      this.#inFlight = this.#read().finally(() => {
        this.#inFlight = null;
      });
    }
    return this.#inFlight;
  }
}
