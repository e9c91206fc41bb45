import { describe, expect, it } from 'vitest';
import { isRecord } from './record.ts';

describe('isRecord', () => {
  it('accepts objects, refuses null, arrays and scalars', () => {
    expect(isRecord({})).toBe(true);
    expect(isRecord({ a: 1 })).toBe(true);
    expect(isRecord(Object.create(null))).toBe(true);
    for (const value of [null, undefined, [], [1], 'x', 1, true])
      expect(isRecord(value), String(value)).toBe(false);
  });
});
