import { describe, expect, it } from 'vitest';
import { type LabelSelector, selectorMatches } from './label-selector.ts';

describe('label selectors (metav1.LabelSelector)', () => {
  const labels = { team: 'shop', 'kubernetes.io/metadata.name': 'shop' };
  it.each<[string, LabelSelector | undefined, boolean]>([
    ['absent selector', undefined, true],
    ['empty selector', {}, true],
    ['matchLabels hit', { matchLabels: { team: 'shop' } }, true],
    ['matchLabels miss', { matchLabels: { team: 'media' } }, false],
    ['In hit', { matchExpressions: [{ key: 'team', operator: 'In', values: ['a', 'shop'] }] }, true],
    ['In on a missing label', { matchExpressions: [{ key: 'tier', operator: 'In', values: ['x'] }] }, false],
    ['NotIn hit', { matchExpressions: [{ key: 'team', operator: 'NotIn', values: ['shop'] }] }, false],
    [
      'NotIn on a missing label',
      { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['x'] }] },
      true,
    ],
    ['Exists', { matchExpressions: [{ key: 'team', operator: 'Exists' }] }, true],
    ['DoesNotExist', { matchExpressions: [{ key: 'team', operator: 'DoesNotExist' }] }, false],
    [
      'all requirements must hold',
      {
        matchLabels: { team: 'shop' },
        matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['shop'] }],
      },
      false,
    ],
  ])('%s', (_name, selector, expected) => {
    expect(selectorMatches(selector, labels)).toBe(expected);
  });
});

describe('label selectors: bad input', () => {
  it('refuses an unknown operator instead of guessing', () => {
    expect(() => selectorMatches({ matchExpressions: [{ key: 'a', operator: 'Maybe' }] }, {})).toThrow(
      'unknown label selector operator "Maybe"',
    );
  });
});
