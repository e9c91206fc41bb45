// The netlink batch writer against the real kernel, in a private network namespace this file
// creates and removes: what it commits is what `nft` (not this addon) then lists.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ELEMENTS_PER_MESSAGE, encodeBatch, NftBatch, type SetElement } from './batch.ts';
import { NftError } from './errors.ts';
import { NftMonitor } from './monitor.ts';

const NS = `slipstream-batch-test-${randomBytes(4).toString('hex')}`;
const nft = (...args: string[]) =>
  execFileSync('ip', ['netns', 'exec', NS, 'nft', ...args], { encoding: 'utf8' });

/** ipv4_addr . inet_proto . inet_service, each field padded to 4 bytes (as the kernel keys it). */
function key(address: string, protocol: number, port: number): Uint8Array {
  const b = Buffer.alloc(12);
  address.split('.').forEach((octet, i) => {
    b.writeUInt8(Number(octet), i);
  });
  b.writeUInt8(protocol, 4);
  b.writeUInt16BE(port, 8);
  return b;
}

function elements(): string[] {
  const doc = JSON.parse(nft('-j', 'list', 'map', 'inet', 'bt', 'm')) as {
    nftables: { map?: { elem?: [{ concat: (string | number)[] }, { jump: { target: string } }][] } }[];
  };
  const map = doc.nftables.find((i) => i.map)?.map;
  return (map?.elem ?? []).map(([k, v]) => `${k.concat.join(' ')} ${v.jump.target}`).sort();
}

let batch: NftBatch;

beforeAll(() => {
  execFileSync('ip', ['netns', 'add', NS]);
});

describe('NftBatch', () => {
  beforeAll(() => {
    execFileSync('ip', ['netns', 'exec', NS, 'nft', '-f', '-'], {
      input: [
        'add table inet bt',
        'add chain inet bt t20',
        'add chain inet bt t100',
        'add map inet bt m { type ipv4_addr . inet_proto . inet_service : verdict; }',
        'add set inet bt s { type ipv4_addr; }',
        'add element inet bt m { 10.0.0.1 . tcp . 80 : jump t20 }',
      ].join('\n'),
    });
    batch = new NftBatch({ netns: `/run/netns/${NS}` });
  });

  it('adds and deletes elements in one transaction, as nft then lists them', async () => {
    await batch.commit([
      { op: 'delete', family: 'inet', table: 'bt', set: 'm', elements: [{ key: key('10.0.0.1', 6, 80) }] },
      {
        op: 'add',
        family: 'inet',
        table: 'bt',
        set: 'm',
        elements: [
          { key: key('10.0.0.2', 6, 5432), jump: 't20' },
          { key: key('10.0.0.3', 17, 53), jump: 't100' },
        ],
      },
      { op: 'add', family: 'inet', table: 'bt', set: 's', elements: [{ key: Buffer.from([192, 0, 2, 7]) }] },
    ]);
    expect(elements()).toEqual(['10.0.0.2 tcp 5432 t20', '10.0.0.3 udp 53 t100']);
    expect(nft('list', 'set', 'inet', 'bt', 's')).toContain('192.0.2.7');
  });

  it('commits more elements than fit one message (several messages, still one transaction)', async () => {
    const many: SetElement[] = [];
    for (let i = 0; i < 3 * ELEMENTS_PER_MESSAGE + 5; i++)
      many.push({ key: key('10.1.0.1', 6, 1000 + i), jump: 't20' });
    const batches: number[] = [];
    const events = new NftMonitor({ netns: `/run/netns/${NS}`, family: 'inet', table: 'bt' }, (e) => {
      if (e.type === 'batch' && e.portId === batch.portId)
        batches.push(e.changes.reduce((n, c) => n + c.count, 0));
    });
    try {
      await batch.commit([{ op: 'add', family: 'inet', table: 'bt', set: 'm', elements: many }]);
      expect(elements()).toHaveLength(2 + many.length);
      // One transaction, announced with this writer's port id.
      await expect.poll(() => batches).toEqual([many.length]);
    } finally {
      events.close();
    }
    await batch.commit([{ op: 'delete', family: 'inet', table: 'bt', set: 'm', elements: many }]);
    expect(elements()).toHaveLength(2);
  });

  it('commits a batch larger than a netlink socket sends by default (4,096 IPv6 elements, ~340 KB)', async () => {
    execFileSync('ip', [
      'netns',
      'exec',
      NS,
      'nft',
      'add',
      'map',
      'inet',
      'bt',
      'm6',
      '{ type ipv6_addr . inet_proto . inet_service : verdict; }',
    ]);
    const many: SetElement[] = [];
    for (let i = 0; i < 4096; i++) {
      const k = Buffer.alloc(24);
      k.writeUInt16BE(0xfd00, 0);
      k.writeUInt16BE(i, 14);
      k.writeUInt8(6, 16);
      k.writeUInt16BE(80, 20);
      many.push({ key: k, jump: 't100' });
    }
    const { bytes } = encodeBatch([{ op: 'add', family: 'inet', table: 'bt', set: 'm6', elements: many }], 1);
    expect(bytes.length).toBeGreaterThan(212_992);
    await batch.commit([{ op: 'add', family: 'inet', table: 'bt', set: 'm6', elements: many }]);
    const listed = JSON.parse(nft('-j', 'list', 'map', 'inet', 'bt', 'm6')) as {
      nftables: { map?: { elem?: unknown[] } }[];
    };
    expect(listed.nftables.find((i) => i.map)?.map?.elem).toHaveLength(4096);
    nft('delete', 'map', 'inet', 'bt', 'm6');
  });

  it('commits nothing of a refused transaction, and names the class', async () => {
    const before = elements();
    let caught: unknown;
    try {
      await batch.commit([
        {
          op: 'add',
          family: 'inet',
          table: 'bt',
          set: 'm',
          elements: [{ key: key('10.0.0.9', 6, 9), jump: 't20' }],
        },
        // not there: ENOENT
        { op: 'delete', family: 'inet', table: 'bt', set: 'm', elements: [{ key: key('10.9.9.9', 6, 1) }] },
      ]);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(NftError);
    expect((caught as NftError).errorClass).toBe('no-such-object');
    expect((caught as NftError).message).toContain('delete element inet bt m');
    expect(elements()).toEqual(before);

    // A jump to a chain that does not exist; a set that does not exist.
    const addOne = (set: string, jump: string) =>
      batch.commit([
        { op: 'add', family: 'inet', table: 'bt', set, elements: [{ key: key('10.0.0.9', 6, 9), jump }] },
      ]);
    await expect(addOne('m', 'nope')).rejects.toMatchObject({ errorClass: 'no-such-object' });
    await expect(addOne('gone', 't20')).rejects.toMatchObject({ errorClass: 'no-such-object' });
    expect(elements()).toEqual(before);
  });

  it('encodes one acknowledged message per ELEMENTS_PER_MESSAGE elements, between BEGIN and END', () => {
    const e = { key: key('10.0.0.1', 6, 1), jump: 't20' };
    const { bytes, acked } = encodeBatch(
      [
        {
          op: 'add',
          family: 'inet',
          table: 'bt',
          set: 'm',
          elements: Array(ELEMENTS_PER_MESSAGE + 1).fill(e),
        },
      ],
      7,
    );
    expect(acked).toEqual([8, 9]);
    // Walk the messages: lengths add up, types in order.
    const types: number[] = [];
    for (let at = 0; at < bytes.length; at += bytes.readUInt32LE(at)) types.push(bytes.readUInt16LE(at + 4));
    expect(types).toEqual([0x10, (10 << 8) | 12, (10 << 8) | 12, 0x11]);
  });
});

afterAll(() => {
  batch?.close();
  execFileSync('ip', ['netns', 'del', NS]);
});
