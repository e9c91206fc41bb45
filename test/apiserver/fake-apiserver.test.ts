// The fake API server's own wire semantics, checked with plain fetch (and once with client-node).

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AdmissionregistrationV1Api,
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  AdmissionDenied,
  applyJsonPatch,
  applyMergePatch,
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

const b64 = (text: string) => Buffer.from(text).toString('base64');

function tlsSecret(name: string, extra: Json = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: 'slipstream-system' },
    type: 'kubernetes.io/tls',
    data: { 'tls.crt': b64('cert'), 'tls.key': b64('key') },
    ...extra,
  };
}

function webhookConfiguration(name: string, hooks = 1): Json {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name },
    webhooks: Array.from({ length: hooks }, (_, i) => ({
      name: `hook-${i}.slipstream.dev`,
      admissionReviewVersions: ['v1'],
      sideEffects: 'None',
      clientConfig: {
        service: { name: 'slipstream-webhook', namespace: 'slipstream-system', path: '/mutate' },
      },
    })),
  };
}

async function patch(server: FakeApiServer, path: string, contentType: string, body: unknown) {
  const res = await fetch(`${server.url}${path}`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${server.token}`, 'content-type': contentType },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

describe('fake API server: Secrets and MutatingWebhookConfigurations', () => {
  let server: FakeApiServer;
  const admitted: string[] = [];
  const SECRETS = '/api/v1/namespaces/slipstream-system/secrets';
  const MWC = '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations';

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

  it('defaults and validates Secrets like the real server', async () => {
    const opaque = await api(server, 'POST', SECRETS, {
      metadata: { name: 'plain' },
      stringData: { greeting: 'hello' },
    });
    expect(opaque.status).toBe(201);
    expect(opaque.body.type).toBe('Opaque');
    expect(opaque.body.stringData).toBeUndefined();
    expect(server.secretData('slipstream-system', 'plain')).toEqual({ greeting: 'hello' });

    const noKey = await api(server, 'POST', SECRETS, tlsSecret('bad', { data: { 'tls.crt': b64('x') } }));
    expect(noKey.status).toBe(422);
    expect(String(noKey.body.message)).toContain('data[tls.key]: Required value');
    const notBase64 = await api(
      server,
      'POST',
      SECRETS,
      tlsSecret('bad', { data: { 'tls.crt': '*', 'tls.key': '' } }),
    );
    expect(notBase64.status).toBe(400);
    const dotted = await api(server, 'POST', SECRETS, tlsSecret('slipstream.webhook-tls'));
    expect(dotted.status).toBe(201); // Secret names are DNS subdomains
    const elsewhere = await api(server, 'POST', '/api/v1/namespaces/nowhere/secrets', {
      ...tlsSecret('tls'),
      metadata: { name: 'tls' },
    });
    expect(elsewhere.status).toBe(404);
    const retype = await api(server, 'PUT', `${SECRETS}/plain`, {
      ...opaque.body,
      type: 'kubernetes.io/tls',
    });
    expect(retype.status).toBe(422);
    expect(String(retype.body.message)).toContain('field is immutable');
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

  it('PATCHes Secrets with merge and JSON patches; resourceVersion in the patch is a precondition', async () => {
    const created = await api(server, 'POST', SECRETS, tlsSecret('tls'));
    const rv = (created.body.metadata as Json).resourceVersion;
    const merged = await patch(server, `${SECRETS}/tls`, 'application/merge-patch+json', {
      metadata: { resourceVersion: rv, annotations: { a: '1' } },
      data: { 'ca.crt': b64('ca') },
    });
    expect(merged.status).toBe(200);
    expect(server.secretData('slipstream-system', 'tls')).toEqual({
      'tls.crt': 'cert',
      'tls.key': 'key',
      'ca.crt': 'ca',
    });
    const staleMerge = await patch(server, `${SECRETS}/tls`, 'application/merge-patch+json', {
      metadata: { resourceVersion: rv },
      data: { 'ca.crt': null },
    });
    expect(staleMerge.status).toBe(409);
    expect(staleMerge.body.reason).toBe('Conflict');
    const unconditional = await patch(server, `${SECRETS}/tls`, 'application/merge-patch+json', {
      data: { 'ca.crt': null },
    });
    expect(unconditional.status).toBe(200);
    expect(server.secretData('slipstream-system', 'tls')).toEqual({ 'tls.crt': 'cert', 'tls.key': 'key' });

    const current = (unconditional.body.metadata as Json).resourceVersion;
    const tested = await patch(server, `${SECRETS}/tls`, 'application/json-patch+json', [
      { op: 'test', path: '/metadata/resourceVersion', value: rv },
      { op: 'add', path: '/data/ca.crt', value: b64('ca') },
    ]);
    expect(tested.status).toBe(422);
    expect(tested.body).toMatchObject({ kind: 'Status', reason: 'Invalid', code: 422 });
    const ok = await patch(server, `${SECRETS}/tls`, 'application/json-patch+json', [
      { op: 'test', path: '/metadata/resourceVersion', value: current },
      { op: 'add', path: '/data/ca.crt', value: b64('ca') },
    ]);
    expect(ok.status).toBe(200);
    expect(server.secretData('slipstream-system', 'tls')?.['ca.crt']).toBe('ca');
    const strategic = await patch(server, `${SECRETS}/tls`, 'application/strategic-merge-patch+json', {});
    expect(strategic.status).toBe(415);
    const missing = await patch(server, `${SECRETS}/nope`, 'application/merge-patch+json', {});
    expect(missing.status).toBe(404);
  });

  it('serves MutatingWebhookConfigurations: defaults, GET, PUT, JSON and merge PATCH as client-node sends them', async () => {
    await server.createMutatingWebhookConfiguration(webhookConfiguration('slipstream', 2));
    const stored = server.getMutatingWebhookConfiguration('slipstream')!;
    expect(stored.apiVersion).toBe('admissionregistration.k8s.io/v1');
    const hook = (stored.webhooks as Json[])[0]!;
    expect(hook).toMatchObject({ failurePolicy: 'Fail', timeoutSeconds: 10, matchPolicy: 'Equivalent' });
    expect((hook.clientConfig as { service: Json }).service.port).toBe(443);
    expect(server.caBundles('slipstream')).toEqual(['', '']);

    const kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    const admission = kc.makeApiClient(AdmissionregistrationV1Api);
    const read = await admission.readMutatingWebhookConfiguration({ name: 'slipstream' });
    expect(read.webhooks).toHaveLength(2);
    const rv = read.metadata?.resourceVersion;

    await admission.patchMutatingWebhookConfiguration({
      name: 'slipstream',
      body: [
        { op: 'test', path: '/metadata/resourceVersion', value: rv },
        { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: b64('CA-1') },
        { op: 'add', path: '/webhooks/1/clientConfig/caBundle', value: b64('CA-1') },
      ],
    });
    expect(server.caBundles('slipstream')).toEqual(['CA-1', 'CA-1']);
    const stale = await admission
      .patchMutatingWebhookConfiguration({
        name: 'slipstream',
        body: [
          { op: 'test', path: '/metadata/resourceVersion', value: rv },
          { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: b64('CA-2') },
        ],
      })
      .catch((error: unknown) => error);
    expect(stale).toBeInstanceOf(ApiException);
    expect((stale as ApiException<unknown>).code).toBe(422);

    await admission.patchMutatingWebhookConfiguration(
      { name: 'slipstream', body: { metadata: { annotations: { 'slipstream.dev/x': 'y' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect((server.getMutatingWebhookConfiguration('slipstream')!.metadata as Json).annotations).toEqual({
      'slipstream.dev/x': 'y',
    });
    expect(server.requests.filter((r) => r.verb === 'patch').map((r) => [r.contentType, r.status])).toEqual([
      ['application/json-patch+json', 200],
      ['application/json-patch+json', 422],
      ['application/merge-patch+json', 200],
    ]);

    const latest = await admission.readMutatingWebhookConfiguration({ name: 'slipstream' });
    const hooks = latest.webhooks!;
    hooks[1]!.clientConfig.caBundle = b64('CA-3');
    await admission.replaceMutatingWebhookConfiguration({ name: 'slipstream', body: latest });
    expect(server.caBundles('slipstream')).toEqual(['CA-1', 'CA-3']);
    const conflict = await admission
      .replaceMutatingWebhookConfiguration({ name: 'slipstream', body: latest })
      .catch((error: unknown) => error);
    expect((conflict as ApiException<unknown>).code).toBe(409);

    const missing = await api(server, 'GET', `${MWC}/nope`);
    expect(missing.status).toBe(404);
    const invalid = await api(server, 'POST', MWC, {
      ...webhookConfiguration('broken'),
      webhooks: [{ name: 'nodots', clientConfig: { url: 'https://x' } }],
    });
    expect(invalid.status).toBe(422);
    const badBundle = await patch(server, `${MWC}/slipstream`, 'application/json-patch+json', [
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: 'not base64!' },
    ]);
    expect(badBundle.status).toBe(400);
  });

  it('works with client-node CoreV1Api for Secrets (409s are ApiExceptions), and direct writes', async () => {
    const kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
    const core = kc.makeApiClient(CoreV1Api);
    const created = await core.createNamespacedSecret({
      namespace: 'slipstream-system',
      body: tlsSecret('tls'),
    });
    const exists = await core
      .createNamespacedSecret({ namespace: 'slipstream-system', body: tlsSecret('tls') })
      .catch((error: unknown) => error);
    expect((exists as ApiException<unknown>).code).toBe(409);
    await server.updateSecret({
      ...server.getSecret('slipstream-system', 'tls'),
      data: { 'tls.crt': b64('direct'), 'tls.key': b64('k') },
    });
    const conflict = await core
      .replaceNamespacedSecret({ namespace: 'slipstream-system', name: 'tls', body: created })
      .catch((error: unknown) => error);
    expect((conflict as ApiException<unknown>).code).toBe(409);
    const read = await core.readNamespacedSecret({ namespace: 'slipstream-system', name: 'tls' });
    expect(Buffer.from(read.data?.['tls.crt'] ?? '', 'base64').toString()).toBe('direct');
    const missing = await core
      .readNamespacedSecret({ namespace: 'slipstream-system', name: 'nope' })
      .catch((error: unknown) => error);
    expect((missing as ApiException<unknown>).code).toBe(404);

    await server.goDown();
    await server.createSecret(tlsSecret('while-down'));
    await server.comeBack();
    expect(server.getSecret('slipstream-system', 'while-down')).toBeDefined();
    await server.deleteNamespace('slipstream-system');
    expect(server.getSecret('slipstream-system', 'tls')).toBeUndefined();
  });

  it('applies merge patches per RFC 7386', () => {
    expect(
      applyMergePatch({ a: 1, b: { c: 2, d: 3 }, e: [1] }, { b: { c: null, f: 4 }, e: [2], g: 'x' }),
    ).toEqual({
      a: 1,
      b: { d: 3, f: 4 },
      e: [2],
      g: 'x',
    });
  });
});
