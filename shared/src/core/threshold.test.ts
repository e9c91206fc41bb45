import { describe, expect, it } from 'vitest';
import { BUILTIN_THRESHOLD, portThreshold } from './threshold.ts';

describe('portThreshold', () => {
  it('takes the user’s, then the deciding rule’s, then the policy’s default, then 20', () => {
    expect(portThreshold({ user: 500, rule: 100, policy: 30 })).toEqual({ value: 500, source: 'user' });
    expect(portThreshold({ rule: 100, policy: 30 })).toEqual({ value: 100, source: 'rule' });
    expect(portThreshold({ policy: 30 })).toEqual({ value: 30, source: 'policy' });
    expect(portThreshold({})).toEqual({ value: BUILTIN_THRESHOLD, source: 'builtin' });
    expect(BUILTIN_THRESHOLD).toBe(20);
  });

  it('keeps 0 as a real threshold at every level', () => {
    expect(portThreshold({ user: 0, rule: 100 }).value).toBe(0);
    expect(portThreshold({ rule: 0, policy: 30 }).value).toBe(0);
    expect(portThreshold({ policy: 0 }).value).toBe(0);
  });
});
