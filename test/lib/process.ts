// Test support: the components as real child processes, their stderr read as JSON log lines, and
// bounded polling. Nothing here measures time: every wait ends on a condition or fails at a bound
// with context.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { type AddressInfo, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRecord } from '@slipstream/shared/core/record';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const WEBHOOK_MAIN = join(ROOT, 'webhook/src/main.ts');
export const DAEMON_MAIN = join(ROOT, 'daemon/src/main.ts');
export const STATUS_MAIN = join(ROOT, 'daemon/src/status-main.ts');
export const WAIT_MS = 20_000;

/** Node 24 (the project's), never the system's older node. */
export const NODE =
  Number(process.versions.node.split('.')[0]) >= 24 ? process.execPath : join(ROOT, 'node_modules/.bin/node');

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns something truthy; fails after `boundMs` with `context()`. */
export async function until<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  context: () => string = () => '',
  boundMs = WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`);
    await sleep(50);
  }
}

/** Whether `command args` runs (exits 0). */
export function hasCommand(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** A port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

export type LogEntry = Record<string, unknown> & { msg?: string; level?: string };
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ProcOptions {
  /** Names the process in failures (default: the script's file name). */
  name?: string;
  /** The whole environment (default: this process's); undefined values are left out. */
  env?: Record<string, string | undefined>;
  /** A command that execs node (e.g. `setpriv` dropping a capability): `wrap... node script args`. */
  wrap?: string[];
  /** Node's own options, before the script (`node --max-semi-space-size=2 script`). */
  nodeArgs?: string[];
}

/** A process running `node script args`, its output collected and its stderr parsed line by line. */
export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<Exit>;
  #exit: Exit | undefined;
  readonly #entries: LogEntry[] = [];
  #partial = '';
  readonly #waiters = new Set<() => void>();

  constructor(script: string, args: string[], options: ProcOptions = {}) {
    this.name = options.name ?? script.split('/').at(-1) ?? script;
    const env = Object.fromEntries(
      Object.entries(options.env ?? process.env).filter((e): e is [string, string] => e[1] !== undefined),
    );
    const [command, ...prefix] = options.wrap ?? [];
    const node = [...(options.nodeArgs ?? []), script, ...args];
    this.child = command
      ? spawn(command, [...prefix, NODE, ...node], { env, stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(NODE, node, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.stdout += c));
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => this.#read(c));
    this.exited = new Promise((resolve) =>
      this.child.once('close', (code, signal) => {
        if (this.#partial.trim() !== '') this.#entries.push(parseLine(this.#partial));
        this.#partial = '';
        this.#exit = { code, signal };
        this.#notify();
        resolve(this.#exit);
      }),
    );
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  /** How it exited, once it has. */
  get exitStatus(): Exit | undefined {
    return this.#exit;
  }

  /** Every stderr line so far, parsed (`{raw}` for a line that is not JSON). The array grows. */
  logs(): LogEntry[] {
    return this.#entries;
  }

  /** The first log line that satisfies `predicate`, as soon as it is written; fails if the process exits or the bound passes. */
  waitForLog(what: string, predicate: (l: LogEntry) => boolean, boundMs = WAIT_MS): Promise<LogEntry> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.#entries.find(predicate);
        if (found) done(() => resolve(found));
        else if (!this.running) {
          done(() =>
            reject(
              new Error(
                `${this.name} exited (${this.#exit?.code ?? this.#exit?.signal}) before ${what}\n${this.stderr}`,
              ),
            ),
          );
        }
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`timed out waiting for ${this.name}: ${what}\n${this.stderr}`))),
        boundMs,
      );
      const done = (settle: () => void) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        settle();
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** The exit, or a failure (and SIGKILL) when it does not come within the bound. */
  async exit(boundMs = WAIT_MS): Promise<Exit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.child.kill('SIGKILL');
        reject(new Error(`${this.name} did not exit within ${boundMs} ms\nstderr:\n${this.stderr}`));
      }, boundMs);
    });
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends `signal` and waits for the exit (SIGKILL after the bound). */
  async stop(signal: NodeJS.Signals = 'SIGTERM', boundMs = WAIT_MS): Promise<Exit> {
    if (!this.running) return this.exited;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), boundMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  #read(chunk: string): void {
    this.stderr += chunk;
    const lines = (this.#partial + chunk).split('\n');
    this.#partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim() !== '') this.#entries.push(parseLine(line));
    this.#notify();
  }

  #notify(): void {
    for (const check of [...this.#waiters]) check();
  }
}

function parseLine(line: string): LogEntry {
  try {
    const parsed: unknown = JSON.parse(line);
    if (isRecord(parsed)) return parsed as LogEntry;
  } catch {
    // not JSON
  }
  return { raw: line };
}

/** Runs `node script args` to its exit (bounded), with what it wrote. */
export async function run(script: string, args: string[], options: ProcOptions = {}) {
  const p = new Proc(script, args, options);
  const { code, signal } = await p.exit();
  return { code, signal, stdout: p.stdout, stderr: p.stderr, logs: p.logs() };
}
