// The kernel edge: the only code that talks to nf_tables. `NapiKernel` runs libnftables JSON
// through the nftables-napi addon (one `run` = one atomic transaction), optionally inside a
// network namespace; `MemoryKernel` is an in-memory twin that applies the same Change with the
// kernel's rules (what exists, what is busy, which devices exist) for unit tests.

import { type Change, isEmpty, type Op } from '@slipstream/shared/core/diff';
import {
  changeToInput,
  formatRuleset,
  listTableCommand,
  parseFlowtable,
  parseTable,
} from '@slipstream/shared/core/nft-json';
import {
  bareTable,
  type Capabilities,
  elementKey,
  FLOWTABLE_NAME,
  MAP_NAMES,
  type Ruleset,
  TABLE_FAMILY,
  TABLE_NAME,
  thresholdChainName,
  thresholdsOf,
} from '@slipstream/shared/core/ruleset';
import { probeCapabilities } from './capabilities.ts';

export type KernelErrorClass =
  | 'not-supported'
  | 'no-such-object'
  | 'exists'
  | 'busy'
  | 'permission'
  | 'invalid'
  | 'unknown';

/** A refused transaction. Shaped like nftables-napi's NftError, which is accepted as is. */
export class KernelError extends Error {
  readonly errorClass: KernelErrorClass;
  readonly nftMessage: string;
  constructor(nftMessage: string, errorClass: KernelErrorClass) {
    super(nftMessage.trim());
    this.name = 'KernelError';
    this.errorClass = errorClass;
    this.nftMessage = nftMessage;
  }
}

/** The errorClass of an NftError/KernelError (structurally), or 'unknown'. */
export function errorClassOf(error: unknown): KernelErrorClass {
  const c = (error as { errorClass?: unknown } | null)?.errorClass;
  return typeof c === 'string' ? (c as KernelErrorClass) : 'unknown';
}

/** The first `Error:` line of an nft error, or the error's message. */
export function errorText(error: unknown): string {
  const raw = (error as { nftMessage?: unknown } | null)?.nftMessage;
  const text = typeof raw === 'string' ? raw : error instanceof Error ? error.message : String(error);
  const line = text.split('\n').find((l) => /\bError:/.test(l)) ?? text.split('\n')[0] ?? '';
  return line.trim().slice(0, 500);
}

export interface Kernel {
  /** Applies a Change as ONE transaction (nothing when it is empty). Rejects with the kernel's error. */
  apply(change: Change): Promise<void>;
  /** Reads the whole table back (every element): null when there is no table. */
  readTable(): Promise<Ruleset | null>;
  /** Reads only the flowtable's devices (cheap: no elements); null when there is no flowtable. */
  readFlowtableDevices(): Promise<string[] | null>;
  /** What this kernel can do; commits nothing. */
  probe(): Promise<Capabilities>;
  /** Committed transactions so far (for the zero-write tests). */
  readonly writes: number;
  close(): void;
}

/** The slice of nftables-napi's NftContext the kernel edge uses. */
export interface NftRunner {
  run(commands: string | object, options?: { check?: boolean }): Promise<unknown>;
  close(): void;
}

/** `NAME` → `/run/netns/NAME`; a path is kept. */
export function netnsPath(netns: string): string {
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

export interface NapiKernelOptions {
  /** Network namespace name (under /run/netns) or path; the current namespace when absent. */
  netns?: string;
  /** Runs commands; nftables-napi's NftContext by default (tests may inject another runner). */
  runner?: NftRunner;
}

export class NapiKernel implements Kernel {
  readonly #runner: NftRunner;
  #writes = 0;

  constructor(runner: NftRunner) {
    this.#runner = runner;
  }

  /** Opens libnftables through nftables-napi (loaded here, so that MemoryKernel users never load the addon). */
  static async open(options: NapiKernelOptions = {}): Promise<NapiKernel> {
    if (options.runner) return new NapiKernel(options.runner);
    const napi = (await import('nftables-napi')) as typeof import('nftables-napi');
    const ctx = new napi.NftContext(options.netns ? { netns: netnsPath(options.netns) } : {});
    return new NapiKernel(ctx);
  }

  get writes(): number {
    return this.#writes;
  }

  async apply(change: Change): Promise<void> {
    if (isEmpty(change)) return;
    // One run = one transaction, whether JSON or (large element batches) nft text.
    await this.#runner.run(changeToInput(change));
    this.#writes++;
  }

  async readTable(): Promise<Ruleset | null> {
    try {
      return parseTable(await this.#runner.run(listTableCommand()));
    } catch (error) {
      if (errorClassOf(error) === 'no-such-object') return null;
      throw error;
    }
  }

  async readFlowtableDevices(): Promise<string[] | null> {
    try {
      // libnftables 1.0.6 JSON has no `list flowtable` command; this constant text holds no input.
      return parseFlowtable(
        await this.#runner.run(`list flowtable ${TABLE_FAMILY} ${TABLE_NAME} ${FLOWTABLE_NAME}`),
      );
    } catch (error) {
      if (errorClassOf(error) === 'no-such-object' || errorClassOf(error) === 'not-supported') return null;
      throw error;
    }
  }

  probe(): Promise<Capabilities> {
    return probeCapabilities(this.#runner);
  }

  close(): void {
    this.#runner.close();
  }
}

// ---------------------------------------------------------------------------------------------
// MemoryKernel

function fail(errorClass: KernelErrorClass, what: string): never {
  const errno: Record<KernelErrorClass, string> = {
    'not-supported': 'Operation not supported',
    'no-such-object': 'No such file or directory',
    exists: 'File exists',
    busy: 'Device or resource busy',
    permission: 'Operation not permitted',
    invalid: 'Invalid argument',
    unknown: 'Unknown error',
  };
  throw new KernelError(`Error: Could not process rule: ${errno[errorClass]}\n${what}`, errorClass);
}

export interface MemoryKernelOptions {
  /** Whether flowtables are supported (default true). */
  flowtable?: boolean;
  /** The links that exist (flowtable devices must be among them); any name is accepted when absent. */
  links?: Iterable<string>;
  /** An existing table to adopt. */
  table?: Ruleset | null;
}

/**
 * An in-memory nf_tables twin for one table: applies Changes atomically with the kernel's
 * rules (objects must exist to be deleted or used, an element cannot change its verdict in
 * place, a chain still jumped to or a flowtable still used cannot be deleted, flowtable
 * devices must exist) and can dump its state as nft text.
 */
export class MemoryKernel implements Kernel {
  #table: Ruleset | null;
  #writes = 0;
  #flowtable: boolean;
  #links: Set<string> | null;
  #failures: Error[] = [];
  /** Every Change committed, in order (tests inspect them). */
  readonly applied: Change[] = [];
  /** Number of full table reads. */
  reads = 0;

  constructor(options: MemoryKernelOptions = {}) {
    this.#flowtable = options.flowtable ?? true;
    this.#links = options.links ? new Set(options.links) : null;
    this.#table = options.table ? structuredClone(options.table) : null;
  }

  get writes(): number {
    return this.#writes;
  }

  /** The next `apply` rejects with this error (after validating nothing). */
  failNext(error: Error = new KernelError('Error: injected failure', 'unknown')): void {
    this.#failures.push(error);
  }

  /** Simulates another program changing the table (drift). */
  tamper(mutate: (table: Ruleset | null) => Ruleset | null): void {
    const next = mutate(this.#table ? structuredClone(this.#table) : null);
    if (next) next.thresholds = thresholdsOf(next.chains);
    this.#table = next;
  }

  /** Sets the links that exist; a link that disappears is unhooked from the flowtable, as the kernel does. */
  setLinks(links: Iterable<string>): void {
    this.#links = new Set(links);
    const ft = this.#table?.flowtable;
    if (ft) ft.devices = ft.devices.filter((d) => this.#links?.has(d));
  }

  get table(): Ruleset | null {
    return this.#table ? structuredClone(this.#table) : null;
  }

  dump(): string {
    return this.#table ? formatRuleset(this.#table) : '';
  }

  async apply(change: Change): Promise<void> {
    const injected = this.#failures.shift();
    if (injected) throw injected;
    if (isEmpty(change)) return;
    let table = this.#table ? structuredClone(this.#table) : null;
    for (const op of change.ops) table = this.#applyOp(table, op);
    if (table) table.thresholds = thresholdsOf(table.chains);
    this.#table = table;
    this.applied.push(change);
    this.#writes++;
  }

  #applyOp(table: Ruleset | null, op: Op): Ruleset | null {
    if (op.op === 'add-table') return table ?? bareTable();
    if (!table) return fail('no-such-object', `${op.op}: no table inet ${TABLE_NAME}`);
    const chainUsers = (name: string) => {
      let uses = 0;
      for (const e of table.elements.values())
        if (e.threshold !== null && thresholdChainName(e.threshold) === name) uses++;
      return uses;
    };
    const flowtableUsers = () =>
      [...table.chains.values()].some((c) => c.rules.some((r) => r.kind === 'threshold' && r.offload));
    switch (op.op) {
      case 'delete-table':
        return null;
      case 'flush-chain': {
        const chain = table.chains.get(op.chain);
        if (!chain) fail('no-such-object', `flush chain ${op.chain}`);
        chain.rules = [];
        return table;
      }
      case 'delete-flowtable':
        if (!table.flowtable || table.flowtable.name !== op.name)
          fail('no-such-object', `delete flowtable ${op.name}`);
        if (flowtableUsers()) fail('busy', `delete flowtable ${op.name}`);
        table.flowtable = null;
        return table;
      case 'add-flowtable': {
        if (!this.#flowtable) fail('not-supported', `add flowtable ${op.name}`);
        for (const dev of op.devices) {
          if (this.#links && !this.#links.has(dev))
            fail('no-such-object', `add flowtable ${op.name}: device ${dev}`);
        }
        const devices = new Set([...(table.flowtable?.devices ?? []), ...op.devices]);
        table.flowtable = { name: op.name, devices: [...devices].sort() };
        return table;
      }
      case 'add-map':
        if (!table.maps.includes(op.family)) table.maps = [...table.maps, op.family].sort();
        return table;
      case 'add-chain':
        if (!table.chains.has(op.chain))
          table.chains.set(op.chain, { name: op.chain, base: op.base, rules: [] });
        return table;
      case 'delete-elements':
        if (!table.maps.includes(op.family)) fail('no-such-object', `delete element ${MAP_NAMES[op.family]}`);
        for (const e of op.elements) {
          const key = elementKey(e);
          if (!table.elements.has(key)) fail('no-such-object', `delete element ${key}`);
          table.elements.delete(key);
        }
        return table;
      case 'add-elements':
        if (!table.maps.includes(op.family)) fail('no-such-object', `add element ${MAP_NAMES[op.family]}`);
        for (const e of op.elements) {
          const key = elementKey(e);
          if (e.threshold === null || !table.chains.has(thresholdChainName(e.threshold))) {
            fail('no-such-object', `add element ${key}: no chain`);
          }
          const have = table.elements.get(key);
          if (have && have.threshold !== e.threshold) fail('exists', `add element ${key}`);
          table.elements.set(key, { ...e });
        }
        return table;
      case 'add-rule': {
        const chain = table.chains.get(op.chain);
        if (!chain) fail('no-such-object', `add rule ${op.chain}`);
        if (op.rule.kind === 'dispatch' && !table.maps.includes(op.rule.family)) {
          fail('no-such-object', `add rule ${op.chain}: no map`);
        }
        if (op.rule.kind === 'threshold' && op.rule.offload) {
          if (!this.#flowtable) fail('not-supported', `add rule ${op.chain}: flow add`);
          if (!table.flowtable || table.flowtable.name !== op.flowtable)
            fail('no-such-object', 'flow add: no flowtable');
        }
        chain.rules.push(structuredClone(op.rule));
        return table;
      }
      case 'delete-chain':
        if (!table.chains.has(op.chain)) fail('no-such-object', `delete chain ${op.chain}`);
        if (chainUsers(op.chain) > 0) fail('busy', `delete chain ${op.chain}`);
        table.chains.delete(op.chain);
        return table;
    }
  }

  async readTable(): Promise<Ruleset | null> {
    this.reads++;
    return this.table;
  }

  async readFlowtableDevices(): Promise<string[] | null> {
    return this.#table?.flowtable ? [...this.#table.flowtable.devices] : null;
  }

  async probe(): Promise<Capabilities> {
    return this.#flowtable
      ? { flowtable: true }
      : { flowtable: false, reason: 'flowtables not supported (MemoryKernel)' };
  }

  close(): void {}
}
