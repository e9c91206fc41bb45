// THE writer: every byte Slipstream sends to nf_tables is written here, as nft text, from the
// typed operations of a Change (one Change = one buffer = one transaction). A dump of a ruleset is
// the text of the Change that creates it from nothing (`rulesetText`), the same lines: what the
// in-memory twin prints is what the kernel would be sent (knftables' writeOperation model).
//
// Only typed values reach the text, each re-checked against a strict form here: addresses that
// `canonicalAddress` accepts and that consist of [0-9a-f.:] only, integers in range, chain names
// Slipstream makes (`forward`, `threshold-N`), nft keywords from a fixed list, device names that
// `validDeviceName` accepts, written quoted. Anything else (an annotation never gets here; a value
// from the kernel's listing might) throws: no text is produced from it. Objects whose names came
// from the kernel (foreign sets, chains, flowtables) are deleted by their numeric handle.
//
// Why text and not libnftables JSON: JSON (nft 1.0.6) cannot set a flowtable's `counter` flag nor
// remove single devices from a flowtable, and libnftables parses text faster (100,000 elements:
// ~0.75 s against ~1.05 s).

import { isIPv4, isIPv6 } from './address.ts';
import type { Change, Op } from './change.ts';
import { DELETABLE_BY_HANDLE, diff } from './diff.ts';
import {
  type BaseChain,
  type Element,
  type Family,
  FLOWTABLE_NAME,
  FLOWTABLE_PRIORITY,
  FORWARD_CHAIN,
  MAP_NAMES,
  type MapId,
  NODE_SET_NAMES,
  parseThresholdChainName,
  type RuleSpec,
  type Ruleset,
  TABLE_FAMILY,
  TABLE_NAME,
  validDeviceName,
} from './ruleset.ts';

/** A value that cannot be written safely; nothing of the Change is sent. */
export class UnwritableError extends Error {
  override name = 'UnwritableError';
}

function refuse(what: string): never {
  throw new UnwritableError(`refusing to write ${what} as nft text`);
}

export const KEY_TYPES: Readonly<Record<MapId, string>> = {
  ip: 'ipv4_addr . inet_proto . inet_service',
  ip6: 'ipv6_addr . inet_proto . inet_service',
  np: 'inet_proto . inet_service',
};
const SET_TYPES: Readonly<Record<Family, string>> = { ip: 'ipv4_addr', ip6: 'ipv6_addr' };

const PROTOCOL_NAMES: Readonly<Record<number, string>> = { 6: 'tcp', 17: 'udp' };
const TABLE = `${TABLE_FAMILY} ${TABLE_NAME}`;

function int(n: unknown, max: number, what: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > max) refuse(`${what} ${String(n)}`);
  return n;
}

function mapName(family: MapId): string {
  const name = MAP_NAMES[family];
  if (name === undefined) refuse(`map family ${String(family)}`);
  return name;
}

function setName(family: Family): string {
  const name = NODE_SET_NAMES[family];
  if (name === undefined) refuse(`set family ${String(family)}`);
  return name;
}

function addressText(family: Family, address: string): string {
  const ok =
    family === 'ip'
      ? isIPv4(address)
      : family === 'ip6' && /^[0-9a-f:.]{2,45}$/.test(address) && isIPv6(address);
  if (!ok) refuse(`address ${JSON.stringify(address)}`);
  return address;
}

function chainName(name: string): string {
  if (name !== FORWARD_CHAIN && parseThresholdChainName(name) === null)
    refuse(`chain name ${JSON.stringify(name)}`);
  return name;
}

function flowtableName(name: string): string {
  if (name !== FLOWTABLE_NAME) refuse(`flowtable name ${JSON.stringify(name)}`);
  return name;
}

function word(w: string): string {
  if (!/^[a-z]{1,32}$/.test(w)) refuse(`keyword ${JSON.stringify(w)}`);
  return w;
}

function address(e: Element): string {
  if (e.family === 'np') refuse('an address in the nodeports map');
  return addressText(e.family, e.address);
}

function devices(list: readonly string[]): string {
  for (const d of list) if (!validDeviceName(d)) refuse(`device name ${JSON.stringify(d)}`);
  return list.map((d) => `"${d}"`).join(', ');
}

function elementKeyText(family: MapId, e: Element): string {
  if (e.family !== family) refuse(`an ${e.family} element in map ${mapName(family)}`);
  const protocol = int(e.protocol, 255, 'protocol');
  const l4 = PROTOCOL_NAMES[protocol] ?? protocol;
  const port = int(e.port, 65535, 'port');
  if (family === 'np') {
    if (e.address !== '') refuse('a nodeport element with an address');
    return `${l4} . ${port}`;
  }
  return `${address(e)} . ${l4} . ${port}`;
}

function elementText(family: MapId, e: Element): string {
  if (e.threshold === null) refuse(`element ${elementKeyText(family, e)} without a verdict`);
  return `${elementKeyText(family, e)} : jump threshold-${int(e.threshold, 9_999_999, 'threshold')}`;
}

/** A rule's statement, as Slipstream writes it. */
export function ruleText(rule: RuleSpec, flowtable: string | null): string {
  switch (rule.kind) {
    case 'dispatch': {
      const family = rule.family === 'ip' || rule.family === 'ip6' ? rule.family : refuse('rule family');
      const l4 = rule.protocol === 'tcp' || rule.protocol === 'udp' ? rule.protocol : refuse('rule protocol');
      return `meta l4proto ${l4} ct original ${family} daddr . ct protocol . ct original proto-dst vmap @${mapName(family)}`;
    }
    case 'nodeport': {
      const family = rule.family === 'ip' || rule.family === 'ip6' ? rule.family : refuse('rule family');
      const l4 = rule.protocol === 'tcp' || rule.protocol === 'udp' ? rule.protocol : refuse('rule protocol');
      return `meta l4proto ${l4} ct original ${family} daddr @${setName(family)} ct protocol . ct original proto-dst vmap @${mapName('np')}`;
    }
    case 'threshold': {
      const base = `ct packets > ${int(rule.threshold, 9_999_999, 'threshold')} counter`;
      if (!rule.offload) return base;
      if (flowtable === null) refuse('a flow add rule without a flowtable');
      return `${base} flow add @${flowtableName(flowtable)}`;
    }
    case 'foreign':
      return refuse('a foreign rule');
  }
}

function baseChainText(b: BaseChain): string {
  const prio = b.priority < 0 ? refuse('a negative priority') : int(b.priority, 1000, 'priority');
  return `{ type ${word(b.type)} hook ${word(b.hook)} priority ${prio}; policy ${word(b.policy)}; }`;
}

function objectKind(kind: string): string {
  if (!DELETABLE_BY_HANDLE.has(kind)) refuse(`an object of kind ${JSON.stringify(kind)}`);
  return kind;
}

/** One operation as one nft command line. */
export function opText(op: Op): string {
  switch (op.op) {
    case 'add-table':
      return `add table ${TABLE}`;
    case 'delete-table':
      return `delete table ${TABLE}`;
    case 'flush-chain':
      return `flush chain ${TABLE} ${chainName(op.chain)}`;
    case 'flush-map':
      return `flush map ${TABLE} ${mapName(op.family)}`;
    case 'delete-elements':
      return `delete element ${TABLE} ${mapName(op.family)} { ${op.elements.map((e) => elementKeyText(op.family, e)).join(', ')} }`;
    case 'delete-map':
      return `delete map ${TABLE} ${mapName(op.family)}`;
    case 'delete-set':
      return `delete set ${TABLE} ${setName(op.family)}`;
    case 'delete-object':
      return `delete ${objectKind(op.object.kind)} ${TABLE} handle ${int(op.object.handle, 2 ** 53, 'handle')}`;
    case 'delete-flowtable':
      return `delete flowtable ${TABLE} ${flowtableName(op.name)}`;
    case 'delete-flowtable-devices':
      return `delete flowtable ${TABLE} ${flowtableName(op.name)} { devices = { ${devices(op.devices)} }; }`;
    case 'delete-chain':
      return `delete chain ${TABLE} ${chainName(op.chain)}`;
    case 'add-flowtable': {
      const parts = [`hook ingress priority ${int(FLOWTABLE_PRIORITY, 1000, 'priority')};`];
      if (op.devices.length > 0) parts.push(`devices = { ${devices(op.devices)} };`);
      if (op.counter) parts.push('counter;');
      return `add flowtable ${TABLE} ${flowtableName(op.name)} { ${parts.join(' ')} }`;
    }
    case 'add-map':
      return `add map ${TABLE} ${mapName(op.family)} { type ${KEY_TYPES[op.family]} : verdict; }`;
    case 'add-set':
      return `add set ${TABLE} ${setName(op.family)} { type ${SET_TYPES[op.family]}; }`;
    case 'add-set-elements':
      return `add element ${TABLE} ${setName(op.family)} { ${op.addresses.map((a) => addressText(op.family, a)).join(', ')} }`;
    case 'delete-set-elements':
      return `delete element ${TABLE} ${setName(op.family)} { ${op.addresses.map((a) => addressText(op.family, a)).join(', ')} }`;
    case 'add-chain':
      return op.base
        ? `add chain ${TABLE} ${chainName(op.chain)} ${baseChainText(op.base)}`
        : `add chain ${TABLE} ${chainName(op.chain)}`;
    case 'add-elements':
      return `add element ${TABLE} ${mapName(op.family)} { ${op.elements.map((e) => elementText(op.family, e)).join(', ')} }`;
    case 'add-rule':
      return `add rule ${TABLE} ${chainName(op.chain)} ${ruleText(op.rule, op.flowtable)}`;
  }
}

/** The Change as one nft text buffer (one run of it is one transaction); throws UnwritableError. */
export function changeText(change: Change): string {
  const lines: string[] = [];
  for (const op of change.ops) {
    if ((op.op === 'add-elements' || op.op === 'delete-elements') && op.elements.length === 0) continue;
    lines.push(opText(op));
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** A ruleset as the commands that create it from nothing: what the kernel would be sent. */
export function rulesetText(ruleset: Ruleset): string {
  return changeText(diff(null, ruleset));
}
