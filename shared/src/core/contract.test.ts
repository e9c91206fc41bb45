import { describe, expect, it } from 'vitest';
import {
  HINT_KEYS,
  parseAcceleration,
  parsePorts,
  parseThreshold,
  parseUserHints,
  specHash,
  USER_KEYS,
  VALUE_MAX_LENGTH,
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

  it('reads the protocol suffix in any case', () => {
    expect(parsePorts('5432/Tcp', ports).value).toEqual([ports[0]]);
    expect(parsePorts('9000/uDp', ports).value).toEqual([ports[2]]);
    expect(parsePorts('grpc/TcP', ports).value).toEqual([ports[1]]);
  });

  it('resolves thousands of entries against thousands of ports', () => {
    const many: ServicePort[] = Array.from({ length: 20_000 }, (_, i) => ({ port: i + 1, protocol: 'TCP' }));
    const raw = Array.from({ length: 3000 }, (_, i) => String(i + 1)).join(',');
    expect(raw.length).toBeLessThanOrEqual(VALUE_MAX_LENGTH);
    expect(parsePorts(raw, many).value).toHaveLength(3000);
  });

  it('rejects a port the Service does not have, and hostile text', () => {
    for (const raw of [
      '5433',
      'mysql',
      '9000/SCTP',
      '5432/TCP/UDP',
      '',
      '5432,',
      ',5432',
      '5432,,grpc',
      '5432 /TCP',
      '5432/T CP',
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

describe('every user key', () => {
  it('ignores surrounding whitespace alike, never inner whitespace', () => {
    const ports: ServicePort[] = [{ port: 5432, protocol: 'TCP' }];
    for (const space of [' ', '\t', '\n', ' \r\n ']) {
      expect(parseAcceleration(`${space}enabled${space}`).value).toBe('enabled');
      expect(parseThreshold(USER_KEYS.packetThreshold, `${space}50${space}`).value).toBe(50);
      expect(parsePorts(`${space}5432/tcp${space}`, ports).value).toEqual(ports);
    }
    expect(parseAcceleration('en abled').value).toBeUndefined();
    expect(parseThreshold(USER_KEYS.packetThreshold, '5 0').value).toBeUndefined();
    expect(parsePorts('54 32', ports).value).toBeUndefined();
  });

  it('refuses a value over the one length limit, whatever the key', () => {
    const long = ` ${'9'.repeat(VALUE_MAX_LENGTH)}`;
    for (const parsed of [
      parseAcceleration(long),
      parseThreshold(USER_KEYS.packetThreshold, long),
      parsePorts(long, [{ port: 9999, protocol: 'TCP' }]),
    ]) {
      expect(parsed.value).toBeUndefined();
      expect(parsed.problems[0]!.message).toContain(`at most ${VALUE_MAX_LENGTH}`);
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

describe('specHash', () => {
  it('changes with a port, a port name, an appProtocol or a user key, not with hints', () => {
    const base = specHash(service({}));
    expect(specHash(service({ [HINT_KEYS.offload]: 'none', [HINT_KEYS.reason]: 'x' }))).toBe(base);
    expect(specHash(service({}, [{ port: 5432 }, { port: 6379 }]))).not.toBe(base);
    expect(specHash(service({}, [{ port: 5432, name: 'pg' }]))).not.toBe(base);
    expect(specHash(service({}, [{ port: 5432, appProtocol: 'postgresql' }]))).not.toBe(base);
    expect(specHash(service({ [USER_KEYS.packetThreshold]: '50' }))).not.toBe(base);
  });
});
