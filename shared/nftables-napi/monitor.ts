// NftMonitor: nf_tables change events for one table (what `nft monitor` listens to), from a
// netlink socket the event loop polls. One `batch` event per committed transaction that touched
// the table, with what it touched (counted per operation, kind and object), the generation id it
// created and who committed it: the committing socket's netlink `portId` (compare with
// `NftContext.portId` to recognize your own commits), the committer's pid and process name.
// `overrun`: the socket's buffer filled and events were lost, so what changed is unknown.

import { binding, type NativeMonitor, type NativeMonitorEvent } from './binding.ts';

export interface TableChange {
  op: 'add' | 'delete';
  kind: 'table' | 'chain' | 'rule' | 'set' | 'element' | 'object' | 'flowtable';
  /** The chain, set or flowtable name ('' for the table itself); for rules, their chain. */
  name: string;
  /** Messages of this kind in the transaction (elements: one per element). */
  count: number;
}

export type MonitorEvent =
  | {
      type: 'batch';
      generation: number;
      portId: number;
      pid: number;
      process: string;
      changes: TableChange[];
    }
  | { type: 'overrun' }
  | { type: 'error'; message: string };

/** nf_tables families (NFPROTO_*). */
const FAMILY: Readonly<Record<string, number>> = { inet: 1, ip: 2, arp: 3, netdev: 5, bridge: 7, ip6: 10 };

export interface NftMonitorOptions {
  /** Path of a network namespace (e.g. `/run/netns/NAME`); the current one when absent. */
  netns?: string;
  family: keyof typeof FAMILY | string;
  table: string;
  /** Receive buffer (default 32 MiB: a 100,000-element transaction is ~10 MB of events). */
  receiveBufferBytes?: number;
}

/** A flowtable as the kernel reports it (NFT_MSG_GETFLOWTABLE). */
export interface FlowtableInfo {
  /** NFT_FLOWTABLE_* flags: 1 hardware offload, 2 counter. */
  flags: number;
  counter: boolean;
  /** Hook number (NF_NETDEV_INGRESS = 0) and priority. */
  hook: number;
  priority: number;
  devices: string[];
}

const NFT_FLOWTABLE_COUNTER = 0x2;
const ENOENT = 2;

type Reply = Extract<NativeMonitorEvent, { seq: number }>;

export class NftMonitor {
  readonly #native: NativeMonitor;
  readonly #pending = new Map<
    number,
    { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }
  >();
  #closed = false;

  constructor(options: NftMonitorOptions, listener: (event: MonitorEvent) => void) {
    const family = FAMILY[options.family];
    if (family === undefined)
      throw new TypeError(`unknown nf_tables family ${JSON.stringify(options.family)}`);
    this.#family = family;
    this.#native = new binding.NftMonitorNative(
      options.netns,
      family,
      options.table,
      options.receiveBufferBytes ?? 32 * 1024 * 1024,
      (event: NativeMonitorEvent) => {
        if ('seq' in event) {
          const waiter = this.#pending.get(event.seq);
          if (waiter) {
            this.#pending.delete(event.seq);
            clearTimeout(waiter.timer);
            waiter.resolve(event);
          }
          return;
        }
        try {
          listener(event as MonitorEvent);
        } catch (error) {
          // A listener bug must not take the event socket down with it.
          queueMicrotask(() => {
            throw error;
          });
        }
      },
    );
  }

  readonly #family: number;

  /** This monitor's own netlink port id. */
  get portId(): number {
    return this.#native.portId();
  }

  #ask(send: () => number, timeoutMs: number): Promise<Reply> {
    if (this.#closed) return Promise.reject(new Error('NftMonitor is closed'));
    return new Promise((resolve, reject) => {
      let seq: number;
      try {
        seq = send();
      } catch (error) {
        reject(error as Error);
        return;
      }
      const timer = setTimeout(() => {
        this.#pending.delete(seq);
        reject(new Error('nf_tables did not answer'));
      }, timeoutMs);
      this.#pending.set(seq, { resolve, reject, timer });
    });
  }

  /** The ruleset generation id now (NFT_MSG_GETGEN; changes on every commit by anyone). */
  async generation(timeoutMs = 2000): Promise<number> {
    const reply = await this.#ask(() => this.#native.requestGeneration(), timeoutMs);
    if (reply.type === 'generation') return reply.generation;
    throw new Error(reply.type === 'reply-error' ? reply.message : 'unexpected answer to NFT_MSG_GETGEN');
  }

  /** A flowtable's flags, hook and devices as the kernel holds them; null when there is none. */
  async flowtable(table: string, name: string, timeoutMs = 2000): Promise<FlowtableInfo | null> {
    const reply = await this.#ask(() => this.#native.requestFlowtable(this.#family, table, name), timeoutMs);
    if (reply.type === 'flowtable') {
      return {
        flags: reply.flags,
        counter: (reply.flags & NFT_FLOWTABLE_COUNTER) !== 0,
        hook: reply.hook,
        priority: reply.priority,
        devices: [...reply.devices].sort(),
      };
    }
    if (reply.type === 'reply-error' && reply.errno === ENOENT) return null;
    throw new Error(
      reply.type === 'reply-error' ? reply.message : 'unexpected answer to NFT_MSG_GETFLOWTABLE',
    );
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const [seq, w] of this.#pending) {
      clearTimeout(w.timer);
      w.reject(new Error('NftMonitor is closed'));
      this.#pending.delete(seq);
    }
    this.#native.close();
  }
}
