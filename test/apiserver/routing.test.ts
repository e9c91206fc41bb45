// Paths to resources and verbs, auth, and errors as Status objects.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import type { Json } from './resources.ts';
import { route } from './routing.ts';
import { StatusError } from './status.ts';
import { api, svc } from './wire.ts';

describe('route', () => {
  const q = (s = '') => new URLSearchParams(s);
  it.each([
    ['GET', '/api/v1/services', '', { resource: 'services', verb: 'list' }],
    ['GET', '/api/v1/services', 'watch=true', { resource: 'services', verb: 'watch' }],
    ['GET', '/api/v1/namespaces', 'watch=1', { resource: 'namespaces', verb: 'watch' }],
    ['POST', '/api/v1/namespaces', '', { resource: 'namespaces', verb: 'create' }],
    ['DELETE', '/api/v1/namespaces/shop', '', { resource: 'namespaces', name: 'shop', verb: 'delete' }],
    [
      'GET',
      '/api/v1/namespaces/shop/services',
      '',
      { resource: 'services', namespace: 'shop', verb: 'list' },
    ],
    [
      'PUT',
      '/api/v1/namespaces/shop/services/db',
      '',
      { resource: 'services', namespace: 'shop', name: 'db', verb: 'update' },
    ],
    [
      'PATCH',
      '/api/v1/namespaces/shop/secrets/tls',
      '',
      { resource: 'secrets', namespace: 'shop', name: 'tls', verb: 'patch' },
    ],
    [
      'GET',
      '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/x',
      '',
      { resource: 'mutatingwebhookconfigurations', name: 'x', verb: 'get' },
    ],
    ['POST', '/api/v1/namespaces/shop', '', { resource: 'namespaces', name: 'shop', verb: 'other' }],
    [
      'GET',
      '/api/v1/namespaces/a%2Fb/services',
      '',
      { resource: 'services', namespace: 'a/b', verb: 'list' },
    ],
  ] as const)('%s %s?%s', (method, path, query, expected) => {
    expect(route(method, path, q(query))).toEqual(expected);
  });

  it.each([
    ['GET', '/api/v1/pods', 404],
    ['GET', '/apis/apps/v1/deployments', 404],
    ['GET', '/api/v1/namespaces/shop/services/db/status', 404],
    ['GET', '/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations', 404],
    ['POST', '/api/v1/services', 405],
  ] as const)('%s %s: %d', (method, path, code) => {
    expect(() => route(method, path, q())).toThrow(StatusError);
    try {
      route(method, path, q());
    } catch (error) {
      expect((error as StatusError).code).toBe(code);
    }
  });
});

describe('routing over HTTP', () => {
  let server: FakeApiServer;

  beforeEach(async () => {
    server = await FakeApiServer.start({ historyLimit: 50 });
  });

  afterEach(async () => {
    await server.close();
  });

  it('answers errors with Status objects', async () => {
    const missing = await api(server, 'GET', '/api/v1/namespaces/default/services/nope');
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'NotFound', code: 404 });
    const created = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    const again = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    expect(again.body).toMatchObject({ reason: 'AlreadyExists', code: 409 });
    const stale = { ...created.body, metadata: { ...(created.body.metadata as Json), resourceVersion: '1' } };
    expect((await api(server, 'PUT', '/api/v1/namespaces/default/services/a', stale)).body).toMatchObject({
      reason: 'Conflict',
      code: 409,
    });
    const badPort = await api(
      server,
      'POST',
      '/api/v1/namespaces/default/services',
      svc('b', 'default', 70000),
    );
    expect(badPort.body).toMatchObject({ reason: 'Invalid', code: 422 });
    const noNs = await api(server, 'POST', '/api/v1/namespaces/ghost/services', svc('c', 'ghost'));
    expect(noNs.body).toMatchObject({ reason: 'NotFound', code: 404 });
    const unnamed = await api(server, 'POST', '/api/v1/namespaces/default/services', {
      metadata: { name: 'two' },
      spec: { ports: [{ port: 1 }, { port: 2 }] },
    });
    expect(unnamed.body).toMatchObject({ reason: 'Invalid', code: 422 });
    const res = await fetch(`${server.url}/api/v1/services`);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ kind: 'Status', code: 401 });
  });

  it('serves /version and the health endpoints, and records every request with its answer', async () => {
    expect((await api(server, 'GET', '/version')).body).toMatchObject({
      major: '1',
      gitVersion: expect.any(String),
    });
    for (const path of ['/healthz', '/readyz', '/livez']) {
      const res = await fetch(`${server.url}${path}`, {
        headers: { authorization: `Bearer ${server.token}` },
      });
      expect(await res.text()).toBe('ok');
    }
    await api(server, 'GET', '/api/v1/namespaces/default/services/nope');
    const last = server.requests.at(-1);
    expect(last).toMatchObject({ method: 'GET', verb: 'get', resource: 'services', status: 404 });
    expect(last?.remotePort).toEqual(expect.any(Number));
    expect(server.count('get', 'services')).toBe(1);
  });

  it('beforeHandle sees the routed request and can fail it with a Status', async () => {
    server.beforeHandle = (record) => {
      if (record.verb === 'create') throw new StatusError(503, 'ServiceUnavailable', 'etcd is away');
    };
    const refused = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    expect(refused).toEqual({
      status: 503,
      body: expect.objectContaining({
        kind: 'Status',
        reason: 'ServiceUnavailable',
        message: 'etcd is away',
      }),
    });
    expect(server.getService('default', 'a')).toBeUndefined();
    expect((await api(server, 'GET', '/api/v1/services')).status).toBe(200);
    // Anything else thrown is a 500 InternalError, never a hang.
    server.beforeHandle = () => {
      throw new Error('bug');
    };
    expect((await api(server, 'GET', '/api/v1/services')).body).toMatchObject({
      code: 500,
      reason: 'InternalError',
    });
  });
});
