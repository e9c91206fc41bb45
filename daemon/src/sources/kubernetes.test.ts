import { type LogLine, memoryLogger } from '@slipstream/shared/adapters/log';
// The Kubernetes source against the fake API server (test/apiserver), running the real
// @kubernetes/client-node code: KubeConfig from a kubeconfig file, CoreV1Api lists, Watch and
// ListWatch. No kube-apiserver can run on this machine; see test/apiserver/README.md.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig, type V1Service } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeApiServer, type Json } from '../../../test/apiserver/fake-apiserver.ts';
import { selfSignedCertificate } from '../../../test/apiserver/tls.ts';
import { until } from '../../../test/lib/process.ts';
import { KubernetesSource, type KubernetesSourceOptions } from './kubernetes.ts';
import { LAST_APPLIED_ANNOTATION } from './slim.ts';
import type { SourceChange, Trigger } from './source.ts';

const eventually = (fn: () => void | Promise<void>) => vi.waitFor(fn, { timeout: 20_000, interval: 10 });

function svc(name: string, namespace = 'default', port = 80, annotations: Record<string, string> = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace, annotations },
    spec: { ports: [{ name: 'p', port }] },
  };
}

function names(source: KubernetesSource): string[] {
  return source
    .snapshot()
    .services.map((s) => `${s.namespace}/${s.name}`)
    .sort();
}

function serverNames(server: FakeApiServer): string[] {
  return server
    .listServices()
    .map((s) => `${(s.metadata as Json).namespace}/${(s.metadata as Json).name}`)
    .sort();
}

describe('KubernetesSource', () => {
  let server: FakeApiServer;
  let dir: string;
  let kubeconfig: string;
  let sources: KubernetesSource[];
  let logger: ReturnType<typeof memoryLogger>;
  let logs: LogLine[];

  beforeEach(async () => {
    server = await FakeApiServer.start();
    dir = mkdtempSync(join(tmpdir(), 'slipstream-k8s-'));
    kubeconfig = await server.writeKubeconfig(join(dir, 'kubeconfig'));
    sources = [];
    logger = memoryLogger();
    logs = logger.lines;
  });

  afterEach(async () => {
    for (const source of sources) await source.stop();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** start() resolves after the lists; the watches open just after. */
  const watching = () => eventually(() => expect(server.openWatches()).toBe(2));

  function makeSource(options: KubernetesSourceOptions = {}): {
    source: KubernetesSource;
    triggers: Trigger[];
    changes: SourceChange[];
  } {
    const source = new KubernetesSource({
      kubeconfig,
      pageSize: 2,
      backoff: { initialMs: 20, maxMs: 200, resetAfterMs: 60_000, jitter: false },
      log: logger,
      ...options,
    });
    sources.push(source);
    const triggers: Trigger[] = [];
    const changes: SourceChange[] = [];
    source.onChange((c) => {
      triggers.push(c.trigger);
      changes.push(c);
    });
    return { source, triggers, changes };
  }

  it('lists Services (paged) and Namespaces before start() resolves', async () => {
    await server.createNamespace('shop', { 'slipstream.dev/acceleration': 'disabled' });
    for (const name of ['a', 'b', 'c', 'd', 'e']) await server.createService(svc(name));
    await server.createService(svc('cart', 'shop', 6379));
    const { source, triggers } = makeSource();
    expect(source.synced).toBe(false);
    await source.start();
    expect(source.synced).toBe(true);
    expect(names(source)).toEqual(serverNames(server));
    expect(server.count('list', 'services')).toBe(3); // 6 Services in pages of 2
    // The pages of one list share connections (client-node alone opens one per request).
    const ports = new Set(
      server.requests.filter((r) => r.verb === 'list' && r.resource === 'services').map((r) => r.remotePort),
    );
    expect(ports.size).toBeLessThan(3);
    const snapshot = source.snapshot();
    expect(snapshot.namespaces.get('shop')?.labels).toMatchObject({
      'slipstream.dev/acceleration': 'disabled',
    });
    expect(snapshot.namespaces.has('kube-system')).toBe(true);
    const cart = snapshot.services.find((s) => s.name === 'cart');
    expect(cart).toMatchObject({
      namespace: 'shop',
      type: 'ClusterIP',
      ports: [{ name: 'p', port: 6379, protocol: 'TCP' }],
    });
    expect(cart?.clusterIPs[0]).toMatch(/^10\.96\./);
    expect(snapshot.rejected).toEqual([]);
    expect(source.snapshot()).toBe(snapshot); // cached until something changes
    expect(triggers).toEqual([]); // the initial load is start()'s, not a change
  });

  it("keeps a LoadBalancer's ingress IPs, and a status update (the load balancer getting an address) is a change", async () => {
    await server.createService({
      ...svc('edge', 'default', 443),
      spec: { type: 'LoadBalancer', externalIPs: ['198.51.100.9'], ports: [{ name: 'https', port: 443 }] },
    });
    const { source, triggers } = makeSource();
    await source.start();
    const before = source.snapshot().services.find((x) => x.name === 'edge');
    expect(before?.externalIPs).toEqual(['198.51.100.9']);
    expect(before?.loadBalancerIPs).toBeUndefined();
    expect(before?.ports[0]?.nodePort).toBeGreaterThan(0);
    server.setServiceStatus('default', 'edge', { loadBalancer: { ingress: [{ ip: '203.0.113.9' }] } });
    await until('the load balancer address', () =>
      source
        .snapshot()
        .services.find((x) => x.name === 'edge')
        ?.loadBalancerIPs?.includes('203.0.113.9'),
    );
    expect(triggers).toContain('service');
  });

  it('keeps only readService output: managedFields, status and last-applied are dropped', async () => {
    const big = JSON.stringify({ apiVersion: 'v1', kind: 'Service', padding: 'x'.repeat(10_000) });
    await server.createService(
      svc('lean', 'default', 5432, {
        [LAST_APPLIED_ANNOTATION]: big,
        'slipstream.dev/packet-threshold': '200',
      }),
    );
    expect((server.getService('default', 'lean')?.metadata as Json | undefined)?.managedFields).toBeDefined();
    const { source } = makeSource();
    await source.start();
    const [lean] = source.snapshot().services;
    expect(lean?.annotations).toEqual({ 'slipstream.dev/packet-threshold': '200' });
    expect(Object.keys(lean ?? {}).sort()).toEqual([
      'annotations',
      'clusterIPs',
      'ipFamilies',
      'name',
      'namespace',
      'ports',
      'type',
      'uid',
    ]);
    // The same through a watch event.
    const current = server.getService('default', 'lean') as Json;
    const metadata = current.metadata as Json;
    await server.updateService({
      ...current,
      metadata: { ...metadata, annotations: { ...(metadata.annotations as Json), extra: 'yes' } },
    });
    await eventually(() => expect(source.snapshot().services[0]?.annotations.extra).toBe('yes'));
    expect(source.snapshot().services[0]?.annotations[LAST_APPLIED_ANNOTATION]).toBeUndefined();
  });

  it('follows ADDED, MODIFIED and DELETED watch events (objects written through CoreV1Api)', async () => {
    const { source, triggers } = makeSource();
    await source.start();
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);

    const before = source.snapshot();
    const created = await core.createNamespacedService({
      namespace: 'default',
      body: svc('pg', 'default', 5432) as V1Service,
    });
    await eventually(() => expect(names(source)).toEqual(['default/pg']));
    expect(triggers).toContain('service');
    expect(source.snapshot()).not.toBe(before);

    created.metadata = { ...created.metadata, annotations: { 'slipstream.dev/acceleration': 'disabled' } };
    await core.replaceNamespacedService({ name: 'pg', namespace: 'default', body: created });
    await eventually(() =>
      expect(source.snapshot().services[0]?.annotations['slipstream.dev/acceleration']).toBe('disabled'),
    );

    await core.createNamespace({
      body: { metadata: { name: 'quiet', labels: { 'slipstream.dev/acceleration': 'disabled' } } },
    });
    await eventually(() =>
      expect(source.snapshot().namespaces.get('quiet')?.labels['slipstream.dev/acceleration']).toBe(
        'disabled',
      ),
    );
    expect(triggers).toContain('namespace');

    await core.deleteNamespacedService({ name: 'pg', namespace: 'default' });
    await eventually(() => expect(names(source)).toEqual([]));
    await core.deleteNamespace({ name: 'quiet' });
    await eventually(() => expect(source.snapshot().namespaces.has('quiet')).toBe(false));
    expect(source.status().services.restarts).toBe(0);
    expect(server.count('list', 'services')).toBe(1);
  });

  it('hands a watched Service change over alone: the Service as read now, null once deleted', async () => {
    await server.createService(svc('keep', 'default', 80));
    const { source, changes } = makeSource();
    await source.start();
    await watching();
    await server.createService(svc('pg', 'default', 5432));
    await eventually(() => expect(changes.length).toBeGreaterThan(0));
    expect(changes).toEqual([
      {
        trigger: 'service',
        service: { namespace: 'default', name: 'pg', value: expect.objectContaining({ name: 'pg' }) },
      },
    ]);
    // The very object the snapshot holds, not a copy.
    const pg = source.snapshot().services.find((s) => s.name === 'pg');
    expect(changes[0]?.service?.value).toBe(pg);
    await server.deleteService('default', 'pg');
    await eventually(() => expect(changes).toHaveLength(2));
    expect(changes[1]).toEqual({
      trigger: 'service',
      service: { namespace: 'default', name: 'pg', value: null },
    });
  });

  it('keeps Service identity across relists and updates it cannot see (labels), firing nothing', async () => {
    await server.createService(svc('a'));
    await server.createService(svc('b'));
    const { source, triggers } = makeSource();
    await source.start();
    await watching();
    const [a, b] = source.snapshot().services;
    const current = server.getService('default', 'a') as Json;
    await server.updateService({
      ...current,
      metadata: { ...(current.metadata as Json), labels: { x: 'y' } },
    });
    await server.createService(svc('marker'));
    await eventually(() => expect(names(source)).toContain('default/marker'));
    expect(source.snapshot().services[0]).toBe(a);
    expect(triggers).toEqual(['service']); // the marker only

    server.dropWatches('reset'); // informer restart: a full relist
    await eventually(() => expect(source.status().services.lists).toBe(2));
    expect(source.snapshot().services.slice(0, 2)).toEqual([a, b]);
    expect(source.snapshot().services[0]).toBe(a);
    expect(source.snapshot().services[1]).toBe(b);
    expect(triggers).toEqual(['service']);
  });

  it('asks for bookmarks, so that a re-opened watch needs no relist after compaction', async () => {
    const { source } = makeSource();
    await source.start();
    await watching();
    await server.createNamespace('moves-the-resource-version');
    await eventually(() => expect(source.snapshot().namespaces.has('moves-the-resource-version')).toBe(true));
    expect(
      server.requests.some((r) => r.verb === 'watch' && r.query.includes('allowWatchBookmarks=true')),
    ).toBe(true);
    expect(Number(source.status().services.resourceVersion)).toBeLessThan(server.resourceVersion);

    server.injectBookmark();
    await eventually(() =>
      expect(Number(source.status().services.resourceVersion)).toBe(server.resourceVersion),
    );
    const lists = server.count('list', 'services');
    const watches = server.count('watch', 'services');
    server.compact();
    server.dropWatches('end'); // a clean server-side close: ListWatch re-opens from its resourceVersion
    await eventually(() => expect(server.count('watch', 'services')).toBeGreaterThan(watches));
    await server.createService(svc('after-bookmark'));
    await eventually(() => expect(names(source)).toEqual(['default/after-bookmark']));
    expect(server.count('list', 'services')).toBe(lists);
    expect(source.status().services.restarts).toBe(0);
  });

  it('relists on 410 Gone (re-opened watch from a compacted resourceVersion) and loses nothing', async () => {
    for (const name of ['keep', 'doomed', 'changing']) await server.createService(svc(name));
    const { source } = makeSource();
    await source.start();
    await watching();
    const lists = server.count('list', 'services');

    server.holdWatches(); // the client sees none of what follows through its watch
    await server.deleteService('default', 'doomed');
    await server.createService(svc('newcomer'));
    const changing = server.getService('default', 'changing') as Json;
    await server.updateService({ ...changing, spec: { ports: [{ name: 'p', port: 5432 }] } });
    server.compact();
    server.dropWatches('end'); // re-opened from the old resourceVersion -> ERROR 410 -> relist

    await eventually(() =>
      expect(names(source)).toEqual(['default/changing', 'default/keep', 'default/newcomer']),
    );
    expect(source.snapshot().services.find((s) => s.name === 'changing')?.ports[0]?.port).toBe(5432);
    expect(server.count('list', 'services')).toBeGreaterThan(lists);
    expect(source.status().services.restarts).toBe(0); // handled inside ListWatch, no informer restart

    server.releaseWatches();
    await server.createService(svc('later'));
    await eventually(() => expect(names(source)).toContain('default/later'));
  });

  it('relists when an open watch gets a 410 ERROR event', async () => {
    await server.createService(svc('a'));
    const { source } = makeSource();
    await source.start();
    await watching();
    server.holdWatches();
    await server.deleteService('default', 'a');
    await server.createService(svc('b'));
    server.expireWatches();
    await eventually(() => expect(names(source)).toEqual(['default/b']));
    server.releaseWatches();
  });

  it('reconnects after the watch connections are reset', async () => {
    await server.createService(svc('a'));
    const { source } = makeSource();
    await source.start();
    await watching();
    server.dropWatches('reset');
    await server.deleteService('default', 'a');
    await server.createService(svc('b'));
    await eventually(() => expect(names(source)).toEqual(['default/b']));
    await watching();
    expect(source.status().services.restarts).toBeGreaterThanOrEqual(1);
    expect(logs.some((l) => l.level === 'warn' && l.msg.includes('relisting'))).toBe(true);
    await server.createService(svc('c'));
    await eventually(() => expect(names(source)).toEqual(['default/b', 'default/c']));
  });

  it('comes back exactly right after an API server outage with changes during it', async () => {
    await server.createNamespace('team', { env: 'prod' });
    for (const name of ['stays', 'deleted-during-outage']) await server.createService(svc(name, 'team'));
    const { source, triggers } = makeSource();
    await source.start();
    expect(names(source)).toEqual(['team/deleted-during-outage', 'team/stays']);

    await server.goDown();
    await eventually(() => expect(source.status().services.restarts).toBeGreaterThanOrEqual(2));
    await server.deleteService('team', 'deleted-during-outage');
    await server.createService(svc('added-during-outage', 'team'));
    const team = server.getNamespace('team') as Json;
    await server.updateNamespace({
      ...team,
      metadata: { ...(team.metadata as Json), labels: { env: 'staging' } },
    });
    await server.createNamespace('new-ns');
    // Still down: the last known state is kept, not emptied.
    expect(names(source)).toEqual(['team/deleted-during-outage', 'team/stays']);
    expect(source.status().services.lastError).toMatch(/ECONNREFUSED|fetch failed|terminated|socket/i);
    triggers.length = 0;

    await server.comeBack();
    await eventually(() => {
      expect(names(source)).toEqual(['team/added-during-outage', 'team/stays']);
      expect(source.snapshot().namespaces.get('team')?.labels.env).toBe('staging');
      expect(source.snapshot().namespaces.has('new-ns')).toBe(true);
    });
    expect(names(source)).toEqual(serverNames(server));
    expect(triggers).toContain('service');
    expect(triggers).toContain('namespace');
    await eventually(() => expect(source.status().services.lastError).toBeUndefined());
    // And it keeps watching.
    await server.deleteService('team', 'stays');
    await eventually(() => expect(names(source)).toEqual(['team/added-during-outage']));
  });

  it('waits in start() for an API server that is not up yet', async () => {
    await server.createService(svc('a'));
    await server.goDown();
    const { source } = makeSource();
    let started = false;
    const starting = source.start().then(() => {
      started = true;
    });
    await eventually(() => expect(source.status().services.restarts).toBeGreaterThanOrEqual(1));
    expect(started).toBe(false);
    await server.comeBack();
    await starting;
    expect(names(source)).toEqual(['default/a']);
  });

  it('keeps retrying on 401 and rejects start() when stopped first', async () => {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    const user = kc.getCurrentUser();
    if (user) Object.assign(user, { token: 'wrong' });
    const { source } = makeSource({ kubeConfig: kc });
    const starting = source.start();
    await eventually(() => expect(source.status().services.restarts).toBeGreaterThanOrEqual(2));
    expect(source.status().services.lastError).toMatch(/401/);
    await source.stop();
    await expect(starting).rejects.toThrow(/stopped/);
  });

  it('works over HTTPS with the CA from the kubeconfig', async (context) => {
    const tls = selfSignedCertificate();
    if (!tls) {
      context.skip();
      return;
    }
    const secure = await FakeApiServer.start({ tls });
    try {
      await secure.createService(svc('tls'));
      const kc = new KubeConfig();
      kc.loadFromString(secure.kubeconfig());
      const { source } = makeSource({ kubeConfig: kc });
      await source.start();
      expect(names(source)).toEqual(['default/tls']);
      await secure.createService(svc('tls2'));
      await eventually(() => expect(names(source)).toEqual(['default/tls', 'default/tls2']));
      await source.stop();
    } finally {
      await secure.close();
    }
  });
});
