// Reading conntrack for what is offloaded now, at a bounded cost: `conntrack -L --status OFFLOAD`
// (the tool filters by status, so only offloaded entries cross the pipe), read line by line
// (memory stays flat however large the table), stopped after `maxEntries` lines or `timeoutMs`.
// One parser for conntrack's text lines; `status` and the metrics both count with it.

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/** Key under which conntrack counts are kept: `<address> <protocol number> <port>`. */
export function flowKey(address: string, protocol: number, port: number): string {
  return `${address} ${protocol} ${port}`;
}

export interface ConntrackEntry {
  /** The original direction's destination (a ClusterIP before kube-proxy's DNAT). */
  key: string;
  /** Bytes of both directions; 0 when conntrack accounting (nf_conntrack_acct) is off. */
  bytes: number;
  offloaded: boolean;
}

/** One `conntrack -L` line (`tcp 6 431999 ESTABLISHED src=… dst=… sport=… dport=… [bytes=…] … [OFFLOAD] …`), or null. */
export function parseConntrackLine(line: string): ConntrackEntry | null {
  const proto = /^\s*\S+\s+(\d+)\s/.exec(line)?.[1];
  const dst = /\bdst=(\S+)/.exec(line)?.[1];
  const dport = /\bdport=(\d+)/.exec(line)?.[1];
  if (!proto || !dst || !dport) return null;
  let bytes = 0;
  for (const m of line.matchAll(/\bbytes=(\d+)/g)) bytes += Number(m[1]);
  return {
    key: flowKey(dst, Number(proto), Number(dport)),
    bytes,
    offloaded: line.includes('[OFFLOAD]') || line.includes('[HW_OFFLOAD]'),
  };
}

export interface FlowCount {
  connections: number;
  bytes: number;
}

export interface OffloadReading {
  /** Offloaded connections by original destination (`flowKey`). */
  flows: Map<string, FlowCount>;
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
      if (!entry) return;
      const count = into.flows.get(entry.key);
      if (count) {
        count.connections++;
        count.bytes += entry.bytes;
      } else into.flows.set(entry.key, { connections: 1, bytes: entry.bytes });
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
      options.onFailure(
        error instanceof ConntrackError ? error : new ConntrackError('failed', String(error)),
      );
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
