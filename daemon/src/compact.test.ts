import { describe, expect, it, vi } from 'vitest';
import { compactHeap, isBulk } from './compact.ts';

describe('compacting after bulk work', () => {
  it('counts the syncs that read the table back or computed everything, not incremental ones', () => {
    expect(isBulk({ result: 'ok', readBack: true, incremental: false })).toBe(true);
    expect(isBulk({ result: 'noop', readBack: true, incremental: false })).toBe(true);
    expect(isBulk({ result: 'ok', readBack: false, incremental: false })).toBe(true);
    expect(isBulk({ result: 'ok', readBack: false, incremental: true })).toBe(false);
    expect(isBulk({ result: 'error', readBack: true, incremental: false })).toBe(false);
  });

  it('collects when the process exposes gc, and does nothing otherwise', () => {
    const gc = vi.fn();
    expect(compactHeap(gc)).toBe(true);
    expect(gc).toHaveBeenCalledOnce();
    expect(compactHeap(null)).toBe(false);
  });
});
