// The ONE place where Slipstream's typed rulesets meet nftables syntax: a Change (or a whole
// Ruleset) becomes a libnftables JSON command object, and the kernel's JSON listing of
// `table inet slipstream` becomes a Ruleset again (adoption at start-up, drift repair).
//
// Only typed values reach the JSON: element addresses that passed `canonicalAddress`, port and
// protocol numbers, threshold numbers, device names that passed `validDeviceName`. Nothing
// from an annotation is ever spliced into nft syntax, and JSON needs no quoting rules. Changes
// with large element batches go as nft text instead (`changeToInput`: parsed ~1.35x faster),
// built only from values re-checked against strict forms (see `changeToText`).
//
// libnftables JSON (nft 1.0.6) cannot express two things, and this module works around both:
// a flowtable's `counter` flag (not parsed from JSON: the flowtable is created without it, the
// threshold chains count instead) and deleting single devices from a flowtable (`delete
// flowtable` deletes the whole flowtable; `diff` recreates it in the same transaction).

import { canonicalAddress, isIPv4, isIPv6 } from './address.ts';
import { type Change, diff, type Op } from './diff.ts';
import { isRecord as isObject } from './record.ts';
import {
  type BaseChain,
  bareTable,
  type Chain,
  type Element,
  elementKey,
  FAMILIES,
  type Family,
  FLOWTABLE_NAME,
  FLOWTABLE_PRIORITY,
  FORWARD_CHAIN,
  MAP_NAMES,
  parseThresholdChainName,
  type RuleSpec,
  type Ruleset,
  TABLE_FAMILY,
  TABLE_NAME,
  thresholdChainName,
  thresholdsOf,
} from './ruleset.ts';

export interface NftCommands {
  nftables: Record<string, unknown>[];
}

const KEY_TYPES: Readonly<Record<Family, string[]>> = {
  ip: ['ipv4_addr', 'inet_proto', 'inet_service'],
  ip6: ['ipv6_addr', 'inet_proto', 'inet_service'],
};

const PROTOCOL_NAMES: Readonly<Record<number, string>> = { 6: 'tcp', 17: 'udp' };
/** Names the kernel listing may print for inet_proto values (protocols Slipstream itself writes are tcp and udp). */
const PROTOCOL_NUMBERS: Readonly<Record<string, number>> = {
  tcp: 6,
  udp: 17,
  icmp: 1,
  'ipv6-icmp': 58,
  sctp: 132,
  dccp: 33,
  udplite: 136,
  gre: 47,
  esp: 50,
  ah: 51,
};

function protocolValue(protocol: number): string | number {
  return PROTOCOL_NAMES[protocol] ?? protocol;
}

const base = { family: TABLE_FAMILY, table: TABLE_NAME };

function elementJson(e: Element): [unknown, unknown] {
  const key = { concat: [e.address, protocolValue(e.protocol), e.port] };
  if (e.threshold === null) throw new Error(`element ${elementKey(e)} has no verdict to write`);
  return [key, { jump: { target: thresholdChainName(e.threshold) } }];
}

function elementKeyJson(e: Element): unknown {
  return { concat: [e.address, protocolValue(e.protocol), e.port] };
}

/** The expressions of a rule Slipstream writes. */
export function ruleExpr(rule: RuleSpec, flowtable: string | null): unknown[] {
  switch (rule.kind) {
    case 'dispatch':
      return [
        { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: rule.protocol } },
        {
          vmap: {
            key: {
              concat: [
                { ct: { key: `${rule.family} daddr`, dir: 'original' } },
                { ct: { key: 'protocol' } },
                { ct: { key: 'proto-dst', dir: 'original' } },
              ],
            },
            data: `@${MAP_NAMES[rule.family]}`,
          },
        },
      ];
    case 'threshold': {
      const expr: unknown[] = [
        { match: { op: '>', left: { ct: { key: 'packets' } }, right: rule.threshold } },
        { counter: null },
      ];
      if (rule.offload) {
        if (!flowtable) throw new Error('a threshold rule that offloads needs a flowtable');
        expr.push({ flow: { op: 'add', flowtable: `@${flowtable}` } });
      }
      return expr;
    }
    case 'foreign':
      throw new Error('foreign rules are never written');
  }
}

function baseChainJson(b: BaseChain | null): Record<string, unknown> {
  return b ? { type: b.type, hook: b.hook, prio: b.priority, policy: b.policy } : {};
}

function opJson(op: Op): Record<string, unknown> {
  switch (op.op) {
    case 'delete-table':
      return { delete: { table: { family: TABLE_FAMILY, name: TABLE_NAME } } };
    case 'add-table':
      return { add: { table: { family: TABLE_FAMILY, name: TABLE_NAME } } };
    case 'flush-chain':
      return { flush: { chain: { ...base, name: op.chain } } };
    case 'delete-flowtable':
      return { delete: { flowtable: { ...base, name: op.name } } };
    case 'add-flowtable':
      return {
        add: {
          flowtable: { ...base, name: op.name, hook: 'ingress', prio: FLOWTABLE_PRIORITY, dev: op.devices },
        },
      };
    case 'add-map':
      return {
        add: { map: { ...base, name: MAP_NAMES[op.family], type: KEY_TYPES[op.family], map: 'verdict' } },
      };
    case 'add-chain':
      return { add: { chain: { ...base, name: op.chain, ...baseChainJson(op.base) } } };
    case 'delete-elements':
      return {
        delete: { element: { ...base, name: MAP_NAMES[op.family], elem: op.elements.map(elementKeyJson) } },
      };
    case 'add-elements':
      return {
        add: { element: { ...base, name: MAP_NAMES[op.family], elem: op.elements.map(elementJson) } },
      };
    case 'add-rule':
      return { add: { rule: { ...base, chain: op.chain, expr: ruleExpr(op.rule, op.flowtable) } } };
    case 'delete-chain':
      return { delete: { chain: { ...base, name: op.chain } } };
  }
}

/** The libnftables JSON command object for a Change: one run of it is one transaction. */
export function changeToCommands(change: Change): NftCommands {
  return { nftables: change.ops.map(opJson) };
}

/** The commands that create a whole ruleset in a namespace without the table. */
export function rulesetToCommands(ruleset: Ruleset): NftCommands {
  return changeToCommands(diff(null, ruleset));
}

// ---------------------------------------------------------------------------------------------
// nft text for large element batches
//
// libnftables parses its text syntax faster than JSON (100,000 elements: ~0.75 s against ~1.05 s),
// so a Change with many elements is sent as text, in ONE buffer (one run = one transaction, as
// with `nft -f`). Text has quoting rules JSON does not, so it is emitted only from values checked
// here, each against a strict form: addresses that node:net accepts and that consist of
// [0-9a-f.:] only, integers in range, chain names Slipstream itself makes (`forward`,
// `threshold-N`), base-chain keywords of lowercase letters. Anything else — and, as they cannot
// be verified on a kernel without flowtables, flowtable operations and `flow add` rules — makes
// `changeToText` return null, and the Change goes as JSON.

/** Changes with at least this many elements go as nft text (smaller ones: JSON, as always). */
export const TEXT_MIN_ELEMENTS = 1000;

class NotText extends Error {}

const V4_TEXT = /^[0-9]{1,3}(\.[0-9]{1,3}){3}$/;
const V6_TEXT = /^[0-9a-f:.]{2,45}$/;

function textMap(family: Family): string {
  if (family !== 'ip' && family !== 'ip6') throw new NotText();
  return MAP_NAMES[family];
}

function textAddress(e: Element): string {
  const ok =
    e.family === 'ip'
      ? V4_TEXT.test(e.address) && isIPv4(e.address)
      : V6_TEXT.test(e.address) && isIPv6(e.address);
  if (!ok) throw new NotText();
  return e.address;
}

function textInt(n: unknown, max: number): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > max) throw new NotText();
  return n;
}

function textChain(name: string): string {
  if (name !== FORWARD_CHAIN && parseThresholdChainName(name) === null) throw new NotText();
  return name;
}

function textWord(word: string): string {
  if (!/^[a-z]{1,32}$/.test(word)) throw new NotText();
  return word;
}

function textElementKey(family: Family, e: Element): string {
  if (e.family !== family) throw new NotText();
  const protocol = textInt(e.protocol, 255);
  return `${textAddress(e)} . ${PROTOCOL_NAMES[protocol] ?? protocol} . ${textInt(e.port, 65535)}`;
}

function textElement(family: Family, e: Element): string {
  if (e.threshold === null) throw new NotText();
  return `${textElementKey(family, e)} : jump threshold-${textInt(e.threshold, 9_999_999)}`;
}

function textRule(rule: RuleSpec): string {
  switch (rule.kind) {
    case 'dispatch': {
      const family = rule.family === 'ip' ? 'ip' : rule.family === 'ip6' ? 'ip6' : null;
      const protocol = rule.protocol === 'tcp' ? 'tcp' : rule.protocol === 'udp' ? 'udp' : null;
      if (!family || !protocol) throw new NotText();
      return `meta l4proto ${protocol} ct original ${family} daddr . ct protocol . ct original proto-dst vmap @${MAP_NAMES[family]}`;
    }
    case 'threshold':
      if (rule.offload) throw new NotText();
      return `ct packets > ${textInt(rule.threshold, 9_999_999)} counter`;
    case 'foreign':
      throw new NotText();
  }
}

const TABLE = `${TABLE_FAMILY} ${TABLE_NAME}`;

function opText(op: Op): string {
  switch (op.op) {
    case 'delete-table':
      return `delete table ${TABLE}`;
    case 'add-table':
      return `add table ${TABLE}`;
    case 'flush-chain':
      return `flush chain ${TABLE} ${textChain(op.chain)}`;
    case 'delete-flowtable':
    case 'add-flowtable':
      throw new NotText();
    case 'add-map':
      return `add map ${TABLE} ${textMap(op.family)} { type ${KEY_TYPES[op.family].join(' . ')} : verdict; }`;
    case 'add-chain': {
      const b = op.base;
      if (!b) return `add chain ${TABLE} ${textChain(op.chain)}`;
      const prio = textInt(b.priority, 1000);
      return `add chain ${TABLE} ${textChain(op.chain)} { type ${textWord(b.type)} hook ${textWord(b.hook)} priority ${prio}; policy ${textWord(b.policy)}; }`;
    }
    case 'delete-elements':
      return `delete element ${TABLE} ${textMap(op.family)} { ${op.elements.map((e) => textElementKey(op.family, e)).join(', ')} }`;
    case 'add-elements':
      return `add element ${TABLE} ${textMap(op.family)} { ${op.elements.map((e) => textElement(op.family, e)).join(', ')} }`;
    case 'add-rule':
      return `add rule ${TABLE} ${textChain(op.chain)} ${textRule(op.rule)}`;
    case 'delete-chain':
      return `delete chain ${TABLE} ${textChain(op.chain)}`;
  }
}

/** The Change as one nft text buffer (see above), or null when some value does not qualify. */
export function changeToText(change: Change): string | null {
  const lines: string[] = [];
  try {
    for (const op of change.ops) {
      if ((op.op === 'add-elements' || op.op === 'delete-elements') && op.elements.length === 0) continue;
      lines.push(opText(op));
    }
  } catch (error) {
    if (error instanceof NotText) return null;
    throw error;
  }
  return `${lines.join('\n')}\n`;
}

/** What the kernel edge runs for a Change: nft text for large element batches when it qualifies, else JSON. */
export function changeToInput(change: Change): NftCommands | string {
  const elements = change.summary.elementsAdded + change.summary.elementsRemoved;
  if (elements >= TEXT_MIN_ELEMENTS) {
    const text = changeToText(change);
    if (text !== null) return text;
  }
  return changeToCommands(change);
}

/** `list table inet slipstream` as a command object. */
export function listTableCommand(): NftCommands {
  return { nftables: [{ list: { table: { family: TABLE_FAMILY, name: TABLE_NAME } } }] };
}

// ---------------------------------------------------------------------------------------------
// Parsing the kernel's listing

type Json = Record<string, unknown>;

/** Canonical JSON (sorted keys, counter values dropped) for comparing and reporting foreign rules. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (isObject(v)) {
    const keys = Object.keys(v).sort();
    return `{${keys
      .map((k) => {
        const value = k === 'counter' && (v[k] === null || isObject(v[k])) ? null : v[k];
        return `${JSON.stringify(k)}:${canonicalJson(value)}`;
      })
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

function ctKey(v: unknown, key: string, dir: 'original' | null): boolean {
  if (!isObject(v) || !isObject(v.ct)) return false;
  const ct = v.ct;
  if (ct.key !== key) return false;
  if (dir === null) return ct.dir === undefined || ct.dir === 'original';
  return ct.dir === dir;
}

/** Recognizes the rules Slipstream writes; anything else is `foreign`. */
export function parseRule(expr: unknown, flowtable: string | null): RuleSpec {
  const foreign: RuleSpec = { kind: 'foreign', text: canonicalJson(expr) };
  if (!Array.isArray(expr)) return foreign;
  const [first, second, third, ...rest] = expr as unknown[];
  if (rest.length > 0 || !isObject(first) || !isObject(first.match)) return foreign;
  const match = first.match;

  // dispatch
  if (
    expr.length === 2 &&
    match.op === '==' &&
    isObject(match.left) &&
    isObject(match.left.meta) &&
    match.left.meta.key === 'l4proto' &&
    (match.right === 'tcp' || match.right === 'udp') &&
    isObject(second) &&
    isObject(second.vmap)
  ) {
    const vmap = second.vmap;
    const concat = isObject(vmap.key) ? vmap.key.concat : undefined;
    if (!Array.isArray(concat) || concat.length !== 3) return foreign;
    for (const family of FAMILIES) {
      if (
        ctKey(concat[0], `${family} daddr`, 'original') &&
        ctKey(concat[1], 'protocol', null) &&
        ctKey(concat[2], 'proto-dst', 'original') &&
        vmap.data === `@${MAP_NAMES[family]}`
      ) {
        return { kind: 'dispatch', family, protocol: match.right };
      }
    }
    return foreign;
  }

  // threshold
  if (
    match.op === '>' &&
    isObject(match.left) &&
    isObject(match.left.ct) &&
    match.left.ct.key === 'packets' &&
    match.left.ct.dir === undefined &&
    typeof match.right === 'number' &&
    Number.isInteger(match.right) &&
    match.right >= 0 &&
    isObject(second) &&
    'counter' in second &&
    Object.keys(second).length === 1
  ) {
    if (third === undefined) return { kind: 'threshold', threshold: match.right, offload: false };
    if (
      isObject(third) &&
      isObject(third.flow) &&
      third.flow.op === 'add' &&
      flowtable !== null &&
      (third.flow.flowtable === `@${flowtable}` || third.flow.flowtable === flowtable)
    ) {
      return { kind: 'threshold', threshold: match.right, offload: true };
    }
  }
  return foreign;
}

function parseElement(family: Family, raw: unknown): Element | string {
  let entry = raw;
  // `{"elem": {"val": ..., "counter": ...}}` wraps elements that carry extra data.
  if (Array.isArray(entry) && entry.length === 2) {
    let [key, verdict] = entry as [unknown, unknown];
    if (isObject(key) && isObject(key.elem)) key = key.elem.val;
    const concat = isObject(key) ? key.concat : undefined;
    if (Array.isArray(concat) && concat.length === 3) {
      const [addr, proto, port] = concat as [unknown, unknown, unknown];
      const parsed = typeof addr === 'string' ? canonicalAddress(addr) : null;
      const protocol =
        typeof proto === 'number' ? proto : typeof proto === 'string' ? PROTOCOL_NUMBERS[proto] : undefined;
      if (
        parsed?.ok &&
        parsed.family === family &&
        protocol !== undefined &&
        typeof port === 'number' &&
        Number.isInteger(port)
      ) {
        let threshold: number | null = null;
        if (isObject(verdict) && isObject(verdict.jump) && typeof verdict.jump.target === 'string') {
          const m = /^threshold-(0|[1-9][0-9]{0,6})$/.exec(verdict.jump.target);
          if (m) threshold = Number(m[1]);
        }
        return { family, address: parsed.address, protocol, port, threshold };
      }
    }
    entry = raw;
  }
  return `element ${canonicalJson(entry).slice(0, 200)} in ${MAP_NAMES[family]}`;
}

function listItems(output: unknown): Json[] {
  if (!isObject(output) || !Array.isArray(output.nftables)) return [];
  return output.nftables.filter(isObject);
}

function sameTable(o: Json): boolean {
  return o.family === TABLE_FAMILY && o.table === TABLE_NAME;
}

function devicesOf(dev: unknown): string[] {
  if (typeof dev === 'string') return [dev];
  if (Array.isArray(dev)) return dev.filter((d): d is string => typeof d === 'string');
  return [];
}

/**
 * Parses the JSON output of `list table inet slipstream` into a Ruleset (with empty
 * bookkeeping), or null when the output holds no such table. Everything Slipstream does not
 * write is reported in `foreign` (or, for rules and chains, as foreign rules and extra chains),
 * so that `diff` repairs or rebuilds it.
 */
export function parseTable(output: unknown): Ruleset | null {
  const items = listItems(output);
  const table = items.find(
    (i) => isObject(i.table) && i.table.family === TABLE_FAMILY && i.table.name === TABLE_NAME,
  );
  if (!table) return null;

  const ruleset: Ruleset = bareTable();
  const rules: { chain: string; expr: unknown }[] = [];

  for (const item of items) {
    const [kind] = Object.keys(item);
    const body = kind === undefined ? undefined : item[kind];
    if (kind === 'metainfo' || kind === 'table' || !isObject(body)) continue;
    if (!sameTable(body)) continue;
    const name = typeof body.name === 'string' ? body.name : '?';
    switch (kind) {
      case 'flowtable': {
        if (name === FLOWTABLE_NAME && body.hook === 'ingress' && body.prio === FLOWTABLE_PRIORITY) {
          ruleset.flowtable = { name, devices: [...new Set(devicesOf(body.dev))].sort() };
        } else {
          ruleset.foreign.push(`flowtable ${name}`);
        }
        break;
      }
      case 'map': {
        const family = FAMILIES.find((f) => MAP_NAMES[f] === name);
        const typeOk =
          family !== undefined &&
          Array.isArray(body.type) &&
          canonicalJson(body.type) === canonicalJson(KEY_TYPES[family]) &&
          body.map === 'verdict' &&
          body.flags === undefined;
        if (!family || !typeOk) {
          ruleset.foreign.push(`map ${name}`);
          break;
        }
        ruleset.maps.push(family);
        const elems = Array.isArray(body.elem) ? body.elem : [];
        for (const raw of elems) {
          const e = parseElement(family, raw);
          if (typeof e === 'string') ruleset.foreign.push(e);
          else ruleset.elements.set(elementKey(e), e);
        }
        break;
      }
      case 'chain': {
        const chainBase: BaseChain | null =
          typeof body.hook === 'string'
            ? {
                type: String(body.type),
                hook: body.hook,
                priority: typeof body.prio === 'number' ? body.prio : Number.NaN,
                policy: typeof body.policy === 'string' ? body.policy : 'accept',
              }
            : null;
        const chain: Chain = { name, base: chainBase, rules: [] };
        ruleset.chains.set(name, chain);
        break;
      }
      case 'rule': {
        if (typeof body.chain === 'string') rules.push({ chain: body.chain, expr: body.expr });
        break;
      }
      default:
        ruleset.foreign.push(`${kind} ${name}`);
    }
  }
  const flowtable = ruleset.flowtable?.name ?? null;
  for (const { chain, expr } of rules) {
    ruleset.chains.get(chain)?.rules.push(parseRule(expr, flowtable));
  }
  ruleset.maps.sort((a, b) => FAMILIES.indexOf(a) - FAMILIES.indexOf(b));
  ruleset.thresholds = thresholdsOf(ruleset.chains);
  return ruleset;
}

/** Parses the JSON output of `list flowtable inet slipstream ft`: its devices, or null. */
export function parseFlowtable(output: unknown): string[] | null {
  for (const item of listItems(output)) {
    const body = item.flowtable;
    if (isObject(body) && sameTable(body) && body.name === FLOWTABLE_NAME) {
      return [...new Set(devicesOf(body.dev))].sort();
    }
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Human-readable nft text (for `status`, logs and the MemoryKernel dump; never fed to nft)

function ruleText(rule: RuleSpec, flowtable: string | null): string {
  switch (rule.kind) {
    case 'dispatch':
      return `meta l4proto ${rule.protocol} ct original ${rule.family} daddr . ct protocol . ct original proto-dst vmap @${MAP_NAMES[rule.family]}`;
    case 'threshold':
      return `ct packets > ${rule.threshold} counter${rule.offload ? ` flow add @${flowtable ?? FLOWTABLE_NAME}` : ''}`;
    case 'foreign':
      return `# foreign: ${rule.text}`;
  }
}

function elementText(e: Element): string {
  const verdict = e.threshold === null ? '# unknown verdict' : `jump ${thresholdChainName(e.threshold)}`;
  return `${e.address} . ${PROTOCOL_NAMES[e.protocol] ?? e.protocol} . ${e.port} : ${verdict}`;
}

/** The ruleset in nft's text syntax, elements sorted (like `nft list table inet slipstream`). */
export function formatRuleset(ruleset: Ruleset): string {
  const lines = [`table ${ruleset.family} ${ruleset.table} {`];
  if (ruleset.flowtable) {
    const devs = ruleset.flowtable.devices;
    lines.push(`\tflowtable ${ruleset.flowtable.name} {`, '\t\thook ingress priority filter');
    if (devs.length > 0) lines.push(`\t\tdevices = { ${devs.join(', ')} }`);
    lines.push('\t}', '');
  }
  const all = [...ruleset.elements.values()].sort((a, b) =>
    elementKey(a) < elementKey(b) ? -1 : elementKey(a) > elementKey(b) ? 1 : 0,
  );
  for (const family of ruleset.maps) {
    lines.push(`\tmap ${MAP_NAMES[family]} {`, `\t\ttype ${KEY_TYPES[family].join(' . ')} : verdict`);
    const elems = all.filter((e) => e.family === family).map(elementText);
    if (elems.length > 0) lines.push(`\t\telements = { ${elems.join(',\n\t\t\t     ')} }`);
    lines.push('\t}', '');
  }
  const flowtable = ruleset.flowtable?.name ?? null;
  for (const chain of ruleset.chains.values()) {
    lines.push(`\tchain ${chain.name} {`);
    if (chain.base) {
      const prio = chain.base.priority === 0 ? 'filter' : `filter + ${chain.base.priority}`;
      lines.push(
        `\t\ttype ${chain.base.type} hook ${chain.base.hook} priority ${prio}; policy ${chain.base.policy};`,
      );
    }
    for (const rule of chain.rules) lines.push(`\t\t${ruleText(rule, flowtable)}`);
    lines.push('\t}', '');
  }
  if (lines[lines.length - 1] === '') lines.pop();
  lines.push('}');
  return lines.join('\n');
}

/** A short description of a Change for logs: counts, not contents. */
export function describeChange(change: Change): string {
  const s = change.summary;
  const parts: string[] = [];
  if (s.rebuild) parts.push('rebuild table');
  if (s.tableCreated) parts.push('create table');
  if (s.elementsAdded) parts.push(`+${s.elementsAdded} elements`);
  if (s.elementsRemoved) parts.push(`-${s.elementsRemoved} elements`);
  if (s.chainsAdded.length) parts.push(`+chains ${s.chainsAdded.join(',')}`);
  if (s.chainsRemoved.length) parts.push(`-chains ${s.chainsRemoved.join(',')}`);
  if (s.chainsRewritten.length) parts.push(`rewrite ${s.chainsRewritten.join(',')}`);
  if (s.devicesAdded.length) parts.push(`+devices ${s.devicesAdded.join(',')}`);
  if (s.devicesRemoved.length) parts.push(`-devices ${s.devicesRemoved.join(',')}`);
  return parts.join('; ') || 'no change';
}
