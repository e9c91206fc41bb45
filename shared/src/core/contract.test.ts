import { describe, expect, it } from 'vitest';
import {
  formatOffload,
  HINT_KEYS,
  parseAcceleration,
  parsePorts,
  parseThreshold,
  parseUserHints,
  parseWebhookHints,
  specHash,
  USER_KEYS,
} from './contract.ts';
import { readService, type Service, type ServicePort } from './service.ts';

function service(annotations: Record<string, string>, ports: unknown[] = [{ port: 5432 }]): Service {
  const read = readService({
    metadata: { name: 'db', namespace: 'prod', annotations },
    spec: { clusterIP: '10.96.0.5', ports },
  });
  if (!read.ok) throw new Error(read.error);
  return read.value;
}

describe('parseThreshold', () => {
  it.each([
    ['0', 0],
    ['20', 20],
    [' 300 ', 300],
    ['1000000', 1_000_000],
  ])('accepts %j', (raw, value) => {
    expect(parseThreshold('k', raw)).toEqual({ value, problems: [] });
  });

  it.each(['abc', '-1', '1e12', '1.5', '', '+5', '0x10', '1000001', '99999999', 'Infinity', '١٢'])(
    'rejects %j with a problem naming the key',
    (raw) => {
      const parsed = parseThreshold(USER_KEYS.packetThreshold, raw);
      expect(parsed.value).toBeUndefined();
      expect(parsed.problems).toHaveLength(1);
      expect(parsed.problems[0]!.key).toBe(USER_KEYS.packetThreshold);
    },
  );

  it('refuses an oversized value without echoing all of it', () => {
    const parsed = parseThreshold('k', '9'.repeat(100_000));
    expect(parsed.value).toBeUndefined();
    expect(parsed.problems[0]!.message.length).toBeLessThan(200);
  });
});

describe('parseAcceleration', () => {
  it('knows exactly two words', () => {
    expect(parseAcceleration('enabled').value).toBe('enabled');
    expect(parseAcceleration('disabled').value).toBe('disabled');
    for (const word of ['Enabled', 'true', 'on', 'yes', '', 'enabled;drop']) {
      expect(parseAcceleration(word).value).toBeUndefined();
    }
  });
});

describe('parsePorts', () => {
  const ports: ServicePort[] = [
    { port: 5432, protocol: 'TCP', name: 'pg' },
    { port: 9000, protocol: 'TCP', name: 'grpc' },
    { port: 9000, protocol: 'UDP', name: 'quic' },
  ];

  it('resolves numbers, names and protocol suffixes against the Service', () => {
    expect(parsePorts('5432', ports).value).toEqual([ports[0]]);
    expect(parsePorts('grpc', ports).value).toEqual([ports[1]]);
    expect(parsePorts('9000', ports).value).toEqual([ports[1], ports[2]]);
    expect(parsePorts('9000/UDP', ports).value).toEqual([ports[2]]);
    expect(parsePorts(' pg , 9000/tcp ', ports).value).toEqual([ports[0], ports[1]]);
  });

  it('rejects a port the Service does not have, and hostile text', () => {
    for (const raw of [
      '5433',
      'mysql',
      '9000/SCTP',
      '5432/TCP/UDP',
      '',
      '5432,',
      '} flush ruleset',
      '0',
      '70000',
    ]) {
      const parsed = parsePorts(raw, ports);
      expect(parsed.value, raw).toBeUndefined();
      expect(parsed.problems[0]!.key).toBe(USER_KEYS.ports);
    }
  });
});

describe('parseUserHints', () => {
  it('keeps valid values and reports each invalid one', () => {
    const parsed = parseUserHints(
      service({
        [USER_KEYS.acceleration]: 'turbo',
        [USER_KEYS.packetThreshold]: '50',
        [USER_KEYS.ports]: '5432',
      }),
    );
    expect(parsed.value).toEqual({ threshold: 50, ports: [{ port: 5432, protocol: 'TCP' }] });
    expect(parsed.problems.map((p) => p.key)).toEqual([USER_KEYS.acceleration]);
  });
});

describe('webhook hints', () => {
  it('formats the offload list canonically', () => {
    expect(
      formatOffload([
        { port: 9042, protocol: 'TCP' },
        { port: 53, protocol: 'UDP' },
        { port: 53, protocol: 'TCP' },
      ]),
    ).toBe('53/TCP,53/UDP,9042/TCP');
    expect(formatOffload([])).toBe('none');
  });

  it('reads valid hints that match the spec', () => {
    const parsed = parseWebhookHints(
      service({
        [HINT_KEYS.offload]: '5432/TCP',
        [HINT_KEYS.packetThreshold]: '20',
        [HINT_KEYS.policy]: 'p@1',
        [HINT_KEYS.specHash]: specHash(service({})),
      }),
    );
    expect(parsed.value).toMatchObject({
      offload: [{ port: 5432, protocol: 'TCP' }],
      threshold: 20,
      policy: 'p@1',
    });
  });

  it.each([
    ['stale port', { [HINT_KEYS.offload]: '5433/TCP', [HINT_KEYS.packetThreshold]: '20' }],
    ['SCTP', { [HINT_KEYS.offload]: '5432/SCTP', [HINT_KEYS.packetThreshold]: '20' }],
    ['no threshold', { [HINT_KEYS.offload]: '5432/TCP' }],
    ['bad threshold', { [HINT_KEYS.offload]: '5432/TCP', [HINT_KEYS.packetThreshold]: '-3' }],
    ['garbage', { [HINT_KEYS.offload]: '5432/TCP; flush ruleset', [HINT_KEYS.packetThreshold]: '20' }],
    ['absent', {}],
    ['without spec-hash', { [HINT_KEYS.offload]: '5432/TCP', [HINT_KEYS.packetThreshold]: '20' }],
  ])('refuses %s hints', (_what, annotations) => {
    const parsed = parseWebhookHints(service(annotations));
    expect(parsed.value).toBeUndefined();
    expect(parsed.problems).toHaveLength(1);
  });
});

describe('specHash', () => {
  it('changes with a port, a port name, an appProtocol or a user key, not with hints', () => {
    const base = specHash(service({}));
    expect(specHash(service({ [HINT_KEYS.offload]: 'none', [HINT_KEYS.reason]: 'x' }))).toBe(base);
    expect(specHash(service({}, [{ port: 5432 }, { port: 6379 }]))).not.toBe(base);
    expect(specHash(service({}, [{ port: 5432, name: 'pg' }]))).not.toBe(base);
    expect(specHash(service({}, [{ port: 5432, appProtocol: 'postgresql' }]))).not.toBe(base);
    expect(specHash(service({ [USER_KEYS.packetThreshold]: '50' }))).not.toBe(base);
  });

  it('makes hints stale when a port is added behind the webhook’s back', () => {
    const hinted = { [HINT_KEYS.offload]: '5432/TCP', [HINT_KEYS.packetThreshold]: '20' };
    const stamped = { ...hinted, [HINT_KEYS.specHash]: specHash(service({})) };
    expect(parseWebhookHints(service(stamped)).value).toBeDefined();
    const grown = parseWebhookHints(service(stamped, [{ port: 5432 }, { port: 6379 }]));
    expect(grown.value).toBeUndefined();
    expect(grown.problems[0]!.message).toContain('stale');
  });
});
