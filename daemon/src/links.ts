// The link source: lists links with `ip -json link show` and watches `ip monitor link`
// (iproute2 6.1 prints text there even with -json, so every line only means "something
// changed": re-list, debounced). Works in a named network namespace (`ip -n NAME ...`).
//
// It reports the links themselves, each with its ifindex and whether it is administratively UP
// (IFF_UP; carrier is not asked for: a veth whose peer is still coming up can be hooked already);
// which of them the flowtable hooks is devices.ts's choice. A link deleted and created again
// under the same name, however fast (one `ip -batch`), is a change: its ifindex differs.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { type Logger, stderrLogger } from '@slipstream/shared/adapters/log';
import { isRecord } from '@slipstream/shared/core/record';

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

/** What a change of links is compared on: which links exist (by ifindex and name) and which are UP. */
function fingerprint(links: readonly LinkInfo[]): string {
  return links
    .map((l) => `${l.index}:${l.name}:${l.up ? 1 : 0}${l.loopback ? 'L' : ''}`)
    .sort()
    .join('\n');
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
  /** Called with every link whenever a link appears, goes, is re-created or goes UP or DOWN. */
  onChange: (links: LinkInfo[]) => void;
  logger?: Logger;
  /** Lists links (tests may stub it); `listLinks` by default. */
  list?: (netns?: string) => Promise<LinkInfo[]>;
}

export class LinkWatcher {
  readonly #netns: string | undefined;
  readonly #debounceMs: number;
  readonly #pollMs: number;
  readonly #onChange: (links: LinkInfo[]) => void;
  readonly #log: Logger;
  readonly #list: (netns?: string) => Promise<LinkInfo[]>;
  #monitor: ChildProcess | null = null;
  #debounce: NodeJS.Timeout | null = null;
  #poll: NodeJS.Timeout | null = null;
  #restart: NodeJS.Timeout | null = null;
  #stopped = false;
  #links: LinkInfo[] = [];
  #fingerprint = '';
  #refreshing: Promise<LinkInfo[]> | null = null;
  #again = false;

  constructor(options: LinkWatcherOptions) {
    this.#netns = options.netns;
    this.#debounceMs = options.debounceMs ?? 100;
    this.#pollMs = options.pollMs ?? 30_000;
    this.#onChange = options.onChange;
    this.#log = options.logger ?? stderrLogger;
    this.#list = options.list ?? listLinks;
  }

  get links(): LinkInfo[] {
    return [...this.#links];
  }

  /** Starts the monitor, then lists (so nothing between the two is missed); resolves with the links. */
  async start(): Promise<LinkInfo[]> {
    await this.#startMonitor();
    if (this.#pollMs > 0) {
      this.#poll = setInterval(() => void this.refresh().catch(() => undefined), this.#pollMs);
      this.#poll.unref?.();
    }
    return this.refresh();
  }

  /** Re-lists links now; calls onChange when they changed. Concurrent calls share one listing. */
  refresh(): Promise<LinkInfo[]> {
    if (this.#refreshing) {
      this.#again = true;
      return this.#refreshing;
    }
    this.#refreshing = (async () => {
      try {
        let links: LinkInfo[];
        do {
          this.#again = false;
          links = await this.#list(this.#netns);
        } while (this.#again);
        const print = fingerprint(links);
        const changed = print !== this.#fingerprint;
        this.#links = links;
        this.#fingerprint = print;
        if (changed && !this.#stopped) this.#onChange([...links]);
        return [...links];
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
