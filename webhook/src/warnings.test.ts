import { describe, expect, it } from 'vitest';
import { MAX_WARNING_LENGTH, warning } from './warnings.ts';

describe('warning', () => {
  it('names the key and the problem', () => {
    expect(warning('slipstream.dev/packet-threshold', '"abc" is not a decimal integer')).toBe(
      'slipstream.dev/packet-threshold: "abc" is not a decimal integer',
    );
  });

  it('stays under 120 printable ASCII characters', () => {
    const w = warning('slipstream.dev/ports', `"${'é\u0000\u2028💥'.repeat(100)}…" is not a port`);
    expect(w.length).toBeLessThanOrEqual(MAX_WARNING_LENGTH);
    expect(w.length).toBeLessThan(120);
    expect(w).toMatch(/^[\x20-\x7e]+$/);
    expect(w.endsWith('...')).toBe(true);
  });

  it('spells the contract ellipsis as three dots', () => {
    expect(warning('k', 'value "abc…" is bad')).toBe('k: value "abc..." is bad');
  });
});
