import { describe, expect, it } from 'vitest';
import { type Change, describeChange, emptySummary, isEmpty } from './change.ts';

describe('describeChange: what a sync log line and span say about a change', () => {
  it('counts, in a fixed order, and says "no change" for an empty one', () => {
    const none: Change = { ops: [], summary: emptySummary() };
    expect(isEmpty(none)).toBe(true);
    expect(describeChange(none)).toBe('no change');
    const summary = {
      ...emptySummary(),
      tableCreated: true,
      elementsAdded: 3,
      elementsRemoved: 1,
      chainsAdded: ['threshold-20'],
      devicesAdded: ['veth1'],
      devicesRemoved: ['veth0'],
      addressesRemoved: 2,
      flowtableRecreated: true,
    };
    const change: Change = { ops: [{ op: 'add-table' }], summary };
    expect(isEmpty(change)).toBe(false);
    expect(describeChange(change)).toBe(
      'create table; re-create flowtable; +3 elements; -1 elements; +chains threshold-20; +devices veth1; -devices veth0; -2 node addresses',
    );
  });
});
