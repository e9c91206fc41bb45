// Following a piece of the kernel's network state through iproute2: `ip [-n NS] monitor OBJECT`
// prints a line per change (iproute2 6.1 prints text there even with -json, so a line only means
// "something changed"), and each burst of lines triggers one fresh listing (debounced), plus a
// slow periodic listing in case an event was missed or the monitor died (it is restarted).

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { type Logger, stderrLogger } from '@slipstream/shared/adapters/log';

export function ipArgs(netns: string | undefined, args: string[]): string[] {
  return netns ? ['-n', netns, ...args] : args;
}

/** `ip [-n NS] -json ARGS`, its stdout. */
export function ipJson(netns: string | undefined, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      ipArgs(netns, ['-json', ...args]),
      { maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`ip ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
        else resolve(stdout);
      },
    );
  });
}

/** The array `ip -json ... show` printed; [] for anything else (a shape we do not know is skipped). */
export function jsonArray(output: string): unknown[] {
  try {
    const data: unknown = JSON.parse(output);
    return Array.isArray(data) ? data : [];
  } catch {
    return [];
  }
}

export interface IpMonitorOptions<T> {
  netns?: string;
  /** What `ip monitor` follows: `link`, `address`, ... */
  object: string;
  /** Lists the current state. */
  list: () => Promise<T>;
  /** Whether two states are the same (no change reported). */
  same: (a: T, b: T) => boolean;
  /** Called with the new state whenever it changes. */
  onChange: (state: T) => void;
  logger: Logger;
  /** Re-list this long after the last monitor line (default 100 ms). */
  debounceMs?: number;
  /** Safety-net re-list period (default 30 s; 0: off). */
  pollMs?: number;
}

/** What a watcher of one kind of ip state (links, addresses) is given. */
export interface WatcherOptions<T> {
  netns?: string;
  /** Called with the new state whenever it changes (never mutated afterwards: each listing is new). */
  onChange: (state: T) => void;
  logger?: Logger;
  /** Re-list this long after the last monitor line (default 100 ms). */
  debounceMs?: number;
  /** Safety-net re-list period, in case an event was missed or the monitor died (default 30 s; 0: off). */
  pollMs?: number;
  /** Lists the state (tests may stub it). */
  list?: (netns?: string) => Promise<T>;
}

/** A watcher's options as IpMonitor takes them, for `object` listed by `list` unless the options give one. */
export function watching<T>(
  options: WatcherOptions<T>,
  object: string,
  list: (netns?: string) => Promise<T>,
  same: (a: T, b: T) => boolean,
): IpMonitorOptions<T> {
  const listState = options.list ?? list;
  return {
    ...(options.netns ? { netns: options.netns } : {}),
    object,
    list: () => listState(options.netns),
    same,
    onChange: options.onChange,
    logger: options.logger ?? stderrLogger,
    ...(options.debounceMs !== undefined ? { debounceMs: options.debounceMs } : {}),
    ...(options.pollMs !== undefined ? { pollMs: options.pollMs } : {}),
  };
}

export class IpMonitor<T> {
  readonly #o: IpMonitorOptions<T>;
  #monitor: ChildProcess | null = null;
  #debounce: NodeJS.Timeout | null = null;
  #poll: NodeJS.Timeout | null = null;
  #restart: NodeJS.Timeout | null = null;
  #stopped = false;
  #state: T | undefined;
  #refreshing: Promise<T> | null = null;
  #again = false;

  constructor(options: IpMonitorOptions<T>) {
    this.#o = options;
  }

  get state(): T | undefined {
    return this.#state;
  }

  /** Starts the monitor, then lists (so nothing between the two is missed); resolves with the state. */
  async start(): Promise<T> {
    await this.#startMonitor();
    const pollMs = this.#o.pollMs ?? 30_000;
    if (pollMs > 0) {
      this.#poll = setInterval(() => void this.refresh().catch(() => undefined), pollMs);
      this.#poll.unref?.();
    }
    return this.refresh();
  }

  /** Lists now; calls onChange when the state changed. Concurrent calls share one listing. */
  refresh(): Promise<T> {
    if (this.#refreshing) {
      this.#again = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      try {
        let state: T;
        do {
          this.#again = false;
          state = await this.#o.list();
        } while (this.#again);
        const changed = this.#state === undefined || !this.#o.same(this.#state, state);
        this.#state = state;
        if (changed && !this.#stopped) this.#o.onChange(state);
        return state;
      } finally {
        this.#refreshing = null;
      }
    })();
    return this.#refreshing;
  }

  stop(): void {
    this.#stopped = true;
    for (const t of [this.#debounce, this.#restart]) if (t) clearTimeout(t);
    if (this.#poll) clearInterval(this.#poll);
    this.#debounce = this.#restart = this.#poll = null;
    this.#monitor?.kill();
    this.#monitor = null;
  }

  #kick(): void {
    if (this.#stopped) return;
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = null;
      this.refresh().catch((error: unknown) =>
        this.#o.logger.warn(`listing ${this.#o.object} failed`, { error: String(error) }),
      );
    }, this.#o.debounceMs ?? 100);
  }

  #startMonitor(): Promise<void> {
    return new Promise((resolve) => {
      const child = spawn('ip', ipArgs(this.#o.netns, ['monitor', this.#o.object]), {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.#monitor = child;
      createInterface({ input: child.stdout }).on('line', () => this.#kick());
      child.stderr.on('data', () => undefined);
      child.once('spawn', () => resolve());
      child.once('error', (error) => {
        this.#o.logger.warn(`ip monitor ${this.#o.object} failed to start`, { error: String(error) });
        resolve();
      });
      child.once('exit', (code, signal) => {
        if (this.#stopped || this.#monitor !== child) return;
        this.#o.logger.warn(`ip monitor ${this.#o.object} exited; restarting`, { code, signal });
        this.#monitor = null;
        this.#restart = setTimeout(() => {
          this.#restart = null;
          void this.#startMonitor().then(() => this.#kick());
        }, 1000);
      });
    });
  }
}
