// Offloaded connections as conntrack reports them: how many, and how many packets and bytes they
// carried (the flowtable's `counter` flag keeps those counting after offload), by original
// destination (the ClusterIP and port a client connected to, before kube-proxy's DNAT), which is
// what Slipstream's map elements are keyed by.
//
// One read is one `conntrack -L -u OFFLOAD` per address family (conntrack's own status filter, so
// connections on the slow path are not even printed), parsed line by line while it streams: no
// buffer of the whole table, no regular expression per line. `SharedRead` lets concurrent callers
// (status requests) share one read in flight.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface FlowCount {
  connections: number;
  /** Both directions. */
  packets: number;
  bytes: number;
}

/** By `flowKey` of the original destination. */
export type OffloadedFlows = Map<string, FlowCount>;

/** Key under which counts are kept: `<address> <protocol number> <port>`. */
export function flowKey(address: string, protocol: number, port: number): string {
  return `${address} ${protocol} ${port}`;
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

/** Adds one `conntrack -L` line to `into` when it is an offloaded connection. */
export function addOffloadedLine(into: OffloadedFlows, line: string): void {
  if (!line.includes('OFFLOAD]')) return; // [OFFLOAD] or [HW_OFFLOAD]
  // "tcp      6 src=..." (an offloaded entry has no timeout or state): the protocol number is field 2.
  let i = 0;
  while (i < line.length && line[i] === ' ') i++;
  i = line.indexOf(' ', i);
  if (i < 0) return;
  while (i < line.length && line[i] === ' ') i++;
  let protocol = 0;
  for (; i < line.length && line[i]! >= '0' && line[i]! <= '9'; i++)
    protocol = protocol * 10 + (line.charCodeAt(i) - 48);
  const dst = valueAfter(line, ' dst=', i);
  if (!dst || protocol === 0) return;
  const [port, afterPort] = numberAfter(line, ' dport=', dst[1]);
  const [packetsOut, p1] = numberAfter(line, ' packets=', afterPort);
  const [bytesOut, b1] = numberAfter(line, ' bytes=', afterPort);
  const [packetsBack] = numberAfter(line, ' packets=', Math.max(p1, b1));
  const [bytesBack] = numberAfter(line, ' bytes=', Math.max(p1, b1));
  const key = flowKey(dst[0], protocol, port);
  const count = into.get(key);
  if (count) {
    count.connections++;
    count.packets += packetsOut + packetsBack;
    count.bytes += bytesOut + bytesBack;
  } else {
    into.set(key, { connections: 1, packets: packetsOut + packetsBack, bytes: bytesOut + bytesBack });
  }
}

/** The offloaded connections in `conntrack -L` text. */
export function parseOffloaded(text: string): OffloadedFlows {
  const flows: OffloadedFlows = new Map();
  for (const line of text.split('\n')) addOffloadedLine(flows, line);
  return flows;
}

const READ_TIMEOUT_MS = 30_000;

/** Streams one command's stdout lines into `onLine`; rejects when it cannot run or exits non-zero. */
function streamLines(command: string, args: string[], onLine: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString();
    });
    createInterface({ input: child.stdout, crlfDelay: Number.POSITIVE_INFINITY }).on('line', onLine);
    const timer = setTimeout(() => child.kill('SIGKILL'), READ_TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(' ')}: ${signal ?? `exit ${code}`}: ${stderr.trim()}`));
    });
  });
}

/**
 * Reads the offloaded connections of both families (in a network namespace when given): null
 * when conntrack cannot be read (not installed, no permission), with the reason passed to `onError`.
 */
export async function readOffloaded(
  netns?: string,
  onError?: (reason: string) => void,
): Promise<OffloadedFlows | null> {
  const flows: OffloadedFlows = new Map();
  const prefix = netns ? ['netns', 'exec', netns, 'conntrack'] : [];
  const command = netns ? 'ip' : 'conntrack';
  try {
    await Promise.all(
      ['ipv4', 'ipv6'].map((family) =>
        streamLines(command, [...prefix, '-L', '-f', family, '-u', 'OFFLOAD'], (line) =>
          addOffloadedLine(flows, line),
        ),
      ),
    );
  } catch (error) {
    onError?.((error as Error).message);
    return null;
  }
  return flows;
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
