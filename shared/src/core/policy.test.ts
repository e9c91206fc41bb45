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
    expect(policy.id).toMatch(/^default@1#[0-9a-f]{12}$/);
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
      rule: 'http-tcp-port-name',
      threshold: 100,
    });
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
