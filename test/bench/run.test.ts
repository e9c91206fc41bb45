import { describe, expect, it } from 'vitest';
import { benchFiles, merge, selected, table, verdict } from './run.ts';

describe('bench runner', () => {
  it('finds the benchmark modules and filters them by name', () => {
    expect(benchFiles()).toContain('webhook.bench.ts');
    expect(selected(['daemon.bench.ts', 'webhook.bench.ts'], ['webhook'])).toEqual(['webhook.bench.ts']);
    expect(selected(['daemon.bench.ts', 'webhook.bench.ts'], [])).toHaveLength(2);
  });

  it('keeps figures of modules not run this time', () => {
    expect(merge({ 'daemon.syncMs': 3, 'webhook.p99Ms': 9 }, { 'webhook.p99Ms': 2 })).toEqual({
      'daemon.syncMs': 3,
      'webhook.p99Ms': 2,
    });
  });

  it('drops the previous figures of the module that ran (renamed ones do not linger)', () => {
    expect(
      merge({ 'daemon.syncMs': 3, 'webhook.old': 1, 'webhook.p99Ms': 9 }, { 'webhook.p99Ms': 2 }, 'webhook'),
    ).toEqual({ 'daemon.syncMs': 3, 'webhook.p99Ms': 2 });
  });

  it('writes the notes of each module under the table', () => {
    const md = table({ 'webhook.rssMB': 90 }, {}, { webhook: ['the bundle saved 20 MB'] });
    expect(md).toContain('Notes on webhook:\n\n- the bundle saved 20 MB');
  });

  it('checks goals in the table', () => {
    expect(verdict(0.9, { min: 0.8 })).toBe('yes');
    expect(verdict(6, { max: 5 })).toBe('MISSED');
    expect(verdict('x', { max: 5 })).toBe('');
    const md = table(
      { 'webhook.p99Ms': 2.5, 'webhook.context': { node: 'v24' } },
      { 'webhook.p99Ms': { max: 5 } },
    );
    expect(md).toContain('| webhook.p99Ms | 2.500 | < 5  | yes |');
    expect(md).toContain('- `webhook.context`: `{"node":"v24"}`');
  });
});
