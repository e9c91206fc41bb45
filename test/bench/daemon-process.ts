// The daemon as the DaemonSet runs it, for the benchmark's memory and start-up figures: the
// container's command, its node flags, its arguments and its environment are read from
// deploy/base/daemon/daemonset.yaml (so the figures follow the manifest), and only what cannot be
// the same here is replaced: the policy file (the ConfigMap's source, deploy/base/policy.yaml),
// the health and metrics listeners' addresses, the API server (a kubeconfig for the stand-in instead of the
// in-cluster service account) and the network namespace (a private one).
//
// Memory is read from /proc/PID/status (VmRSS, RssAnon, RssFile, VmHWM). A diagnostic run may
// preload daemon-memreport.mjs, which answers SIGUSR2 with process.memoryUsage().

import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { freePort } from '../lib/process.ts';
import { round, stopChild } from './daemon-lab.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DAEMONSET = join(ROOT, 'deploy/base/daemon/daemonset.yaml');
const POLICY = join(ROOT, 'deploy/base/policy.yaml');
const MEMREPORT = fileURLToPath(new URL('./daemon-memreport.mjs', import.meta.url));

interface Container {
  name: string;
  command: string[];
  args?: string[];
  workingDir?: string;
  env?: { name: string; value?: string }[];
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}

/** The DaemonSet's daemon container, as written in the manifest. */
export function daemonContainer(): Container {
  const doc = parse(readFileSync(DAEMONSET, 'utf8')) as {
    spec: { template: { spec: { containers: Container[] } } };
  };
  const found = doc.spec.template.spec.containers.find((c) => c.name === 'daemon');
  if (!found) throw new Error(`${DAEMONSET}: no daemon container`);
  return found;
}

export interface DaemonShape {
  /** node's own flags (between `node` and the script). */
  nodeFlags: string[];
  /** The script, relative to the image's working directory (the repository root here). */
  entry: string;
  args: string[];
  /** The container's plain `value` variables (fieldRef ones have no meaning outside a Pod). */
  env: Record<string, string>;
}

export function daemonSetShape(): DaemonShape {
  const c = daemonContainer();
  const [node, ...rest] = c.command;
  if (node !== 'node')
    throw new Error(`the DaemonSet's command does not start with node: ${c.command.join(' ')}`);
  const at = rest.findIndex((a) => !a.startsWith('-'));
  if (at < 0) throw new Error(`the DaemonSet's command names no script: ${c.command.join(' ')}`);
  const env: Record<string, string> = {};
  for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
  return {
    nodeFlags: rest.slice(0, at),
    entry: rest[at]!,
    args: [...rest.slice(at + 1), ...(c.args ?? [])],
    env,
  };
}

/** `--flag value` replaced (or added). */
function withFlag(args: string[], name: string, value: string): string[] {
  const out = [...args];
  const i = out.indexOf(name);
  if (i >= 0) out[i + 1] = value;
  else out.push(name, value);
  return out;
}

export interface Memory {
  rssMB: number;
  anonMB: number;
  fileMB: number;
  hwmMB: number;
}

export function memoryOf(pid: number): Memory {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mb = (field: string) => round(Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)?.[1]) / 1024, 1);
  return { rssMB: mb('VmRSS'), anonMB: mb('RssAnon'), fileMB: mb('RssFile'), hwmMB: mb('VmHWM') };
}

function httpGet(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = get(url, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.setTimeout(5000, () => req.destroy());
    req.once('error', () => resolve({ status: 0, body: '' }));
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface Health {
  lastSync?: { trigger?: string; readBack?: boolean; result?: string; durationMs?: number; writes?: number };
  lastSuccessAt?: string;
}

export interface StartOptions {
  /** `--kubeconfig F` or `--services DIR`. */
  source: string[];
  netns: string;
  /** Preload the SIGUSR2 memoryUsage() reporter (diagnostic runs only). */
  memreport?: boolean;
  /** Another entry point than the DaemonSet's (the comparison runs of RESULTS.md). */
  entry?: string;
  nodeFlags?: string[];
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

/** The real daemon process, started as the DaemonSet starts it. */
export class DaemonProcess {
  readonly child: ChildProcess;
  readonly command: string[];
  readonly #port: number;
  #log = '';

  private constructor(child: ChildProcess, command: string[], port: number) {
    this.child = child;
    this.command = command;
    this.#port = port;
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.#log = (this.#log + d).slice(-50_000);
    });
  }

  /** Starts it and resolves at its first 200 from /readyz, with the time that took (spawn included). */
  static async start(options: StartOptions): Promise<{ daemon: DaemonProcess; readyMs: number }> {
    const shape = daemonSetShape();
    const port = await freePort();
    let args = withFlag(shape.args, '--policy', POLICY);
    args = withFlag(args, '--health-listen', `127.0.0.1:${port}`);
    // `$(POD_IP):9470` in the Pod (a fieldRef); loopback here, on a port of its own.
    if (args.includes('--metrics-listen'))
      args = withFlag(args, '--metrics-listen', `127.0.0.1:${await freePort()}`);
    args = [...args, ...options.source, '--netns', options.netns];
    const nodeFlags = options.nodeFlags ?? shape.nodeFlags;
    const command = [
      ...nodeFlags,
      ...(options.memreport ? ['--import', MEMREPORT] : []),
      options.entry ?? shape.entry,
      ...args,
    ];
    const t0 = performance.now();
    const child = spawn(process.execPath, command, {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { PATH: process.env.PATH ?? '', ...shape.env, ...options.env },
    });
    const daemon = new DaemonProcess(child, ['node', ...command], port);
    const deadline = t0 + (options.readyTimeoutMs ?? 240_000);
    try {
      for (;;) {
        if (child.exitCode !== null)
          throw new Error(`the daemon exited (${child.exitCode}): ${daemon.log(2000)}`);
        if (performance.now() > deadline)
          throw new Error(`the daemon was not ready in time: ${daemon.log(2000)}`);
        if ((await httpGet(daemon.url('/readyz'))).status === 200) break;
        await sleep(20);
      }
    } catch (error) {
      await stopChild(child);
      throw error;
    }
    return { daemon, readyMs: performance.now() - t0 };
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.#port}${path}`;
  }

  log(chars = 5000): string {
    return this.#log.slice(-chars);
  }

  memory(): Memory {
    return memoryOf(this.child.pid!);
  }

  async health(): Promise<Health> {
    const r = await httpGet(this.url('/healthz'));
    try {
      return JSON.parse(r.body) as Health;
    } catch {
      return {};
    }
  }

  /**
   * SIGHUP, which runs what the periodic resync runs (the policy and the table read again), and
   * waits for that sync to finish; its duration.
   */
  async resync(timeoutMs = 120_000): Promise<number> {
    const before = (await this.health()).lastSuccessAt;
    const t0 = performance.now();
    this.child.kill('SIGHUP');
    for (;;) {
      const h = await this.health();
      if (h.lastSuccessAt !== before && h.lastSync?.trigger === 'resync' && h.lastSync.readBack) break;
      if (performance.now() - t0 > timeoutMs)
        throw new Error(`no resync within ${timeoutMs} ms: ${this.log(2000)}`);
      await sleep(20);
    }
    return performance.now() - t0;
  }

  /** process.memoryUsage() from inside, in MB (only with `memreport`). */
  async heap(): Promise<Record<string, number>> {
    const marker = 'slipstream-bench-memory ';
    const before = this.#log.split(marker).length;
    this.child.kill('SIGUSR2');
    const deadline = Date.now() + 5000;
    while (this.#log.split(marker).length === before) {
      if (Date.now() > deadline)
        throw new Error('the daemon did not report its memory (no --import memreport?)');
      await sleep(20);
    }
    const m = [...this.#log.matchAll(/slipstream-bench-memory (\{[^\n]*\})\n/g)].at(-1)!;
    const usage = JSON.parse(m[1]!) as Record<string, number>;
    return Object.fromEntries(Object.entries(usage).map(([k, v]) => [`${k}MB`, round(v / 2 ** 20, 1)]));
  }

  /** SIGTERM; the exit code. */
  stop(): Promise<number | null> {
    return stopChild(this.child);
  }
}

/** RSS samples while `during` runs (every `everyMs`): the largest and the last. */
export async function sampleWhile(
  daemon: DaemonProcess,
  during: () => Promise<void>,
  everyMs = 250,
): Promise<{ maxRssMB: number; lastRssMB: number; samples: number }> {
  let max = 0;
  let samples = 0;
  let done = false;
  const sampler = (async () => {
    while (!done) {
      const m = daemon.memory();
      max = Math.max(max, m.rssMB);
      samples++;
      await sleep(everyMs);
    }
  })();
  try {
    await during();
  } finally {
    done = true;
    await sampler;
  }
  const m = daemon.memory();
  return { maxRssMB: Math.max(max, m.rssMB), lastRssMB: m.rssMB, samples: samples + 1 };
}
