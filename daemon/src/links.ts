// The device source: which links the flowtable hooks. Lists links with `ip -json link show`
// and watches `ip monitor link` (iproute2 6.1 prints text there even with -json, so every
// line only means "something changed": re-list, debounced). Works in a named network
// namespace (`ip -n NAME ...`).
//
// Devices chosen: links that are administratively UP (IFF_UP), except loopback. A flowtable
// hook on lo never sees forwarded traffic, and a DOWN link carries none. Names that cannot be
// Linux interface names are dropped defensively (they only ever reach libnftables as JSON
// strings). Operational state (carrier) is NOT required: a veth whose peer is still coming up
// is hooked already, so its first forwarded packets can be offloaded.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { type Logger, stderrLogger } from '@slipstream/shared/adapters/log';
import { isRecord } from '@slipstream/shared/core/record';
import { validDeviceName } from '@slipstream/shared/core/ruleset';

export interface LinkInfo {
  name: string;
  index: number;
  up: boolean;
  loopback: boolean;
  operstate?: string;
  linkType?: string;
}

/** Parses `ip -json link show` output. Unknown shapes are skipped, never thrown on. */
export function parseLinks(output: string): LinkInfo[] {
  let data: unknown;
  try {
    data = JSON.parse(output);
  } catch {
    return [];
  }
  if (!Array.isArray(data)) return [];
  const links: LinkInfo[] = [];
  for (const raw of data) {
    if (!isRecord(raw) || typeof raw.ifname !== 'string') continue;
    const flags = Array.isArray(raw.flags) ? raw.flags.filter((f): f is string => typeof f === 'string') : [];
    const link: LinkInfo = {
      name: raw.ifname,
      index: typeof raw.ifindex === 'number' ? raw.ifindex : 0,
      up: flags.includes('UP'),
      loopback: flags.includes('LOOPBACK') || raw.link_type === 'loopback',
    };
    if (typeof raw.operstate === 'string') link.operstate = raw.operstate;
    if (typeof raw.link_type === 'string') link.linkType = raw.link_type;
    links.push(link);
  }
  return links;
}

/** The devices the flowtable should hook: UP, not loopback, a valid name; sorted. */
export function flowtableDevices(links: readonly LinkInfo[]): string[] {
  return [
    ...new Set(links.filter((l) => l.up && !l.loopback && validDeviceName(l.name)).map((l) => l.name)),
  ].sort();
}

function ipArgs(netns: string | undefined, args: string[]): string[] {
  return netns ? ['-n', netns, ...args] : args;
}

/** `ip [-n NS] -json link show`, parsed. */
export function listLinks(netns?: string): Promise<LinkInfo[]> {
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      ipArgs(netns, ['-json', 'link', 'show']),
      { maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`ip link show failed: ${stderr.trim() || err.message}`));
        else resolve(parseLinks(stdout));
      },
    );
  });
}

export interface LinkWatcherOptions {
  netns?: string;
  /** Re-list this long after the last monitor line (default 100 ms). */
  debounceMs?: number;
  /** Safety-net re-list period, in case an event was missed or the monitor died (default 30 s; 0: off). */
  pollMs?: number;
  /** Called with the new device list whenever it changes. */
  onChange: (devices: string[]) => void;
  logger?: Logger;
  /** Lists links (tests may stub it); `listLinks` by default. */
  list?: (netns?: string) => Promise<LinkInfo[]>;
}

export class LinkWatcher {
  readonly #netns: string | undefined;
  readonly #debounceMs: number;
  readonly #pollMs: number;
  readonly #onChange: (devices: string[]) => void;
  readonly #log: Logger;
  readonly #list: (netns?: string) => Promise<LinkInfo[]>;
  #monitor: ChildProcess | null = null;
  #debounce: NodeJS.Timeout | null = null;
  #poll: NodeJS.Timeout | null = null;
  #restart: NodeJS.Timeout | null = null;
  #stopped = false;
  #devices: string[] = [];
  #refreshing: Promise<string[]> | null = null;
  #again = false;

  constructor(options: LinkWatcherOptions) {
    this.#netns = options.netns;
    this.#debounceMs = options.debounceMs ?? 100;
    this.#pollMs = options.pollMs ?? 30_000;
    this.#onChange = options.onChange;
    this.#log = options.logger ?? stderrLogger;
    this.#list = options.list ?? listLinks;
  }

  get devices(): string[] {
    return [...this.#devices];
  }

  /** Starts the monitor, then lists (so nothing between the two is missed); resolves with the devices. */
  async start(): Promise<string[]> {
    await this.#startMonitor();
    if (this.#pollMs > 0) {
      this.#poll = setInterval(() => void this.refresh().catch(() => undefined), this.#pollMs);
      this.#poll.unref?.();
    }
    return this.refresh();
  }

  /** Re-lists links now; calls onChange when the device list changed. Concurrent calls share one listing. */
  refresh(): Promise<string[]> {
    if (this.#refreshing) {
      this.#again = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      try {
        let devices: string[];
        do {
          this.#again = false;
          devices = flowtableDevices(await this.#list(this.#netns));
        } while (this.#again);
        const changed = devices.join('\n') !== this.#devices.join('\n');
        this.#devices = devices;
        if (changed && !this.#stopped) this.#onChange([...devices]);
        return [...devices];
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
        this.#log.warn('listing links failed', { error: String(error) }),
      );
    }, this.#debounceMs);
  }

  #startMonitor(): Promise<void> {
    return new Promise((resolve) => {
      const child = spawn('ip', ipArgs(this.#netns, ['monitor', 'link']), {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      this.#monitor = child;
      createInterface({ input: child.stdout }).on('line', () => this.#kick());
      child.stderr.on('data', () => undefined);
      child.once('spawn', () => resolve());
      child.once('error', (error) => {
        this.#log.warn('ip monitor link failed to start', { error: String(error) });
        resolve();
      });
      child.once('exit', (code, signal) => {
        if (this.#stopped || this.#monitor !== child) return;
        this.#log.warn('ip monitor link exited; restarting', { code, signal });
        this.#monitor = null;
        this.#restart = setTimeout(() => {
          this.#restart = null;
          void this.#startMonitor().then(() => this.#kick());
        }, 1000);
      });
    });
  }
}
