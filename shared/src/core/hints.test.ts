import { describe, expect, it } from 'vitest';
import { HINT_KEYS, specHash, VALUE_MAX_LENGTH } from './contract.ts';
import { formatHints, formatOffload, offloadHintFits, parseWebhookHints } from './hints.ts';
import { readService, type Service } from './service.ts';

function service(annotations: Record<string, string>, ports: unknown[] = [{ port: 5432 }]): Service {
  const read = readService({
    metadata: { name: 'db', namespace: 'prod', annotations },
    spec: { clusterIP: '10.96.0.5', ports },
  });
  if (!read.ok) throw new Error(read.error);
  return read.value;
}

/** Annotations stamped with the spec-hash of a Service with these ports. */
function stamped(annotations: Record<string, string>, ports: unknown[] = [{ port: 5432 }]) {
  return service({ ...annotations, [HINT_KEYS.specHash]: specHash(service({}, ports)) }, ports);
}

const twoPorts = [{ port: 8080 }, { port: 5432 }];

describe('formatOffload', () => {
  it('writes each port with its own threshold, sorted by port then protocol', () => {
    expect(
      formatOffload([
        { port: 9042, protocol: 'TCP', threshold: 20 },
        { port: 53, protocol: 'UDP', threshold: 0 },
        { port: 53, protocol: 'TCP', threshold: 100 },
      ]),
    ).toBe('53/TCP=100,53/UDP=0,9042/TCP=20');
    expect(formatOffload([])).toBe('none');
  });
});

describe('offloadHintFits', () => {
  it('measures the hint exactly at the limit', () => {
    // `10000/TCP=1,` is 12 characters; n entries make 12n - 1.
    const ports = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ port: 10_000 + i, protocol: 'TCP' as const, threshold: 1 }));
    const atLimit = Math.floor((VALUE_MAX_LENGTH + 1) / 12);
    expect(formatOffload(ports(atLimit)).length).toBeLessThanOrEqual(VALUE_MAX_LENGTH);
    expect(offloadHintFits(ports(atLimit))).toEqual({ fits: true });
    expect(offloadHintFits(ports(atLimit + 1))).toEqual({ fits: false, length: 12 * (atLimit + 1) - 1 });
    expect(12 * (atLimit + 1) - 1).toBeGreaterThan(VALUE_MAX_LENGTH);
  });
});

describe('formatHints', () => {
  it('writes no packet-threshold key: the threshold is in each offload entry', () => {
    const hints = formatHints({
      offload: [{ port: 5432, protocol: 'TCP', threshold: 20 }],
      reason: 'r',
      policy: 'p@1',
      specHash: 'abc',
    });
    expect(hints).toEqual({
      [HINT_KEYS.offload]: '5432/TCP=20',
      [HINT_KEYS.reason]: 'r',
      [HINT_KEYS.policy]: 'p@1',
      [HINT_KEYS.specHash]: 'abc',
    });
  });
});

describe('parseWebhookHints', () => {
  it('reads a threshold per port', () => {
    const parsed = parseWebhookHints(
      stamped({ [HINT_KEYS.offload]: '5432/TCP=20,8080/TCP=100', [HINT_KEYS.policy]: 'p@2' }, twoPorts),
    );
    expect(parsed.problems).toEqual([]);
    expect(parsed.value).toEqual({
      offload: [
        { port: 5432, protocol: 'TCP', threshold: 20 },
        { port: 8080, protocol: 'TCP', threshold: 100 },
      ],
      reason: '',
      policy: 'p@2',
    });
  });

  it('still reads the older form: one packet-threshold for every listed port', () => {
    const parsed = parseWebhookHints(
      stamped(
        {
          [HINT_KEYS.offload]: '5432/TCP,8080/TCP',
          [HINT_KEYS.packetThreshold]: '20',
          [HINT_KEYS.policy]: 'p@1',
        },
        twoPorts,
      ),
    );
    expect(parsed.value?.offload).toEqual([
      { port: 5432, protocol: 'TCP', threshold: 20 },
      { port: 8080, protocol: 'TCP', threshold: 20 },
    ]);
  });

  it('reads `none`', () => {
    expect(parseWebhookHints(stamped({ [HINT_KEYS.offload]: 'none' })).value?.offload).toEqual([]);
  });

  it.each([
    ['stale port', { [HINT_KEYS.offload]: '5433/TCP=20' }],
    ['SCTP', { [HINT_KEYS.offload]: '5432/SCTP=20' }],
    ['an older form without its threshold', { [HINT_KEYS.offload]: '5432/TCP' }],
    [
      'an older form with a bad threshold',
      { [HINT_KEYS.offload]: '5432/TCP', [HINT_KEYS.packetThreshold]: '-3' },
    ],
    [
      'an older form with a padded threshold',
      { [HINT_KEYS.offload]: '5432/TCP', [HINT_KEYS.packetThreshold]: '20 ' },
    ],
    ['both forms', { [HINT_KEYS.offload]: '5432/TCP=20', [HINT_KEYS.packetThreshold]: '20' }],
    ['a threshold over the maximum', { [HINT_KEYS.offload]: '5432/TCP=1000001' }],
    ['a non-canonical threshold', { [HINT_KEYS.offload]: '5432/TCP=020' }],
    ['a lowercase protocol', { [HINT_KEYS.offload]: '5432/tcp=20' }],
    ['garbage', { [HINT_KEYS.offload]: '5432/TCP=20; flush ruleset' }],
    ['an entry without its threshold', { [HINT_KEYS.offload]: '5432/TCP=20,8080/TCP' }],
    ['a duplicate', { [HINT_KEYS.offload]: '5432/TCP=20,5432/TCP=20' }],
    ['unsorted entries', { [HINT_KEYS.offload]: '8080/TCP=100,5432/TCP=20' }],
    ['absent', {}],
  ])('refuses %s', (_what, annotations) => {
    const parsed = parseWebhookHints(stamped(annotations, twoPorts));
    expect(parsed.value).toBeUndefined();
    expect(parsed.problems).toHaveLength(1);
  });

  it('refuses hints without a matching spec-hash', () => {
    const parsed = parseWebhookHints(service({ [HINT_KEYS.offload]: '5432/TCP=20' }));
    expect(parsed.problems[0]).toMatchObject({ key: HINT_KEYS.specHash });
  });

  it('applies the one length limit to every hint key, and accepts a value at the limit', () => {
    const ports = Array.from({ length: 1500 }, (_, i) => ({ port: 10_000 + i }));
    const all = Array.from({ length: 1500 }, (_, i) => `${10_000 + i}/TCP=20`).join(',');
    // The longest canonical prefix of `all` that fits the limit: exactly at it is accepted.
    const fits = all.slice(0, all.lastIndexOf(',', VALUE_MAX_LENGTH));
    expect(fits.length).toBeLessThanOrEqual(VALUE_MAX_LENGTH);
    expect(parseWebhookHints(stamped({ [HINT_KEYS.offload]: fits }, ports)).value?.offload.length).toBe(
      fits.split(',').length,
    );
    expect(all.length).toBeGreaterThan(VALUE_MAX_LENGTH);
    const over = parseWebhookHints(stamped({ [HINT_KEYS.offload]: all }, ports));
    expect(over.problems[0]).toMatchObject({ key: HINT_KEYS.offload });
    expect(over.problems[0]!.message).toContain(`at most ${VALUE_MAX_LENGTH}`);
    for (const key of [HINT_KEYS.reason, HINT_KEYS.policy, HINT_KEYS.trace]) {
      const parsed = parseWebhookHints(
        stamped({ [HINT_KEYS.offload]: '5432/TCP=20', [key]: 'x'.repeat(VALUE_MAX_LENGTH + 1) }),
      );
      expect(parsed.problems[0], key).toMatchObject({ key });
    }
  });

  it('makes hints stale when a port is added behind the webhook’s back', () => {
    const hinted = { [HINT_KEYS.offload]: '5432/TCP=20' };
    expect(parseWebhookHints(stamped(hinted)).value).toBeDefined();
    const grown = parseWebhookHints(
      service({ ...hinted, [HINT_KEYS.specHash]: specHash(service({})) }, [{ port: 5432 }, { port: 6379 }]),
    );
    expect(grown.value).toBeUndefined();
    expect(grown.problems[0]!.message).toContain('stale');
  });
});
