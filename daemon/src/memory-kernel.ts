// MemoryKernel: an in-memory twin of nf_tables for one table, for unit tests. It applies the typed
// operations of a Change atomically with the kernel's rules (objects must exist to be deleted or
// used; an element cannot change its verdict in place; a chain still jumped to, a map or a
// flowtable still used by a rule cannot be deleted; flowtable devices must exist; every `add
// flowtable` sets the flowtable's flags), and dumps its state through the one writer
// (`rulesetText`: the commands that would create it). Edits by "someone else" (`tamper`) are
// reported to watchers like the kernel's change events.

import type { Change, Op } from '@slipstream/shared/core/change';
import { isEmpty } from '@slipstream/shared/core/change';
import { rulesetText } from '@slipstream/shared/core/nft-text';
import {
  bareTable,
  type Capabilities,
  type Chain,
  type Element,
  elementKey,
  FAMILIES,
  MAP_NAMES,
  MAPS,
  NODE_SET_NAMES,
  type RuleSpec,
  type Ruleset,
  TABLE_NAME,
  thresholdChainName,
  thresholdsOf,
} from '@slipstream/shared/core/ruleset';
import type { NftErrorClass } from 'nftables-napi/errors';
import { type Kernel, type KernelEvent, kernelError } from './kernel.ts';

const ERRNO: Record<NftErrorClass, string> = {
  'not-supported': 'Operation not supported',
  'no-such-object': 'No such file or directory',
  exists: 'File exists',
  busy: 'Device or resource busy',
  permission: 'Operation not permitted',
  invalid: 'Invalid argument',
  full: 'Too many open files in system',
  unknown: 'Unknown error',
};

function fail(errorClass: NftErrorClass, what: string): never {
  throw kernelError(`Error: Could not process rule: ${ERRNO[errorClass]}\n${what}`, errorClass);
}

export interface MemoryKernelOptions {
  /** Whether flowtables are supported (default true). */
  flowtable?: boolean;
  /** Whether flowtables take the counter flag (default: as `flowtable`). */
  flowtableCounter?: boolean;
  /** The links that exist (flowtable devices must be among them); any name is accepted when absent. */
  links?: Iterable<string>;
  /** An existing table to adopt. */
  table?: Ruleset | null;
  /** A size limit per map (elements beyond it fail with `full`, as a map created with `size N`). */
  mapSize?: number;
}

export class MemoryKernel implements Kernel {
  #table: Ruleset | null;
  #writes = 0;
  #generation = 1;
  readonly #flowtable: boolean;
  readonly #counter: boolean;
  #links: Set<string> | null;
  #mapSize: number | undefined;
  #failures: Error[] = [];
  #refuse: ((e: Element) => boolean) | null = null;
  readonly #listeners = new Set<(event: KernelEvent) => void>();
  /** Every Change committed, in order (tests inspect them). */
  readonly applied: Change[] = [];
  /** Number of full table reads. */
  reads = 0;

  constructor(options: MemoryKernelOptions = {}) {
    this.#flowtable = options.flowtable ?? true;
    this.#counter = options.flowtableCounter ?? this.#flowtable;
    this.#links = options.links ? new Set(options.links) : null;
    this.#table = options.table ? structuredClone(options.table) : null;
    this.#mapSize = options.mapSize;
  }

  get writes(): number {
    return this.#writes;
  }

  /** The ruleset generation: +1 per commit, ours or anyone's. */
  get generation(): number {
    return this.#generation;
  }

  /** The next `times` applies reject with this error (after validating nothing). */
  failNext(error: Error = kernelError('Error: injected failure', 'unknown'), times = 1): void {
    for (let i = 0; i < times; i++) this.#failures.push(error);
  }

  /** Refuses (as the kernel refuses a transaction) every add of an element `refuse` matches; null: none. */
  refuseElements(refuse: ((e: Element) => boolean) | null): void {
    this.#refuse = refuse;
  }

  /** Limits every map to `size` elements (as a map re-created with `size N` by someone else). */
  setMapSize(size: number | undefined): void {
    this.#mapSize = size;
  }

  /**
   * Another program changes the table (drift); watchers hear of it, as from the kernel, unless
   * `silent` (events lost: only a read-back finds it).
   */
  tamper(
    mutate: (table: Ruleset | null) => Ruleset | null,
    options: { silent?: boolean; process?: string } = {},
  ): void {
    const next = mutate(this.#table ? structuredClone(this.#table) : null);
    if (next) next.thresholds = thresholdsOf(next.chains);
    this.#table = next;
    this.#generation++;
    if (options.silent) return;
    const process = options.process ?? 'nft';
    const event: KernelEvent = {
      type: 'foreign-change',
      generation: this.#generation,
      process,
      pid: 4242,
      changes: [{ op: 'add', kind: 'table', name: '', count: 1 }],
    };
    for (const listener of [...this.#listeners]) listener(event);
  }

  /** Events were lost (as when the kernel's socket buffer overflows). */
  overrun(): void {
    for (const listener of [...this.#listeners]) listener({ type: 'overrun' });
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

  /** The table as the commands that would create it (the one writer). */
  dump(): string {
    return this.#table ? rulesetText(this.#table) : '';
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
    this.#generation++;
  }

  async check(change: Change): Promise<void> {
    const injected = this.#failures.shift();
    if (injected) throw injected;
    let table = this.#table ? structuredClone(this.#table) : null;
    for (const op of change.ops) table = this.#applyOp(table, op);
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
    const ruleUses = (pred: (c: Chain) => boolean) => [...table.chains.values()].some(pred);
    switch (op.op) {
      case 'delete-table':
        return null;
      case 'flush-chain': {
        const chain = table.chains.get(op.chain);
        if (!chain) fail('no-such-object', `flush chain ${op.chain}`);
        chain.rules = [];
        return table;
      }
      case 'flush-map': {
        if (!table.maps.includes(op.family) && !table.foreign.some((f) => f.name === MAP_NAMES[op.family]))
          fail('no-such-object', `flush map ${MAP_NAMES[op.family]}`);
        for (const [key, e] of table.elements) if (e.family === op.family) table.elements.delete(key);
        return table;
      }
      case 'delete-map': {
        const name = MAP_NAMES[op.family];
        const present = table.maps.includes(op.family) || table.foreign.some((f) => f.name === name);
        if (!present) fail('no-such-object', `delete map ${name}`);
        const uses = (r: RuleSpec) =>
          op.family === 'np' ? r.kind === 'nodeport' : r.kind === 'dispatch' && r.family === op.family;
        if (ruleUses((c) => c.rules.some(uses))) fail('busy', `delete map ${name}`);
        table.maps = table.maps.filter((f) => f !== op.family);
        table.foreign = table.foreign.filter((f) => f.name !== name);
        for (const [key, e] of table.elements) if (e.family === op.family) table.elements.delete(key);
        return table;
      }
      case 'delete-set': {
        const name = NODE_SET_NAMES[op.family];
        const present =
          table.nodeSets.includes(op.family) ||
          table.foreign.some((f) => f.kind === 'set' && f.name === name);
        if (!present) fail('no-such-object', `delete set ${name}`);
        if (ruleUses((c) => c.rules.some((r) => r.kind === 'nodeport' && r.family === op.family)))
          fail('busy', `delete set ${name}`);
        table.nodeSets = table.nodeSets.filter((f) => f !== op.family);
        table.foreign = table.foreign.filter((f) => !(f.kind === 'set' && f.name === name));
        table.nodeAddresses[op.family] = [];
        return table;
      }
      case 'delete-object': {
        const { handle, kind } = op.object;
        if (kind === 'chain') {
          const entry = [...table.chains.values()].find((c) => c.handle === handle);
          if (!entry) fail('no-such-object', `delete chain handle ${handle}`);
          table.chains.delete(entry.name);
          return table;
        }
        const i = table.foreign.findIndex((f) => f.handle === handle && f.kind === kind);
        if (i < 0) fail('no-such-object', `delete ${kind} handle ${handle}`);
        const [gone] = table.foreign.splice(i, 1);
        const set = FAMILIES.find((f) => NODE_SET_NAMES[f] === gone?.name);
        if (
          kind === 'set' &&
          set &&
          ruleUses((c) => c.rules.some((r) => r.kind === 'nodeport' && r.family === set))
        )
          fail('busy', `delete set ${gone?.name}`);
        return table;
      }
      case 'delete-flowtable':
        if (!table.flowtable || table.flowtable.name !== op.name)
          fail('no-such-object', `delete flowtable ${op.name}`);
        if (ruleUses((c) => c.rules.some((r) => r.kind === 'threshold' && r.offload)))
          fail('busy', `delete flowtable ${op.name}`);
        table.flowtable = null;
        return table;
      case 'delete-flowtable-devices': {
        const ft = table.flowtable;
        if (!ft || ft.name !== op.name) fail('no-such-object', `delete flowtable ${op.name}`);
        for (const d of op.devices)
          if (!ft.devices.includes(d)) fail('no-such-object', `delete flowtable ${op.name} device ${d}`);
        ft.devices = ft.devices.filter((d) => !op.devices.includes(d));
        return table;
      }
      case 'add-flowtable': {
        if (!this.#flowtable) fail('not-supported', `add flowtable ${op.name}`);
        if (op.counter && !this.#counter) fail('not-supported', `add flowtable ${op.name}: counter`);
        for (const dev of op.devices) {
          if (this.#links && !this.#links.has(dev))
            fail('no-such-object', `add flowtable ${op.name}: device ${dev}`);
        }
        const devices = new Set([...(table.flowtable?.devices ?? []), ...op.devices]);
        // The kernel replaces the flags with those of every add.
        table.flowtable = { name: op.name, devices: [...devices].sort(), counter: op.counter };
        return table;
      }
      case 'add-map':
        if (!table.maps.includes(op.family))
          table.maps = MAPS.filter((m) => m === op.family || table.maps.includes(m));
        return table;
      case 'add-set':
        if (!table.nodeSets.includes(op.family))
          table.nodeSets = FAMILIES.filter((f) => f === op.family || table.nodeSets.includes(f));
        return table;
      case 'add-set-elements': {
        if (!table.nodeSets.includes(op.family))
          fail('no-such-object', `add element ${NODE_SET_NAMES[op.family]}`);
        table.nodeAddresses[op.family] = [
          ...new Set([...table.nodeAddresses[op.family], ...op.addresses]),
        ].sort();
        return table;
      }
      case 'delete-set-elements': {
        if (!table.nodeSets.includes(op.family))
          fail('no-such-object', `delete element ${NODE_SET_NAMES[op.family]}`);
        for (const a of op.addresses)
          if (!table.nodeAddresses[op.family].includes(a)) fail('no-such-object', `delete element ${a}`);
        table.nodeAddresses[op.family] = table.nodeAddresses[op.family].filter(
          (a) => !op.addresses.includes(a),
        );
        return table;
      }
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
      case 'add-elements': {
        if (!table.maps.includes(op.family)) fail('no-such-object', `add element ${MAP_NAMES[op.family]}`);
        for (const e of op.elements) {
          const key = elementKey(e);
          if (e.threshold === null || !table.chains.has(thresholdChainName(e.threshold))) {
            fail('no-such-object', `add element ${key}: no chain`);
          }
          if (this.#refuse?.(e)) fail('invalid', `add element ${key}: refused`);
          const have = table.elements.get(key);
          if (have && have.threshold !== e.threshold) fail('exists', `add element ${key}`);
          table.elements.set(key, { ...e });
        }
        if (this.#mapSize !== undefined) {
          let n = 0;
          for (const e of table.elements.values()) if (e.family === op.family) n++;
          if (n > this.#mapSize) fail('full', `add element ${MAP_NAMES[op.family]}: map is full`);
        }
        return table;
      }
      case 'add-rule': {
        const chain = table.chains.get(op.chain);
        if (!chain) fail('no-such-object', `add rule ${op.chain}`);
        if (op.rule.kind === 'dispatch' && !table.maps.includes(op.rule.family)) {
          fail('no-such-object', `add rule ${op.chain}: no map`);
        }
        if (
          op.rule.kind === 'nodeport' &&
          (!table.maps.includes('np') || !table.nodeSets.includes(op.rule.family))
        ) {
          fail('no-such-object', `add rule ${op.chain}: no nodeports map or node address set`);
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
    if (!this.#flowtable) return { flowtable: false, reason: 'flowtables not supported (MemoryKernel)' };
    return this.#counter
      ? { flowtable: true, flowtableCounter: true }
      : {
          flowtable: true,
          flowtableCounter: false,
          reason: 'flowtable counter flag not supported (MemoryKernel)',
        };
  }

  async removeTable(): Promise<'removed' | 'absent'> {
    if (!this.#table) return 'absent';
    this.#table = null;
    this.#writes++;
    this.#generation++;
    return 'removed';
  }

  watch(listener: (event: KernelEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  close(): void {}
}
