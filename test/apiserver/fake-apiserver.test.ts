// The fake API server's own wire semantics, checked with plain fetch (and once with client-node).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  AdmissionDenied,
  applyJsonPatch,
  FakeApiServer,
  type Json,
  kubeconfigYaml,
  toAdmissionReview,
} from './fake-apiserver.ts';
import { selfSignedCertificate } from './tls.ts';

const eventually = (fn: () => void | Promise<void>) => vi.waitFor(fn, { timeout: 15_000, interval: 10 });

function svc(name: string, namespace = 'default', port = 80, extra: Json = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec: { ports: [{ port }] },
    ...extra,
  };
}

interface Stream {
  status: number;
  headers: Headers;
  events: Json[];
  readonly ended: boolean;
  readonly failed: unknown;
  close(): void;
}

async function openWatch(server: FakeApiServer, path: string): Promise<Stream> {
  const controller = new AbortController();
  const res = await fetch(`${server.url}${path}`, {
    headers: { authorization: `Bearer ${server.token}` },
    signal: controller.signal,
  });
  const events: Json[] = [];
  let ended = false;
  let failed: unknown;
  void (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      if (!res.body) throw new Error('no body');
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk, { stream: true });
        for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
          events.push(JSON.parse(buffer.slice(0, i)) as Json);
          buffer = buffer.slice(i + 1);
        }
      }
      ended = true;
    } catch (error) {
      failed = error;
    }
  })();
  return {
    status: res.status,
    headers: res.headers,
    events,
    get ended() {
      return ended;
    },
    get failed() {
      return failed;
    },
    close: () => controller.abort(),
  };
}

async function api(server: FakeApiServer, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

function rvOf(object: unknown): number {
  const metadata = (object as { metadata?: { resourceVersion?: string } }).metadata;
  return Number(metadata?.resourceVersion);
}

function objectOf(event: Json | undefined): Json {
  return (event?.object ?? {}) as Json;
}

function typeOf(event: Json | undefined): unknown {
  return event?.type;
}

describe('fake API server', () => {
  let server: FakeApiServer;
  const streams: Stream[] = [];

  beforeEach(async () => {
    server = await FakeApiServer.start({ historyLimit: 50 });
  });

  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await server.close();
  });

  it('lists like the real server: ServiceList, resourceVersion, items without kind', async () => {
    await api(server, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    const list = await api(server, 'GET', '/api/v1/services');
    expect(list.status).toBe(200);
    expect(list.body.kind).toBe('ServiceList');
    expect(list.body.apiVersion).toBe('v1');
    expect(rvOf(list.body)).toBe(server.resourceVersion);
    const items = list.body.items as Json[];
    expect(items).toHaveLength(1);
    expect(items[0]?.kind).toBeUndefined();
    const ns = await api(server, 'GET', '/api/v1/namespaces');
    expect(ns.body.kind).toBe('NamespaceList');
    expect((ns.body.items as Json[]).map((n) => (n.metadata as Json).name)).toContain('kube-system');
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

  it('streams watch events as newline-delimited JSON over chunked encoding', async () => {
    const from = server.resourceVersion;
    const watch = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${from}`);
    streams.push(watch);
    expect(watch.status).toBe(200);
    expect(watch.headers.get('transfer-encoding')).toBe('chunked');
    expect(watch.headers.get('content-type')).toBe('application/json');
    const created = await server.createService(svc('a'));
    await server.updateService({
      ...created,
      metadata: { ...(created.metadata as Json), labels: { x: 'y' } },
    });
    await server.deleteService('default', 'a');
    await eventually(() => expect(watch.events.map(typeOf)).toEqual(['ADDED', 'MODIFIED', 'DELETED']));
    const rvs = watch.events.map((e) => rvOf(e.object));
    expect(rvs[0]).toBeGreaterThan(from);
    expect(rvs[1]).toBeGreaterThan(rvs[0] ?? 0);
    expect(rvs[2]).toBeGreaterThan(rvs[1] ?? 0);
    expect(objectOf(watch.events[0]).kind).toBe('Service');

    // A watch from a past resourceVersion replays what followed it, and only that.
    const replay = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${rvs[0]}`);
    streams.push(replay);
    await eventually(() => expect(replay.events.map(typeOf)).toEqual(['MODIFIED', 'DELETED']));

    // Without a resourceVersion: the current state as ADDED, then live events.
    await server.createService(svc('b'));
    const fresh = await openWatch(server, '/api/v1/services?watch=true');
    streams.push(fresh);
    await eventually(() => expect(fresh.events.map(typeOf)).toEqual(['ADDED']));
  });

  it('filters namespaced watches and lists', async () => {
    await server.createNamespace('team');
    const watch = await openWatch(
      server,
      `/api/v1/namespaces/team/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    streams.push(watch);
    await server.createService(svc('other'));
    await server.createService(svc('mine', 'team'));
    await eventually(() => expect(watch.events).toHaveLength(1));
    expect((objectOf(watch.events[0]).metadata as Json).name).toBe('mine');
    const list = await api(server, 'GET', '/api/v1/namespaces/team/services');
    expect((list.body.items as Json[]).map((i) => (i.metadata as Json).name)).toEqual(['mine']);
  });

  it('answers a too-old resourceVersion with a 410 ERROR event, as the real server does', async () => {
    const old = server.resourceVersion;
    await server.createService(svc('a'));
    server.compact();
    const watch = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${old}`);
    expect(watch.status).toBe(200);
    await eventually(() => expect(watch.ended).toBe(true));
    expect(watch.events).toEqual([
      {
        type: 'ERROR',
        object: expect.objectContaining({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 }),
      },
    ]);
    // The history is bounded too: 60 writes with a limit of 50 push the first ones out.
    const before = server.resourceVersion;
    for (let i = 0; i < 60; i++) await server.createService(svc(`s${i}`));
    const tooOld = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${before}`);
    await eventually(() => expect(tooOld.ended).toBe(true));
    expect(objectOf(tooOld.events[0]).code).toBe(410);
    const recent = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion - 5}`,
    );
    streams.push(recent);
    await eventually(() => expect(recent.events).toHaveLength(5));
  });

  it('sends bookmarks only to watches that allow them', async () => {
    const rv = server.resourceVersion;
    const with_ = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`,
    );
    const without = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${rv}`);
    streams.push(with_, without);
    await server.createNamespace('elsewhere'); // moves the cluster resourceVersion, no Service event
    server.injectBookmark();
    await server.createService(svc('after'));
    await eventually(() => expect(with_.events.map(typeOf)).toEqual(['BOOKMARK', 'ADDED']));
    expect(rvOf(with_.events[0]?.object)).toBe(rv + 1);
    expect(objectOf(with_.events[0]).kind).toBe('Service');
    await eventually(() => expect(without.events.map(typeOf)).toEqual(['ADDED']));
  });

  it('pages lists over a consistent snapshot, and expires continue tokens on compaction', async () => {
    for (const name of ['a', 'b', 'c', 'd', 'e']) await server.createService(svc(name));
    const first = await api(server, 'GET', '/api/v1/services?limit=2');
    const meta = first.body.metadata as Json;
    expect(meta.continue).toEqual(expect.any(String));
    expect(meta.remainingItemCount).toBe(3);
    await server.deleteService('default', 'e'); // after the snapshot: not seen by this list
    const second = await api(server, 'GET', `/api/v1/services?limit=2&continue=${meta.continue}`);
    const third = await api(
      server,
      'GET',
      `/api/v1/services?limit=2&continue=${(second.body.metadata as Json).continue}`,
    );
    expect((third.body.metadata as Json).continue).toBeUndefined();
    const names = [first, second, third].flatMap((p) =>
      (p.body.items as Json[]).map((i) => (i.metadata as Json).name),
    );
    expect(names).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(rvOf(second.body)).toBe(rvOf(first.body));

    const again = await api(server, 'GET', '/api/v1/services?limit=2');
    server.compact();
    const expired = await api(
      server,
      'GET',
      `/api/v1/services?limit=2&continue=${(again.body.metadata as Json).continue}`,
    );
    expect(expired.status).toBe(410);
    expect(expired.body).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });
  });

  it('drops watches (reset or clean end), expires them, and holds delivery', async () => {
    const a = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    const b = await openWatch(
      server,
      `/api/v1/namespaces?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    expect(server.openWatches()).toBe(2);
    server.dropWatches('reset', 'services');
    await eventually(() => expect(a.failed).toBeDefined());
    server.dropWatches('end');
    await eventually(() => expect(b.ended).toBe(true));
    expect(server.openWatches()).toBe(0);

    const c = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    streams.push(c);
    server.holdWatches();
    await server.createService(svc('held'));
    expect(c.events).toHaveLength(0);
    server.releaseWatches();
    await eventually(() => expect(c.events.map(typeOf)).toEqual(['ADDED']));
    server.expireWatches();
    await eventually(() => expect(c.ended).toBe(true));
    expect(objectOf(c.events[1]).code).toBe(410);
  });

  it('goes down (connections refused), keeps state and accepts direct writes, and comes back on the same port', async () => {
    await server.createService(svc('before'));
    const watch = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    const port = server.port;
    await server.goDown();
    await eventually(() => expect(watch.failed ?? watch.ended).toBeTruthy());
    await expect(fetch(`${server.url}/api/v1/services`)).rejects.toThrow();
    await server.createService(svc('during'));
    await server.comeBack();
    expect(server.port).toBe(port);
    const list = await api(server, 'GET', '/api/v1/services');
    expect((list.body.items as Json[]).map((i) => (i.metadata as Json).name)).toEqual(['before', 'during']);
  });

  it('deletes the Services of a deleted Namespace', async () => {
    await server.createNamespace('gone');
    await server.createService(svc('x', 'gone'));
    const watch = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    streams.push(watch);
    const res = await api(server, 'DELETE', '/api/v1/namespaces/gone');
    expect(res.status).toBe(200);
    await eventually(() => expect(watch.events.map(typeOf)).toEqual(['DELETED']));
    expect(server.listServices()).toHaveLength(0);
  });

  it('runs the admission hook on POST and PUT', async () => {
    const seen: string[] = [];
    await server.close();
    server = await FakeApiServer.start({
      onAdmit: (request) => {
        seen.push(`${request.operation} ${request.resource} ${request.namespace ?? ''}/${request.name}`);
        if (request.name === 'forbidden') throw new AdmissionDenied('no thanks', 403);
        if (request.resource !== 'services') return undefined;
        // What a webhook would send back: a JSON Patch, applied as the apiserver does.
        const review = toAdmissionReview(request);
        expect((review.request as Json).operation).toBe(request.operation);
        return applyJsonPatch(request.object, [
          { op: 'add', path: '/metadata/annotations', value: { 'hints.slipstream.dev/offload': 'none' } },
        ]);
      },
    });
    const created = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    expect((created.body.metadata as Json).annotations).toEqual({ 'hints.slipstream.dev/offload': 'none' });
    await api(server, 'PUT', '/api/v1/namespaces/default/services/a', {
      ...created.body,
      metadata: { name: 'a' },
    });
    const denied = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('forbidden'));
    expect(denied.status).toBe(403);
    expect(String(denied.body.message)).toContain('no thanks');
    await api(server, 'POST', '/api/v1/namespaces', { metadata: { name: 'ns1' } });
    expect(seen).toEqual([
      'CREATE services default/a',
      'UPDATE services default/a',
      'CREATE services default/forbidden',
      'CREATE namespaces /ns1',
    ]);
  });

  it('applies JSON Patches like the apiserver', () => {
    const object = { metadata: { name: 'a', annotations: { 'a/b': '1' } }, spec: { ports: [{ port: 1 }] } };
    const patched = applyJsonPatch(object, [
      { op: 'replace', path: '/metadata/annotations/a~1b', value: '2' },
      { op: 'add', path: '/spec/ports/-', value: { port: 2 } },
      { op: 'remove', path: '/spec/ports/0' },
    ]);
    expect(patched).toEqual({
      metadata: { name: 'a', annotations: { 'a/b': '2' } },
      spec: { ports: [{ port: 2 }] },
    });
    expect(object.spec.ports).toEqual([{ port: 1 }]);
    expect(() => applyJsonPatch(object, [{ op: 'remove', path: '/metadata/nope' }])).toThrow();
  });

  it('writes a kubeconfig that client-node loads and uses', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fake-apiserver-'));
    try {
      const path = await server.writeKubeconfig(join(dir, 'kubeconfig'));
      const kc = new KubeConfig();
      kc.loadFromFile(path);
      expect(kc.getCurrentCluster()?.server).toBe(server.url);
      const core = kc.makeApiClient(CoreV1Api);
      await core.createNamespacedService({ namespace: 'default', body: svc('from-client') });
      const list = await core.listServiceForAllNamespaces();
      expect(list.items.map((s) => s.metadata?.name)).toEqual(['from-client']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('serves HTTPS with a CA in the kubeconfig', async (context) => {
    const tls = selfSignedCertificate();
    if (!tls) {
      context.skip();
      return;
    }
    const secure = await FakeApiServer.start({ tls });
    try {
      expect(secure.url).toMatch(/^https:/);
      const kc = new KubeConfig();
      kc.loadFromString(secure.kubeconfig());
      expect(kc.getCurrentCluster()?.caData).toBeDefined();
      const list = await kc.makeApiClient(CoreV1Api).listNamespace();
      expect(list.items.length).toBeGreaterThan(0);
      expect(kubeconfigYaml({ server: 'https://x', insecureSkipTlsVerify: true })).toContain(
        'insecure-skip-tls-verify: true',
      );
    } finally {
      await secure.close();
    }
  });
});
