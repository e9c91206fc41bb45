// Helpers of the daemon benchmark: a private network namespace (always removed), the nft CLI in
// it (the independent observer), an NftRunner that times every libnftables run, and statistics.

import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { NftRunner } from '../../daemon/src/kernel.ts';

export interface Netns {
  readonly name: string;
  /** `/run/netns/NAME`, for nftables-napi. */
  readonly path: string;
  /** `ip netns exec NAME nft ARGS...`; stdout as text; throws on a non-zero exit. */
  nft(args: string[], input?: string): string;
  /** Like `nft` but returns the exit status and the wall time of the whole command (spawn included). */
  timedNft(args: string[]): { status: number | null; ms: number; stderr: string };
  /** Starts a child process inside the namespace, stdio piped (killed by `remove`). */
  spawn(command: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess;
  /** Kills the children this helper started, then deletes the namespace. Idempotent. */
  remove(): Promise<void>;
}

const MAX_BUFFER = 1024 * 1024 * 1024;

/** Creates `slipstream-bench-<random>`; removed on `remove()`, on exit, and on SIGINT/SIGTERM. */
export function createNetns(): Netns {
  const name = `slipstream-bench-${randomBytes(4).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  const children = new Set<ChildProcess>();
  let removed = false;

  const removeSync = () => {
    if (removed) return;
    removed = true;
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    try {
      execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  };
  const onSignal = (signal: NodeJS.Signals) => {
    removeSync();
    detach();
    process.kill(process.pid, signal);
  };
  const detach = () => {
    process.off('exit', removeSync);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
  process.on('exit', removeSync);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  return {
    name,
    path: `/run/netns/${name}`,
    nft(args, input) {
      return execFileSync('ip', ['netns', 'exec', name, 'nft', ...args], {
        maxBuffer: MAX_BUFFER,
        stdio: ['pipe', 'pipe', 'pipe'],
        ...(input !== undefined ? { input } : {}),
      }).toString();
    },
    timedNft(args) {
      const t0 = performance.now();
      const r = spawnSync('ip', ['netns', 'exec', name, 'nft', ...args], {
        maxBuffer: MAX_BUFFER,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const ms = performance.now() - t0;
      return { status: r.status, ms, stderr: r.stderr?.toString() ?? '' };
    },
    spawn(command, args, env) {
      const child = spawn('ip', ['netns', 'exec', name, command, ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: env ?? process.env,
      });
      child.stderr?.resume();
      children.add(child);
      child.once('exit', () => children.delete(child));
      return child;
    },
    async remove() {
      for (const child of children) {
        if (child.exitCode !== null || child.signalCode !== null) continue;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await once(child, 'exit');
        clearTimeout(timer);
      }
      removeSync();
      detach();
    },
  };
}

/** Stops a child: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs = 5000): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return code;
}

export type RunKind = 'probe' | 'read' | 'write' | 'other';

export interface RunRecord {
  kind: RunKind;
  /** performance.now() when the runner was called. */
  start: number;
  /** After JSON.stringify of the command object (done here, so that it is timed apart). */
  serialized: number;
  end: number;
  bytes: number;
  ok: boolean;
}

function kindOf(commands: string | object, check: boolean): RunKind {
  if (check) return 'probe';
  // nft text: the kernel edge writes large element batches as text (`add …`, `delete …`).
  if (typeof commands === 'string')
    return /^(add|delete|flush) /.test(commands) ? 'write' : /^list /.test(commands) ? 'read' : 'other';
  const items = (commands as { nftables?: object[] }).nftables;
  if (!items) return 'other';
  if (items.every((i) => 'list' in i)) return 'read';
  return 'write';
}

/**
 * An NftRunner over nftables-napi's NftContext that records every run. It serializes command
 * objects itself (NftContext.run accepts the same text), so that JSON.stringify and the
 * libnftables run (parse, evaluation, netlink, kernel commit) are timed apart.
 */
export class TimingRunner implements NftRunner {
  readonly #inner: NftRunner;
  readonly records: RunRecord[] = [];

  constructor(inner: NftRunner) {
    this.#inner = inner;
  }

  async run(commands: string | object, options?: { check?: boolean; release?: boolean }): Promise<unknown> {
    const record: RunRecord = {
      kind: kindOf(commands, options?.check === true),
      start: performance.now(),
      serialized: 0,
      end: 0,
      bytes: 0,
      ok: false,
    };
    this.records.push(record);
    const text = typeof commands === 'string' ? commands : JSON.stringify(commands);
    record.serialized = performance.now();
    record.bytes = text.length;
    try {
      const out = await this.#inner.run(text, options);
      record.ok = true;
      return out;
    } finally {
      record.end = performance.now();
    }
  }

  get portId(): number | undefined {
    return this.#inner.portId;
  }

  close(): void {
    this.#inner.close();
  }
}

// --- statistics ----------------------------------------------------------------------------

/** Nearest-rank percentile (p in 0..100) of unsorted values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function round(value: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export interface Spread {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function spread(values: readonly number[], digits = 2): Spread {
  const mean = values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
  return {
    n: values.length,
    min: round(Math.min(...values), digits),
    p50: round(percentile(values, 50), digits),
    p90: round(percentile(values, 90), digits),
    p99: round(percentile(values, 99), digits),
    max: round(Math.max(...values), digits),
    mean: round(mean, digits),
  };
}

// --- an independent single-element read ------------------------------------------------------

/**
 * A tiny netlink client (Python's AF_NETLINK socket, run inside the namespace): one
 * NFT_MSG_GETSETELEM request per element, without NLM_F_DUMP, so the kernel looks the key up in
 * the map itself (nft_get_set_elem) and answers with the element or ENOENT. libnftables'
 * `get element` (nft 1.0.6) first dumps the whole set into its cache: ~150 ms at 20,000
 * elements on this machine, which would measure nft, not the daemon.
 *
 * Protocol on stdin/stdout, one line each: `ID MODE TABLE MAP ADDR PROTO PORT [ADDR PROTO PORT ...]`
 * -> `ID ok NS CHAIN[,CHAIN...]` (NS: CLOCK_MONOTONIC in ns when all were found; CHAIN: the jump
 * target of each element) | `ID missing` | `ID error TEXT`. MODE `once` looks up once; a number
 * polls (every `pollMs`, in the helper, independent of Node's event loop) for up to that many ms.
 * Keys are ipv4_addr . inet_proto . inet_service (3 registers of 4 bytes).
 */
const GETSETELEM_PY = String.raw`
import os, socket, struct, sys, time
POLL_S = float(sys.argv[1]) / 1000
NFT_SUBSYS = 10
GET, NEW = 13, 12
NESTED = 0x8000
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
sock.bind((0, 0))
seq = 0
def attr(t, payload):
    n = 4 + len(payload)
    return struct.pack('=HH', n, t) + payload + b'\0' * ((4 - n % 4) % 4)
def chain_of(msg):
    i = msg.find(b'threshold-')
    return msg[i:msg.index(b'\0', i)].decode() if i >= 0 else '?'
def lookup(table, name, addr, proto, port):
    global seq
    seq += 1
    key = socket.inet_aton(addr) + struct.pack('=B3x', proto) + struct.pack('>H2x', port)
    elems = attr(3 | NESTED, attr(1 | NESTED, attr(1 | NESTED, attr(1, key))))
    body = struct.pack('=BBH', 1, 0, 0) + attr(1, table.encode() + b'\0') + attr(2, name.encode() + b'\0') + elems
    sock.send(struct.pack('=IHHII', 16 + len(body), (NFT_SUBSYS << 8) | GET, 1 | 4, seq, 0) + body)
    found = None
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            n, typ, _flags, s, _pid = struct.unpack_from('=IHHII', data, off)
            if s == seq:
                if typ == 2:
                    err = struct.unpack_from('=i', data, off + 16)[0]
                    if err == 0:
                        return found
                    if err == -2:
                        return None
                    raise OSError(-err, os.strerror(-err))
                if typ == (NFT_SUBSYS << 8) | NEW:
                    found = chain_of(data[off:off + n])
            off += (n + 3) & ~3
def lookup_all(table, name, keys):
    chains = []
    for i in range(0, len(keys), 3):
        c = lookup(table, name, keys[i], int(keys[i + 1]), int(keys[i + 2]))
        if c is None:
            return None
        chains.append(c)
    return chains
for line in sys.stdin:
    parts = line.split()
    if not parts:
        continue
    ident, mode, table, name, keys = parts[0], parts[1], parts[2], parts[3], parts[4:]
    try:
        if mode == 'once':
            chains = lookup_all(table, name, keys)
            out = ident + (' ok 0 ' + ','.join(chains) if chains is not None else ' missing')
        else:
            deadline = time.monotonic() + float(mode) / 1000
            while True:
                chains = lookup_all(table, name, keys)
                now = time.monotonic_ns()
                if chains is not None:
                    out = ident + ' ok ' + str(now) + ' ' + ','.join(chains)
                    break
                if now / 1e9 > deadline:
                    out = ident + ' missing'
                    break
                time.sleep(POLL_S)
    except Exception as e:
        out = ident + ' error ' + str(e).replace('\n', ' ')
    sys.stdout.write(out + '\n')
    sys.stdout.flush()
`;

export interface ElementKey {
  address: string;
  protocol: number;
  port: number;
}

/** Looks elements of `inet slipstream` maps up in the kernel, one key at a time (see above). */
export class ElementProbe {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, (line: string) => void>();
  #next = 0;
  #buffer = '';
  #stderr = '';

  /** `pollMs`: the pause between two lookups of `waitFor`. */
  constructor(ns: Netns, pollMs = 0.5) {
    this.#child = ns.spawn('python3', ['-u', '-c', GETSETELEM_PY, String(pollMs)]);
    this.#child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#stderr = (this.#stderr + chunk).slice(-2000);
    });
    this.#child.once('exit', (code) => {
      for (const answer of this.#pending.values()) answer(`error exited (${code}): ${this.#stderr}`);
      this.#pending.clear();
    });
    this.#child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.#buffer += chunk;
      let nl = this.#buffer.indexOf('\n');
      while (nl >= 0) {
        const line = this.#buffer.slice(0, nl);
        this.#buffer = this.#buffer.slice(nl + 1);
        const id = Number(line.slice(0, line.indexOf(' ')));
        this.#pending.get(id)?.(line.slice(line.indexOf(' ') + 1));
        this.#pending.delete(id);
        nl = this.#buffer.indexOf('\n');
      }
    });
  }

  /** The jump targets of all `keys` in map `map`, or null when any of them is not in the kernel. */
  async lookup(map: string, keys: readonly ElementKey[]): Promise<string[] | null> {
    const answer = await this.#ask('once', map, keys);
    return answer?.chains ?? null;
  }

  /**
   * Polls (in the helper) until all `keys` are in the kernel: when they were first seen, as
   * `process.hrtime.bigint()` time (both are CLOCK_MONOTONIC), and their jump targets; null on timeout.
   */
  waitFor(
    map: string,
    keys: readonly ElementKey[],
    timeoutMs = 10_000,
  ): Promise<{ foundNs: bigint; chains: string[] } | null> {
    return this.#ask(String(timeoutMs), map, keys);
  }

  #ask(mode: string, map: string, keys: readonly ElementKey[]) {
    const id = this.#next++;
    const args = keys.map((k) => `${k.address} ${k.protocol} ${k.port}`).join(' ');
    return new Promise<{ foundNs: bigint; chains: string[] } | null>((resolve, reject) => {
      this.#pending.set(id, (answer) => {
        const m = /^ok (\d+) (\S+)$/.exec(answer);
        if (answer === 'missing') resolve(null);
        else if (m) resolve({ foundNs: BigInt(m[1]!), chains: m[2]!.split(',') });
        else reject(new Error(`element probe: ${answer}`));
      });
      if (this.#child.exitCode !== null) reject(new Error(`element probe exited: ${this.#stderr}`));
      else this.#child.stdin!.write(`${id} ${mode} slipstream ${map} ${args}\n`);
    });
  }

  async close(): Promise<void> {
    this.#child.stdin!.end();
    await stopChild(this.#child, 2000);
  }
}
