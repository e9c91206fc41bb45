// The object store: its resourceVersions and history, and kube-apiserver's create/update/delete
// rules, directly and over HTTP.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import type { Json } from './resources.ts';
import { StatusError } from './status.ts';
import { ObjectStore, type StoreEvent } from './store.ts';
import { api, b64, rvOf, type Stream, svc, tlsSecret } from './wire.ts';

const SECRETS = '/api/v1/namespaces/slipstream-system/secrets';

describe('the object store over HTTP', () => {
  let server: FakeApiServer;
  const streams: Stream[] = [];

  beforeEach(async () => {
    server = await FakeApiServer.start({ historyLimit: 50 });
  });

  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await server.close();
  });

  it('creates Services with server-side defaults and increasing resourceVersions', async () => {
    const rvs: number[] = [server.resourceVersion];
    const created = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('web'));
    expect(created.status).toBe(201);
    rvs.push(rvOf(created.body));
    const spec = created.body.spec as Json;
    expect(spec.type).toBe('ClusterIP');
    expect(spec.clusterIP).toMatch(/^10\.96\./);
    expect(spec.clusterIPs).toEqual([spec.clusterIP]);
    expect((spec.ports as Json[])[0]).toMatchObject({ port: 80, protocol: 'TCP', targetPort: 80 });
    const metadata = created.body.metadata as Json;
    expect(metadata.uid).toEqual(expect.any(String));
    expect(metadata.managedFields).toEqual(expect.any(Array));

    const dual = await api(
      server,
      'POST',
      '/api/v1/namespaces/default/services',
      svc('dual', 'default', 80, { spec: { ports: [{ port: 80 }], ipFamilyPolicy: 'RequireDualStack' } }),
    );
    rvs.push(rvOf(dual.body));
    expect((dual.body.spec as Json).clusterIPs).toEqual([
      expect.stringMatching(/^10\.96\./),
      expect.stringMatching(/^fd00:10:96::/),
    ]);

    const updated = await api(server, 'PUT', '/api/v1/namespaces/default/services/web', {
      ...created.body,
      metadata: { ...metadata, labels: { tier: 'front' } },
    });
    expect(updated.status).toBe(200);
    rvs.push(rvOf(updated.body));
    expect((updated.body.spec as Json).clusterIP).toBe(spec.clusterIP);
    const deleted = await api(server, 'DELETE', '/api/v1/namespaces/default/services/web');
    rvs.push(rvOf(deleted.body));
    expect([...rvs].sort((a, b) => a - b)).toEqual(rvs);
    expect(new Set(rvs).size).toBe(rvs.length);
  });
});

describe('the object store over HTTP: Secrets', () => {
  let server: FakeApiServer;
  const admitted: string[] = [];

  beforeEach(async () => {
    admitted.length = 0;
    server = await FakeApiServer.start({
      namespaces: ['default', 'slipstream-system'],
      onAdmit: (request) => {
        admitted.push(request.resource);
        return undefined;
      },
    });
  });

  afterEach(async () => {
    await server.close();
  });

  it('creates a Secret once: a second POST is 409 AlreadyExists; GET of a missing one is 404 NotFound', async () => {
    const missing = await api(server, 'GET', `${SECRETS}/tls`);
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404 });
    const created = await api(server, 'POST', SECRETS, tlsSecret('tls'));
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ kind: 'Secret', apiVersion: 'v1', type: 'kubernetes.io/tls' });
    expect((created.body.metadata as Json).uid).toEqual(expect.any(String));
    const again = await api(server, 'POST', SECRETS, tlsSecret('tls'));
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ kind: 'Status', reason: 'AlreadyExists', code: 409 });
    expect((again.body.details as Json).name).toBe('tls');
    const read = await api(server, 'GET', `${SECRETS}/tls`);
    expect(read.body).toEqual(created.body);
    expect(server.requests.filter((r) => r.verb === 'create').map((r) => r.status)).toEqual([201, 409]);
    expect(admitted).toEqual([]); // only Services and Namespaces go through onAdmit
  });

  it('PUT with a stale resourceVersion is 409 Conflict; with the current one it writes', async () => {
    const created = await api(server, 'POST', SECRETS, tlsSecret('tls'));
    const first = await api(server, 'PUT', `${SECRETS}/tls`, {
      ...created.body,
      data: { 'tls.crt': b64('cert-2'), 'tls.key': b64('key-2') },
    });
    expect(first.status).toBe(200);
    expect(rvOf(first.body)).toBeGreaterThan(rvOf(created.body));
    const stale = await api(server, 'PUT', `${SECRETS}/tls`, {
      ...created.body,
      data: { 'tls.crt': b64('cert-3'), 'tls.key': b64('key-3') },
    });
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({ kind: 'Status', reason: 'Conflict', code: 409 });
    expect(server.secretData('slipstream-system', 'tls')?.['tls.crt']).toBe('cert-2');
  });
});

describe('ObjectStore', () => {
  const events: StoreEvent[] = [];
  let store: ObjectStore;

  beforeEach(async () => {
    events.length = 0;
    store = new ObjectStore(3);
    store.onCommit = (event) => events.push(event);
    await store.create('namespaces', undefined, { metadata: { name: 'default' } });
  });

  it('an update that changes nothing writes nothing; one that does moves the resourceVersion', async () => {
    const created = await store.create('services', 'default', svc('a'));
    const rv = store.resourceVersion;
    const same = await store.update('services', 'default', 'a', structuredClone(created));
    expect(store.resourceVersion).toBe(rv);
    expect(same).toEqual(created);
    const labelled = structuredClone(created);
    (labelled.metadata as Json).labels = { x: 'y' };
    const changed = await store.update('services', 'default', 'a', labelled);
    expect(rvOf(changed)).toBe(rv + 1);
    expect(((changed.metadata as Json).managedFields as unknown[]).length).toBe(2);
    expect(events.map((e) => JSON.parse(e.line).type)).toEqual(['ADDED', 'ADDED', 'MODIFIED']);
  });

  it('keeps a bounded history: since() replays what followed, or says "expired"', async () => {
    const from = store.resourceVersion;
    for (const name of ['a', 'b', 'c', 'd']) await store.create('services', 'default', svc(name));
    expect(store.since(from, 'services')).toBe('expired'); // 4 writes, 3 kept
    const kept = store.since(from + 1, 'services');
    expect(kept !== 'expired' && kept.map((e) => e.rv)).toEqual([from + 2, from + 3, from + 4]);
    store.compact();
    expect(store.since(from + 3, 'services')).toBe('expired');
    expect(store.since(store.resourceVersion, 'services')).toEqual([]);
  });

  it('runs admission on a create when asked, and checks again after it what may have changed', async () => {
    await store.create('namespaces', undefined, { metadata: { name: 'brief' } });
    const err = await store
      .create('services', 'brief', svc('x', 'brief'), async (request) => {
        store.delete('namespaces', undefined, 'brief'); // deleted while the webhook was thinking
        return request.object;
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StatusError);
    expect(err).toMatchObject({ code: 404, message: 'namespaces "brief" not found' });
    const named = await store.create('services', 'default', {
      metadata: { generateName: 'web-' },
      spec: { ports: [{ port: 1 }] },
    });
    expect((named.metadata as Json).name).toMatch(/^web-[0-9a-f]{5}$/);
  });

  it('refuses a write that lost a race during admission with 409 Conflict', async () => {
    const created = await store.create('services', 'default', svc('a'));
    const mine = structuredClone(created);
    (mine.metadata as Json).labels = { by: 'me' };
    const err = await store
      .update('services', 'default', 'a', mine, async (request) => {
        const theirs = structuredClone(created);
        (theirs.metadata as Json).labels = { by: 'them' };
        await store.update('services', 'default', 'a', theirs);
        return request.object;
      })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 409, reason: 'Conflict' });
    expect(store.get('services', 'default', 'a')?.metadata).toMatchObject({ labels: { by: 'them' } });
  });

  it('deletes a Namespace with its Services and Secrets, each a DELETED event', async () => {
    await store.create('namespaces', undefined, { metadata: { name: 'gone' } });
    await store.create('services', 'gone', svc('s', 'gone'));
    await store.create('secrets', 'gone', { ...tlsSecret('t'), metadata: { name: 't' } });
    events.length = 0;
    store.delete('namespaces', undefined, 'gone');
    expect(events.map((e) => `${JSON.parse(e.line).type} ${e.resource}`)).toEqual([
      'DELETED services',
      'DELETED secrets',
      'DELETED namespaces',
    ]);
    expect(store.items('services')).toEqual([]);
    expect(() => store.delete('namespaces', undefined, 'gone')).toThrow('namespaces "gone" not found');
  });
});
