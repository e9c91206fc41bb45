// The kernel edge: the only code that talks to nf_tables. `NapiKernel` sends the nft text of each
// Change (shared/src/core/nft-text.ts, the one writer) through the nftables-napi addon (one run =
// one atomic transaction), optionally inside a network namespace, and watches the table's change
// events to tell the loop when anyone else touched it. `MemoryKernel` (memory-kernel.ts) is its
// in-memory twin for unit tests.

import { type Change, isEmpty } from '@slipstream/shared/core/change';
import { LIST_TABLE, parseTable } from '@slipstream/shared/core/nft-listing';
import { changeText } from '@slipstream/shared/core/nft-text';
import {
  type Capabilities,
  FLOWTABLE_NAME,
  type Ruleset,
  TABLE_FAMILY,
  TABLE_NAME,
} from '@slipstream/shared/core/ruleset';
import type { MonitorEvent, NftMonitor, SetElementsOp, TableChange } from 'nftables-napi';
import { firstErrorLine, NftError, type NftErrorClass } from 'nftables-napi/errors';
import { probeCapabilities } from './capabilities.ts';
import { elementBatch } from './element-batch.ts';

export { NftError, type NftErrorClass };

/** The errorClass of an NftError (structurally, so errors from any runner work), or 'unknown'. */
export function errorClassOf(error: unknown): NftErrorClass {
  const c = (error as { errorClass?: unknown } | null)?.errorClass;
  return typeof c === 'string' ? (c as NftErrorClass) : 'unknown';
}

/** The first `Error:` line of an nft error, or the error's message: one line for logs and spans. */
export function errorText(error: unknown): string {
  const raw = (error as { nftMessage?: unknown } | null)?.nftMessage;
  const text = typeof raw === 'string' ? raw : error instanceof Error ? error.message : String(error);
  return firstErrorLine(text).trim().split('\n')[0]!.slice(0, 500);
}

/**
 * The kernel's (or libnftables') words about a refused command: the `Error:` line and the command
 * it echoes, bounded, for the log line that says a transaction was refused.
 */
export function errorDetail(error: unknown): string {
  const raw = (error as { nftMessage?: unknown } | null)?.nftMessage;
  if (typeof raw !== 'string') return errorText(error);
  const lines = raw.split('\n');
  const at = lines.findIndex((l) => /\bError:/.test(l));
  return lines
    .slice(Math.max(0, at), Math.max(0, at) + 2)
    .map((l) => (l.length > 300 ? `${l.slice(0, 300)}…` : l))
    .join('\n');
}

/** What the table's watcher reports. */
export type KernelEvent =
  /** Someone else committed a transaction that touched the table. */
  | { type: 'foreign-change'; generation: number; process: string; pid: number; changes: TableChange[] }
  /** Events were lost (a full socket buffer): what changed is unknown. */
  | { type: 'overrun' }
  /** The kernel's events for one of our own commits do not match what was sent: read back. */
  | { type: 'unverified'; reason: string }
  /** The watch cannot work (the loop falls back to periodic read-backs). */
  | { type: 'unavailable'; reason: string };

export interface Kernel {
  /** Applies a Change as ONE transaction (nothing when it is empty). Rejects with the kernel's error. */
  apply(change: Change): Promise<void>;
  /** Has the kernel validate a Change without committing it (a dry run). Rejects like `apply`. */
  check(change: Change): Promise<void>;
  /** Reads the whole table back (every element, the flowtable's flags): null when there is no table. */
  readTable(): Promise<Ruleset | null>;
  /** The flowtable's devices as the kernel holds them now (cheap: no elements); null without one. */
  readFlowtableDevices(): Promise<string[] | null>;
  /** What this kernel can do; commits nothing. */
  probe(): Promise<Capabilities>;
  /** Deletes the table (`--cleanup`): whether it was there. */
  removeTable(): Promise<'removed' | 'absent'>;
  /** Reports changes to the table made by anyone but this kernel edge; returns the unsubscribe. */
  watch(listener: (event: KernelEvent) => void): () => void;
  /** Committed transactions so far (for the zero-write tests). */
  readonly writes: number;
  close(): void;
}

/** The slice of nftables-napi's NftContext the kernel edge uses. */
export interface NftRunner {
  /** `release`: free what the run left cached (nftables-napi RunOptions.release); a hint. */
  run(commands: string | object, options?: { check?: boolean; release?: boolean }): Promise<unknown>;
  /** The netlink port id of the runner's socket (0: not known), to recognize its own commits. */
  readonly portId?: number;
  close(): void;
}

/** The slice of nftables-napi's NftBatch the kernel edge uses: element-only changes, as netlink. */
export interface ElementWriter {
  commit(ops: SetElementsOp[]): Promise<void>;
  readonly portId: number;
  close(): void;
}

/** `NAME` → `/run/netns/NAME`; a path is kept. */
export function netnsPath(netns: string): string {
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

export interface NapiKernelOptions {
  /** Network namespace name (under /run/netns) or path; the current namespace when absent. */
  netns?: string;
  /** What libnftables printed straight to stderr (logged by the caller as a structured line). */
  onStray?: (text: string) => void;
}

export class NapiKernel implements Kernel {
  readonly #runner: NftRunner;
  readonly #reader: NftRunner | null;
  readonly #elements: ElementWriter | null;
  readonly #monitor: NftMonitor | null;
  readonly #listeners = new Set<(event: KernelEvent) => void>();
  /** Our own commits' event batches, waiting to be checked against what was sent. */
  readonly #own: { added: number; removed: number }[] = [];
  readonly #ownWaiters: ((batch: { added: number; removed: number } | null) => void)[] = [];
  #lostSince = false;
  #unavailable: string | null = null;
  #writes = 0;

  /** `monitor`: the table's event watch (null: none; `watch` then reports `unavailable`). */
  /** `reader`: runs the table listings (readTable), released after each; default `runner`. */
  /** `elements`: commits element-only changes as netlink (element-batch.ts); default: all as nft text. */
  constructor(
    runner: NftRunner,
    monitor: NftMonitor | null = null,
    reader: NftRunner | null = null,
    elements: ElementWriter | null = null,
  ) {
    this.#runner = runner;
    this.#monitor = monitor;
    this.#reader = reader;
    this.#elements = elements;
    if (!monitor) this.#unavailable = 'no nf_tables event monitor';
  }

  /** Opens libnftables and the event monitor (loaded here, so that MemoryKernel users never load the addon). */
  static async open(options: NapiKernelOptions = {}): Promise<NapiKernel> {
    const napi = (await import('nftables-napi')) as typeof import('nftables-napi');
    const netns = options.netns ? netnsPath(options.netns) : undefined;
    const context = () =>
      new napi.NftContext({
        ...(netns ? { netns } : {}),
        ...(options.onStray ? { onStray: options.onStray } : {}),
      });
    const ctx = context();
    let kernel: NapiKernel | undefined;
    let monitor: NftMonitor | null = null;
    let why = '';
    try {
      monitor = new napi.NftMonitor(
        { ...(netns ? { netns } : {}), family: TABLE_FAMILY, table: TABLE_NAME },
        (e) => {
          if (kernel) kernel.#onMonitor(e);
        },
      );
    } catch (error) {
      why = `cannot watch nf_tables events: ${(error as Error).message}`;
    }
    let elements: ElementWriter | null = null;
    try {
      elements = new napi.NftBatch(netns ? { netns } : {});
    } catch {
      // Without it every change goes through libnftables: slower beside large maps, not different.
    }
    kernel = new NapiKernel(ctx, monitor, context(), elements);
    if (!monitor) kernel.#unavailable = why;
    return kernel;
  }

  get writes(): number {
    return this.#writes;
  }

  async apply(change: Change): Promise<void> {
    if (isEmpty(change)) return;
    this.#lostSince = false;
    const batch = this.#elements ? elementBatch(change) : null;
    if (batch) await this.#elements!.commit(batch);
    else await this.#runner.run(changeText(change));
    this.#writes++;
    if (this.#monitor) void this.#verify(change);
  }

  async check(change: Change): Promise<void> {
    if (isEmpty(change)) return;
    await this.#runner.run(changeText(change), { check: true });
  }

  /**
   * The cheap check of our own commit: the kernel announces every element it added or deleted in
   * its change events, so their counts must be the Change's. A mismatch (or no events at all)
   * says the belief cannot be trusted: the loop reads the table back.
   */
  async #verify(change: Change): Promise<void> {
    const batch = await new Promise<{ added: number; removed: number } | null>((resolve) => {
      const ready = this.#own.shift();
      if (ready) return resolve(ready);
      const timer = setTimeout(() => {
        const i = this.#ownWaiters.indexOf(take);
        if (i >= 0) this.#ownWaiters.splice(i, 1);
        resolve(null);
      }, 2000);
      timer.unref();
      const take = (b: { added: number; removed: number } | null) => {
        clearTimeout(timer);
        resolve(b);
      };
      this.#ownWaiters.push(take);
    });
    // Lost events were reported already (and read back); flushes delete a count we cannot know.
    const counted = change.ops.every(
      (op) => op.op !== 'flush-map' && op.op !== 'delete-map' && op.op !== 'delete-table',
    );
    if (this.#lostSince || !counted) return;
    const s = change.summary;
    let reason: string | null = null;
    if (!batch) reason = 'the kernel sent no change events for it';
    else {
      // Map elements and node address set elements alike are set elements to the kernel.
      const added = s.elementsAdded + s.addressesAdded;
      const removed = s.elementsRemoved + s.addressesRemoved;
      if (batch.added !== added || batch.removed !== removed) {
        reason = `the kernel reported +${batch.added}/-${batch.removed} elements, the change had +${added}/-${removed}`;
      }
    }
    if (reason === null) return;
    const event: KernelEvent = { type: 'unverified', reason: `our commit is not confirmed: ${reason}` };
    for (const listener of [...this.#listeners]) listener(event);
  }

  async readTable(): Promise<Ruleset | null> {
    let table: Ruleset | null;
    try {
      // On a context of its own, released after the listing: libnftables would keep every listed
      // element cached (~1 KB each) until the next commit, at 100,000 elements most of the
      // daemon's memory. (Not the writer's context: its port id tells our commits apart.)
      const listing = this.#reader
        ? await this.#reader.run(LIST_TABLE, { release: true })
        : await this.#runner.run(LIST_TABLE);
      table = parseTable(listing);
    } catch (error) {
      if (errorClassOf(error) === 'no-such-object') return null;
      throw error;
    }
    // The JSON listing does not show a flowtable's flags: ask the kernel.
    if (table?.flowtable && this.#monitor) {
      const info = await this.#monitor.flowtable(TABLE_NAME, FLOWTABLE_NAME);
      if (info) table.flowtable.counter = info.counter;
    }
    return table;
  }

  async readFlowtableDevices(): Promise<string[] | null> {
    if (this.#monitor) return (await this.#monitor.flowtable(TABLE_NAME, FLOWTABLE_NAME))?.devices ?? null;
    const table = await this.readTable();
    return table?.flowtable?.devices ?? null;
  }

  probe(): Promise<Capabilities> {
    return probeCapabilities(this.#runner);
  }

  async removeTable(): Promise<'removed' | 'absent'> {
    try {
      await this.#runner.run(`delete table ${TABLE_FAMILY} ${TABLE_NAME}`);
      this.#writes++;
      return 'removed';
    } catch (error) {
      if (errorClassOf(error) === 'no-such-object') return 'absent';
      throw error;
    }
  }

  watch(listener: (event: KernelEvent) => void): () => void {
    this.#listeners.add(listener);
    if (this.#unavailable !== null) {
      const reason = this.#unavailable;
      queueMicrotask(() => listener({ type: 'unavailable', reason }));
    }
    return () => this.#listeners.delete(listener);
  }

  #onMonitor(event: MonitorEvent): void {
    let out: KernelEvent;
    if (event.type === 'batch') {
      // Our own commits come back too: the committing socket's port id (libnftables' or the
      // batch writer's) tells them apart.
      if (
        event.portId !== 0 &&
        (event.portId === this.#runner.portId || event.portId === this.#elements?.portId)
      ) {
        let added = 0;
        let removed = 0;
        for (const c of event.changes) {
          if (c.kind !== 'element') continue;
          if (c.op === 'add') added += c.count;
          else removed += c.count;
        }
        const waiter = this.#ownWaiters.shift();
        if (waiter) waiter({ added, removed });
        else this.#own.push({ added, removed });
        return;
      }
      out = {
        type: 'foreign-change',
        generation: event.generation,
        process: event.process,
        pid: event.pid,
        changes: event.changes,
      };
    } else if (event.type === 'overrun') {
      // Our own batches may be among the lost: nothing waits for them any more.
      this.#lostSince = true;
      this.#own.length = 0;
      for (const waiter of this.#ownWaiters.splice(0)) waiter(null);
      out = { type: 'overrun' };
    } else {
      out = { type: 'unavailable', reason: event.message };
    }
    for (const listener of [...this.#listeners]) listener(out);
  }

  close(): void {
    this.#monitor?.close();
    this.#runner.close();
    this.#reader?.close();
    this.#elements?.close();
  }
}

/** A refused transaction for the twin and the CLI runner: the same class, built from a message. */
export function kernelError(message: string, errorClass: NftErrorClass): NftError {
  return new NftError(message, errorClass);
}
