import type { Change } from '@slipstream/shared/core/change';
import { diff } from '@slipstream/shared/core/diff';
import { type Element, emptyRuleset } from '@slipstream/shared/core/ruleset';
import { describe, expect, it } from 'vitest';
import { elementBatch, elementKeyBytes, MAX_BATCH_ELEMENTS } from './element-batch.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('element keys as the kernel stores them', () => {
  it('pads each field of a concatenation to 4 bytes', () => {
    expect(hex(elementKeyBytes({ family: 'ip', address: '10.96.0.1', protocol: 6, port: 5432 }))).toBe(
      '0a600001' + '06000000' + '15380000',
    );
    expect(hex(elementKeyBytes({ family: 'np', address: '', protocol: 17, port: 30080 }))).toBe(
      '11000000' + '75800000',
    );
    expect(hex(elementKeyBytes({ family: 'ip6', address: '::ffff:192.0.2.9', protocol: 6, port: 1 }))).toBe(
      '00000000000000000000ffffc0000209' + '06000000' + '00010000',
    );
    expect(() => elementKeyBytes({ family: 'ip', address: '10.0.0', protocol: 6, port: 1 })).toThrow(/IPv4/);
    expect(() => elementKeyBytes({ family: 'ip6', address: '1::2::3', protocol: 6, port: 1 })).toThrow(
      /IPv6/,
    );
  });
});

describe('elementBatch', () => {
  const element = (port: number, threshold: number | null = 20): Element => ({
    family: 'ip',
    address: '10.96.0.1',
    protocol: 6,
    port,
    threshold,
  });
  const change = (ops: Change['ops']): Change => ({ ops, summary: diff(null, emptyRuleset(null)).summary });

  it('takes element-only changes, in order, with their jumps', () => {
    const ops = elementBatch(
      change([
        { op: 'delete-elements', family: 'ip', elements: [element(1)] },
        { op: 'add-elements', family: 'np', elements: [{ ...element(30080), family: 'np', address: '' }] },
        { op: 'add-set-elements', family: 'ip6', addresses: ['2001:db8::1'] },
      ]),
    );
    expect(ops?.map((o) => [o.op, o.set, o.elements.map((e) => e.jump ?? '-')])).toEqual([
      ['delete', 'svc4', ['-']],
      ['add', 'nodeports', ['threshold-20']],
      ['add', 'node6', ['-']],
    ]);
  });

  it('leaves anything else, foreign verdicts and large changes to libnftables', () => {
    expect(elementBatch(change([{ op: 'add-chain', chain: 'threshold-5', base: null }]))).toBeNull();
    expect(
      elementBatch(
        change([
          { op: 'add-elements', family: 'ip', elements: [element(1)] },
          { op: 'flush-chain', chain: 'forward' },
        ]),
      ),
    ).toBeNull();
    expect(
      elementBatch(change([{ op: 'add-elements', family: 'ip', elements: [element(1, null)] }])),
    ).toBeNull();
    const many = Array.from({ length: MAX_BATCH_ELEMENTS + 1 }, (_, i) => element(i + 1));
    expect(elementBatch(change([{ op: 'add-elements', family: 'ip', elements: many }]))).toBeNull();
    expect(elementBatch(change([]))).toBeNull();
  });
});
