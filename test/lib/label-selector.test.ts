import { describe, expect, it } from 'vitest';
import { type LabelSelector, parseLabelSelector, selectorMatches } from './label-selector.ts';

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

describe('label selectors: the query-string form', () => {
  const labels = {
    'app.kubernetes.io/name': 'slipstream',
    'app.kubernetes.io/component': 'daemon',
    tier: 'node',
  };
  const matches = (text: string) => selectorMatches(parseLabelSelector(text), labels);

  it('equality, inequality and both joined by commas', () => {
    expect(matches('app.kubernetes.io/name=slipstream,app.kubernetes.io/component=daemon')).toBe(true);
    expect(matches('app.kubernetes.io/component==daemon')).toBe(true);
    expect(matches('app.kubernetes.io/name=slipstream,app.kubernetes.io/component=webhook')).toBe(false);
    expect(matches('tier!=node')).toBe(false);
    expect(matches('missing!=x'), 'a missing label satisfies !=').toBe(true);
  });

  it('sets (commas inside parentheses stay in the set), existence and absence', () => {
    expect(matches('tier in (edge, node),app.kubernetes.io/name')).toBe(true);
    expect(matches('tier notin (edge,node)')).toBe(false);
    expect(matches('!tier')).toBe(false);
    expect(matches('!gone,tier')).toBe(true);
    expect(matches('')).toBe(true);
  });

  it('a malformed requirement is an error', () => {
    expect(() => parseLabelSelector('a=b=c')).toThrow(/unable to parse requirement/);
    expect(() => parseLabelSelector('tier in edge')).toThrow(/unable to parse requirement/);
  });
});
