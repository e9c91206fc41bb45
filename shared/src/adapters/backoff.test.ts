import { describe, expect, it } from 'vitest';
import { Backoff } from './backoff.ts';

describe('Backoff', () => {
  it('doubles from the initial delay up to the cap without jitter', () => {
    const b = new Backoff({ initialMs: 800, maxMs: 30_000, jitter: false });
    expect(Array.from({ length: 8 }, () => b.next())).toEqual([
      800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000,
    ]);
    expect(b.failures).toBe(8);
  });

  it('starts over after a success', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: false });
    b.next();
    b.next();
    b.reset();
    expect(b.failures).toBe(0);
    expect(b.next()).toBe(100);
  });

  it('forgets failures older than resetAfterMs', () => {
    let now = 0;
    const b = new Backoff({ initialMs: 100, maxMs: 1000, resetAfterMs: 5000, jitter: false }, () => now);
    expect([b.next(), b.next(), b.next()]).toEqual([100, 200, 400]);
    now += 4999;
    expect(b.next()).toBe(800);
    now += 5000;
    expect(b.next()).toBe(100);
  });

  it('jitters, but never past the cap', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000 });
    const delays = Array.from({ length: 50 }, () => b.next());
    expect(Math.max(...delays)).toBeLessThanOrEqual(1000);
    expect(new Set(delays).size).toBeGreaterThan(1);
  });

  it('refuses nonsense bounds', () => {
    expect(() => new Backoff({ initialMs: 0, maxMs: 10 })).toThrow(RangeError);
    expect(() => new Backoff({ initialMs: 100, maxMs: 10 })).toThrow(RangeError);
  });
});
