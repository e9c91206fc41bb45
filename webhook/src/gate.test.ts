import { describe, expect, it } from 'vitest';
import { ReviewGate } from './gate.ts';

const busyFor = (ms: number) => {
  const end = performance.now() + ms;
  while (performance.now() < end);
};

describe('ReviewGate', () => {
  it('admits up to maxInFlight reviews, of which up to maxLarge large ones, and refuses the rest', () => {
    const gate = new ReviewGate({ maxInFlight: 3, maxLarge: 1, largeBytes: 100 });
    const large = gate.admit(101);
    expect(large?.large).toBe(true);
    expect(gate.admit(5000)).toBeUndefined(); // a second large one
    expect(gate.admit(undefined)).toBeUndefined(); // an undeclared length counts as large
    const small = [gate.admit(100), gate.admit(10)];
    expect(small.every((t) => t?.large === false)).toBe(true);
    expect(gate.admit(1)).toBeUndefined(); // full
    expect(gate.refused).toBe(3);
    small[0]!.release();
    small[0]!.release(); // a second release frees nothing more
    expect(gate.inFlight).toBe(2);
    expect(gate.admit(1)).toBeDefined();
    expect(gate.admit(1)).toBeUndefined();
    large!.release();
    expect(gate.admit(200)?.large).toBe(true);
  });

  it('runs small reviews before large ones that were queued earlier', async () => {
    const gate = new ReviewGate({ maxInFlight: 10, maxLarge: 5, largeBytes: 100, sliceMs: 0 });
    const order: string[] = [];
    const runs = [
      gate.admit(1000)!.run(() => order.push('large-1')),
      gate.admit(1000)!.run(() => order.push('large-2')),
      gate.admit(10)!.run(() => order.push('small-1')),
      gate.admit(10)!.run(() => order.push('small-2')),
    ];
    await Promise.all(runs);
    expect(order).toEqual(['small-1', 'small-2', 'large-1', 'large-2']);
  });

  it('gives the event loop a turn between slices, so other work is not held behind a queue', async () => {
    const gate = new ReviewGate({ maxInFlight: 10, maxLarge: 10, largeBytes: 100, sliceMs: 5 });
    const events: string[] = [];
    const runs = Array.from({ length: 6 }, (_, i) =>
      gate.admit(1000)!.run(() => {
        busyFor(20);
        events.push(`work-${i}`);
      }),
    );
    // Something that arrives while the work is queued (what a /healthz request is to the loop).
    setImmediate(() => events.push('other'));
    await Promise.all(runs);
    const other = events.indexOf('other');
    expect(other).toBeGreaterThan(0);
    expect(other).toBeLessThan(3);
  });

  it('passes on what the work returns or throws', async () => {
    const gate = new ReviewGate();
    await expect(gate.admit(1)!.run(() => 42)).resolves.toBe(42);
    await expect(
      gate.admit(1)!.run(() => {
        throw new Error('bad body');
      }),
    ).rejects.toThrow('bad body');
  });
});
