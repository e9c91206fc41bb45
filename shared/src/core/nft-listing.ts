// THE listing parser: the kernel's JSON listing of `table inet slipstream` (libnftables JSON
// output, nft 1.0.6) becomes a Ruleset again, for adoption at start-up and drift repair.
// Everything Slipstream does not write, or writes otherwise, is reported, never silently
// adopted: foreign objects (with their handle, so that the next sync deletes them), maps of
// Slipstream's names with another type, flags or size, flowtables with another hook, foreign
// rules in Slipstream's chains, and elements with other verdicts.
//
// The JSON listing does not show a flowtable's flags (nft 1.0.6): `counter` is parsed as null
// (unknown) here, and the kernel edge asks the kernel for the flags directly.

import { canonicalAddress } from './address.ts';
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
  MAPS,
  type MapId,
  NODE_SET_NAMES,
  parseThresholdChainName,
  type RuleSpec,
  type Ruleset,
  TABLE_FAMILY,
  TABLE_NAME,
  thresholdsOf,
} from './ruleset.ts';

/** The key type of each map, as the JSON listing prints it. */
const KEY_TYPES: Readonly<Record<MapId, string[]>> = {
  ip: ['ipv4_addr', 'inet_proto', 'inet_service'],
  ip6: ['ipv6_addr', 'inet_proto', 'inet_service'],
  np: ['inet_proto', 'inet_service'],
};
const SET_TYPES: Readonly<Record<Family, string>> = { ip: 'ipv4_addr', ip6: 'ipv6_addr' };

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

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

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

/** `meta l4proto tcp|udp`, the protocol dependency that starts the dispatch and nodeport rules; else null. */
function l4protoMatch(match: Record<string, unknown>): 'tcp' | 'udp' | null {
  if (match.op !== '==' || !isObject(match.left) || !isObject(match.left.meta)) return null;
  if (match.left.meta.key !== 'l4proto') return null;
  return match.right === 'tcp' || match.right === 'udp' ? match.right : null;
}

/** Recognizes the rules Slipstream writes; anything else is `foreign`. */
export function parseRule(expr: unknown, flowtable: string | null): RuleSpec {
  const foreign: RuleSpec = { kind: 'foreign', text: canonicalJson(expr) };
  if (!Array.isArray(expr)) return foreign;
  const [first, second, third, ...rest] = expr as unknown[];
  if (rest.length > 0 || !isObject(first) || !isObject(first.match)) return foreign;
  const match = first.match;
  const protocol = l4protoMatch(match);

  // dispatch
  if (expr.length === 2 && protocol && isObject(second) && isObject(second.vmap)) {
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
        return { kind: 'dispatch', family, protocol };
      }
    }
    return foreign;
  }

  // nodeport
  if (
    expr.length === 3 &&
    protocol &&
    isObject(second) &&
    isObject(second.match) &&
    isObject(third) &&
    isObject(third.vmap)
  ) {
    const set = second.match;
    const vmap = third.vmap;
    const concat = isObject(vmap.key) ? vmap.key.concat : undefined;
    if (set.op !== '==' || !Array.isArray(concat) || concat.length !== 2) return foreign;
    for (const family of FAMILIES) {
      if (
        ctKey(set.left, `${family} daddr`, 'original') &&
        set.right === `@${NODE_SET_NAMES[family]}` &&
        ctKey(concat[0], 'protocol', null) &&
        ctKey(concat[1], 'proto-dst', 'original') &&
        vmap.data === `@${MAP_NAMES.np}`
      ) {
        return { kind: 'nodeport', family, protocol };
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

function verdictThreshold(verdict: unknown): number | null {
  if (isObject(verdict) && isObject(verdict.jump) && typeof verdict.jump.target === 'string') {
    const m = /^threshold-(0|[1-9][0-9]{0,6})$/.exec(verdict.jump.target);
    if (m) return Number(m[1]);
  }
  return null;
}

function protocolNumber(proto: unknown): number | undefined {
  return typeof proto === 'number' ? proto : typeof proto === 'string' ? PROTOCOL_NUMBERS[proto] : undefined;
}

function parseElement(family: MapId, raw: unknown): Element | string {
  // `{"elem": {"val": ..., "counter": ...}}` wraps elements that carry extra data.
  if (Array.isArray(raw) && raw.length === 2) {
    let [key, verdict] = raw as [unknown, unknown];
    if (isObject(key) && isObject(key.elem)) key = key.elem.val;
    const concat = isObject(key) ? key.concat : undefined;
    const threshold = verdictThreshold(verdict);
    if (family === 'np' && Array.isArray(concat) && concat.length === 2) {
      const [proto, port] = concat as [unknown, unknown];
      const protocol = protocolNumber(proto);
      if (protocol !== undefined && typeof port === 'number' && Number.isInteger(port)) {
        return { family, address: '', protocol, port, threshold };
      }
    }
    if (family !== 'np' && Array.isArray(concat) && concat.length === 3) {
      const [addr, proto, port] = concat as [unknown, unknown, unknown];
      const parsed = typeof addr === 'string' ? canonicalAddress(addr) : null;
      const protocol = protocolNumber(proto);
      if (
        parsed?.ok &&
        parsed.family === family &&
        protocol !== undefined &&
        typeof port === 'number' &&
        Number.isInteger(port)
      ) {
        return { family, address: parsed.address, protocol, port, threshold };
      }
    }
  }
  return `element ${canonicalJson(raw).slice(0, 200)} in ${MAP_NAMES[family]}`;
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

/** The keys a set Slipstream writes has in the listing. */
const SET_KEYS: ReadonlySet<string> = new Set(['family', 'name', 'table', 'type', 'handle', 'elem']);

/** The keys a map Slipstream writes has in the listing; any other (flags, size, timeout, ...) makes it foreign. */
const MAP_KEYS: ReadonlySet<string> = new Set(['family', 'name', 'table', 'type', 'handle', 'map', 'elem']);

function handleOf(body: Json): number | null {
  return typeof body.handle === 'number' && Number.isSafeInteger(body.handle) ? body.handle : null;
}

/** Why a map of Slipstream's name is not as Slipstream writes it, or null when it is. */
function mapMismatch(family: MapId, body: Json): string | null {
  if (!Array.isArray(body.type) || canonicalJson(body.type) !== canonicalJson(KEY_TYPES[family])) {
    return `type ${canonicalJson(body.type)}`;
  }
  if (body.map !== 'verdict') return `data ${canonicalJson(body.map)}`;
  const extra = Object.keys(body).filter((k) => !MAP_KEYS.has(k));
  if (extra.length > 0) return extra.map((k) => `${k} ${canonicalJson(body[k])}`).join(', ');
  return null;
}

/**
 * Parses the JSON output of `list table inet slipstream` into a Ruleset (with empty
 * bookkeeping), or null when the output holds no such table.
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
    const handle = handleOf(body);
    switch (kind) {
      case 'flowtable': {
        if (name === FLOWTABLE_NAME && body.hook === 'ingress' && body.prio === FLOWTABLE_PRIORITY) {
          ruleset.flowtable = { name, devices: [...new Set(devicesOf(body.dev))].sort(), counter: null };
        } else {
          const why =
            name === FLOWTABLE_NAME
              ? `hook ${canonicalJson(body.hook)} priority ${canonicalJson(body.prio)}`
              : 'not a Slipstream flowtable';
          ruleset.foreign.push({ kind: 'flowtable', name, handle, why });
        }
        break;
      }
      case 'set': {
        const family = FAMILIES.find((f) => NODE_SET_NAMES[f] === name);
        const extra = Object.keys(body).filter((k) => !SET_KEYS.has(k));
        const why =
          family === undefined
            ? 'not a Slipstream set'
            : body.type !== SET_TYPES[family]
              ? `type ${canonicalJson(body.type)}`
              : extra.length > 0
                ? extra.map((k) => `${k} ${canonicalJson(body[k])}`).join(', ')
                : null;
        const addresses = (Array.isArray(body.elem) ? body.elem : []).map((a) =>
          typeof a === 'string' ? canonicalAddress(a) : null,
        );
        const good = addresses.every((a) => a?.ok && a.family === family);
        if (!family || why !== null || !good) {
          ruleset.foreign.push({
            kind: 'set',
            name,
            handle,
            why: why ?? 'an element that is not an address',
          });
          break;
        }
        ruleset.nodeSets.push(family);
        ruleset.nodeAddresses[family] = addresses.map((a) => (a as { address: string }).address).sort();
        break;
      }
      case 'map': {
        const family = MAPS.find((f) => MAP_NAMES[f] === name);
        const why = family === undefined ? 'not a Slipstream map' : mapMismatch(family, body);
        if (!family || why !== null) {
          ruleset.foreign.push({ kind: 'map', name, handle, why: why ?? 'not a Slipstream map' });
          break;
        }
        const elems = Array.isArray(body.elem) ? body.elem : [];
        const parsed: Element[] = [];
        let odd: string | null = null;
        for (const raw of elems) {
          const e = parseElement(family, raw);
          if (typeof e === 'string') {
            odd = e;
            break;
          }
          parsed.push(e);
        }
        if (odd !== null) {
          // An element this parser cannot read: the map is replaced as a whole.
          ruleset.foreign.push({ kind: 'map', name, handle, why: odd });
          break;
        }
        ruleset.maps.push(family);
        for (const e of parsed) ruleset.elements.set(elementKey(e), e);
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
        // Chains of names Slipstream does not write are deleted by handle (their name is never written).
        const ours = name === FORWARD_CHAIN || parseThresholdChainName(name) !== null;
        if (handle !== null && !ours) chain.handle = handle;
        ruleset.chains.set(name, chain);
        break;
      }
      case 'rule': {
        if (typeof body.chain === 'string') rules.push({ chain: body.chain, expr: body.expr });
        break;
      }
      default:
        // Sets, counters, quotas, limits, ct helpers, ...: nothing Slipstream writes.
        ruleset.foreign.push({ kind: kind ?? '?', name, handle, why: `not a Slipstream ${kind}` });
    }
  }
  const flowtable = ruleset.flowtable?.name ?? null;
  for (const { chain, expr } of rules) {
    ruleset.chains.get(chain)?.rules.push(parseRule(expr, flowtable));
  }
  ruleset.maps.sort((a, b) => MAPS.indexOf(a) - MAPS.indexOf(b));
  ruleset.nodeSets.sort((a, b) => FAMILIES.indexOf(a) - FAMILIES.indexOf(b));
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

/** `list table inet slipstream`, as nft text (constant: holds no input). */
export const LIST_TABLE = `list table ${TABLE_FAMILY} ${TABLE_NAME}`;
/** `list flowtable inet slipstream ft`, as nft text (constant: holds no input). */
export const LIST_FLOWTABLE = `list flowtable ${TABLE_FAMILY} ${TABLE_NAME} ${FLOWTABLE_NAME}`;
