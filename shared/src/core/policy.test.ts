import { describe, expect, it } from 'vitest';
import { loadDefaultPolicy } from '../adapters/policy-files.ts';
import { evaluatePort, PolicyError, parsePolicy } from '../core/policy.ts';
import type { ServicePort } from './service.ts';

const policy = loadDefaultPolicy();

function verdict(port: Partial<ServicePort> & { port: number }) {
  return evaluatePort(policy, { protocol: 'TCP', ...port });
}

describe('the default policy', () => {
  it('is valid and identifies itself by name, version and content hash', () => {
    expect(policy.id).toMatch(/^default@2#[0-9a-f]{12}$/);
  });

  it('offloads long-lived bulk and streaming traffic', () => {
    for (const port of [5432, 3306, 6379, 9092, 27017, 9042, 5201, 2049, 6800, 7300]) {
      expect(verdict({ port }).offload, `${port}`).toBe(true);
    }
    expect(verdict({ port: 8080, appProtocol: 'kubernetes.io/h2c' }).rule).toBe('grpc-http2-app-protocol');
    expect(verdict({ port: 8080, appProtocol: 'GRPC' }).offload).toBe(true);
    expect(verdict({ port: 8080, appProtocol: 'kubernetes.io/ws' }).rule).toBe('websocket-app-protocol');
    expect(verdict({ port: 8443, appProtocol: 'kubernetes.io/wss' }).offload).toBe(true);
    expect(verdict({ port: 8080, name: 'grpc-api' }).rule).toBe('grpc-port-name');
    expect(verdict({ port: 1234, name: 'mongo-primary' }).rule).toBe('datastore-port-name');
    expect(verdict({ port: 1234, name: 'redis-replica' }).rule).toBe('datastore-port-name');
    expect(verdict({ port: 443, protocol: 'UDP' }).rule).toBe('quic');
  });

  it('leaves DNS (any protocol) and datagram request/response traffic alone', () => {
    expect(verdict({ port: 53 })).toMatchObject({ offload: false, rule: 'dns' });
    expect(verdict({ port: 53, protocol: 'UDP' })).toMatchObject({ offload: false, rule: 'dns' });
    expect(verdict({ port: 123, protocol: 'UDP' })).toMatchObject({
      offload: false,
      rule: 'datagram-request-response',
    });
  });

  it('offloads unknown TCP only after 100 packets, and leaves unknown UDP alone', () => {
    expect(verdict({ port: 31337 })).toMatchObject({ offload: true, threshold: 100, rule: 'default' });
    expect(verdict({ port: 31337, protocol: 'UDP' })).toMatchObject({ offload: false, rule: 'default' });
    expect(verdict({ port: 8080, name: 'http-web' })).toMatchObject({
      rule: 'http-port-name',
      threshold: 100,
    });
  });

  it('leaves a rule without its own threshold to threshold.ts (no default baked in)', () => {
    expect(verdict({ port: 5432 })).toMatchObject({ rule: 'sql-databases', offload: true });
    expect(verdict({ port: 5432 }).threshold).toBeUndefined();
  });
});

describe('precedence: appProtocol, then port name, then port number', () => {
  it.each([
    // [port, what, rule, threshold]: the cases port-number rules used to shadow.
    [{ port: 7070, name: 'grpc' }, 'grpc-port-name', undefined],
    [{ port: 9093, name: 'web' }, 'http-port-name', 100],
    [{ port: 7000, name: 'webhook' }, 'request-response-port-name', 100],
    [{ port: 9001, name: 'metrics' }, 'request-response-port-name', 100],
    [{ port: 9090, name: 'http-metrics' }, 'request-response-port-name', 100],
    [{ port: 15021, name: 'status-port' }, 'request-response-port-name', 100],
    [{ port: 8080, name: 'healthz' }, 'request-response-port-name', 100],
    [{ port: 9000, name: 'admin' }, 'request-response-port-name', 100],
    [{ port: 14250, name: 'jaeger-collector-grpc' }, 'grpc-port-name', undefined],
    [{ port: 6379, name: 'tcp-redis' }, 'datastore-port-name', undefined],
    [{ port: 1053, name: 'dns-tcp' }, 'dns-port-name', undefined],
    [{ port: 7070, name: 'web', appProtocol: 'grpc' }, 'grpc-http2-app-protocol', undefined],
    [{ port: 50051, name: 'grpc', appProtocol: 'http' }, 'http-app-protocol', 100],
    [{ port: 9042, name: 'cql' }, 'datastore-port-name', undefined],
    [{ port: 5432, appProtocol: 'postgresql' }, 'datastore-app-protocol', undefined],
  ] as const)('%j is decided by %s', (port, rule, threshold) => {
    const v = verdict({ ...port });
    expect(v.rule).toBe(rule);
    expect(v.threshold).toBe(threshold);
  });

  it('matches a name word as the whole name, a prefix or a suffix, never inside a word', () => {
    expect(verdict({ port: 31000, name: 'grpc-api' }).rule).toBe('grpc-port-name');
    expect(verdict({ port: 31000, name: 'api-grpc' }).rule).toBe('grpc-port-name');
    expect(verdict({ port: 31000, name: 'GRPC' }).rule).toBe('grpc-port-name');
    expect(verdict({ port: 31000, name: 'grpcweb' }).rule).toBe('default');
    expect(verdict({ port: 31000, name: 'my-grpc-api' }).rule).toBe('default');
    // A bare `tcp` name says nothing; the port number decides.
    expect(verdict({ port: 9042, name: 'tcp' }).rule).toBe('nosql-databases');
  });

  it('orders rules by group whatever their order in the file, file order within a group', () => {
    const p = parsePolicy(`name: t
version: 1
default: { offload: false, reason: r }
rules:
  - { name: by-port, match: { ports: [80] }, offload: true, threshold: 1, reason: port }
  - { name: by-name-a, match: { portNames: [http] }, offload: true, threshold: 2, reason: name }
  - { name: by-name-b, match: { portNames: [http] }, offload: true, threshold: 3, reason: name }
  - { name: by-app, match: { appProtocols: [http] }, offload: true, threshold: 4, reason: app }
`);
    expect(evaluatePort(p, { port: 80, protocol: 'TCP' }).rule).toBe('by-port');
    expect(evaluatePort(p, { port: 80, protocol: 'TCP', name: 'http' }).rule).toBe('by-name-a');
    expect(evaluatePort(p, { port: 80, protocol: 'TCP', name: 'http', appProtocol: 'http' }).rule).toBe(
      'by-app',
    );
  });
});

describe('parsePolicy', () => {
  const minimal = (rules: string) =>
    `name: t\nversion: 2\ndefault: { offload: false, reason: r }\nrules:\n${rules}`;

  it('accepts JSON as well as YAML', () => {
    const p = parsePolicy(
      JSON.stringify({
        name: 'j',
        version: '1',
        default: { offload: false, reason: 'r' },
        rules: [{ name: 'a', match: { ports: ['1000-2000'] }, offload: true, threshold: 7, reason: 'x' }],
      }),
    );
    expect(evaluatePort(p, { port: 1500, protocol: 'TCP' })).toMatchObject({
      offload: true,
      threshold: 7,
      rule: 'a',
    });
    expect(evaluatePort(p, { port: 2001, protocol: 'TCP' })).toMatchObject({
      offload: false,
      rule: 'default',
    });
  });

  it('lets the first matching rule decide', () => {
    const p = parsePolicy(
      minimal(`  - { name: a, match: { ports: [80] }, offload: false, reason: first }
  - { name: b, match: { ports: [80] }, offload: true, reason: second }`),
    );
    expect(evaluatePort(p, { port: 80, protocol: 'TCP' }).rule).toBe('a');
  });

  it.each([
    ['not YAML', 'name: [unclosed'],
    ['missing rules', 'name: t\nversion: 1\ndefault: { offload: false, reason: r }'],
    ['unknown field', minimal('  - { name: a, match: { port: [80] }, offload: true, reason: x }')],
    ['empty match', minimal('  - { name: a, match: {}, offload: true, reason: x }')],
    [
      'threshold too high',
      minimal('  - { name: a, match: { ports: [80] }, offload: true, threshold: 2000000, reason: x }'),
    ],
    ['inverted range', minimal('  - { name: a, match: { ports: ["90-80"] }, offload: true, reason: x }')],
    [
      'duplicate rule name',
      minimal(
        '  - { name: a, match: { ports: [1] }, offload: true, reason: x }\n  - { name: a, match: { ports: [2] }, offload: true, reason: x }',
      ),
    ],
    ['a list', '- 1\n- 2'],
    [
      'the old name-prefix key',
      minimal('  - { name: a, match: { portNamePrefixes: [grpc] }, offload: true, reason: x }'),
    ],
    [
      'a port-name word with a space',
      minimal('  - { name: a, match: { portNames: ["a b"] }, offload: true, reason: x }'),
    ],
    [
      'a version too long for a hint',
      `name: t\nversion: ${'v'.repeat(64)}\ndefault: { offload: false, reason: r }\nrules: []`,
    ],
  ])('refuses %s with a PolicyError', (_what, text) => {
    expect(() => parsePolicy(text, 'test.yaml')).toThrow(PolicyError);
  });

  it('changes its id when the content changes', () => {
    const a = parsePolicy(minimal('  - { name: a, match: { ports: [80] }, offload: true, reason: x }'));
    const b = parsePolicy(minimal('  - { name: a, match: { ports: [81] }, offload: true, reason: x }'));
    expect(a.id).not.toBe(b.id);
    expect(a.id.startsWith('t@2#')).toBe(true);
  });
});
