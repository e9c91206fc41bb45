// A Change that only adds and deletes elements (a Service added, changed or deleted; a node
// address moved), as netlink set element operations for nftables-napi's NftBatch: the common
// change at scale, written without libnftables (which re-reads its cache and parses text on every
// run: milliseconds, more beside large maps). Anything else (chains, maps, the flowtable, foreign verdicts)
// and changes of more than MAX_BATCH_ELEMENTS elements go through libnftables as nft text.
//
// Keys are laid out as the kernel stores the typed concatenations of ruleset.ts: each field in
// network byte order, padded to 4 bytes (ipv4_addr . inet_proto . inet_service: 12 bytes).

import { addressBytes } from '@slipstream/shared/core/address';
import type { Change } from '@slipstream/shared/core/change';
import {
  type Element,
  type Family,
  MAP_NAMES,
  NODE_SET_NAMES,
  TABLE_FAMILY,
  TABLE_NAME,
  thresholdChainName,
} from '@slipstream/shared/core/ruleset';
import type { SetElementsOp } from 'nftables-napi/batch';

/** Past this a change is bulk work (a relist, a policy change), where nft text's parsing is small beside it. */
export const MAX_BATCH_ELEMENTS = 4096;

/** An address of the table (canonical text, ruleset.ts) as its bytes; a malformed one is a bug upstream. */
function keyAddress(family: Family, address: string): Uint8Array {
  const bytes = addressBytes(family, address);
  if (!bytes) throw new Error(`not an ${family === 'ip' ? 'IPv4' : 'IPv6'} address: ${address}`);
  return bytes;
}

/** A map element's key: [address .] protocol . port, each field padded to 4 bytes. */
export function elementKeyBytes(e: Pick<Element, 'family' | 'address' | 'protocol' | 'port'>): Uint8Array {
  const address = e.family === 'np' ? new Uint8Array(0) : keyAddress(e.family, e.address);
  const out = new Uint8Array(address.length + 8);
  out.set(address, 0);
  out[address.length] = e.protocol;
  out[address.length + 4] = e.port >> 8;
  out[address.length + 5] = e.port & 0xff;
  return out;
}

/** The Change as set element operations, in its order; null when it is not for a netlink batch. */
export function elementBatch(change: Change): SetElementsOp[] | null {
  const ops: SetElementsOp[] = [];
  let count = 0;
  const base = { family: TABLE_FAMILY, table: TABLE_NAME } as const;
  for (const op of change.ops) {
    switch (op.op) {
      case 'add-elements':
      case 'delete-elements': {
        const add = op.op === 'add-elements';
        if (add && op.elements.some((e) => e.threshold === null)) return null;
        const elements = op.elements.map((e) => ({
          key: elementKeyBytes(e),
          ...(add ? { jump: thresholdChainName(e.threshold!) } : {}),
        }));
        ops.push({ ...base, op: add ? 'add' : 'delete', set: MAP_NAMES[op.family], elements });
        count += elements.length;
        break;
      }
      case 'add-set-elements':
      case 'delete-set-elements': {
        const elements = op.addresses.map((a) => ({ key: keyAddress(op.family, a) }));
        ops.push({
          ...base,
          op: op.op === 'add-set-elements' ? 'add' : 'delete',
          set: NODE_SET_NAMES[op.family],
          elements,
        });
        count += elements.length;
        break;
      }
      default:
        return null;
    }
    if (count > MAX_BATCH_ELEMENTS) return null;
  }
  return ops.length > 0 ? ops : null;
}
