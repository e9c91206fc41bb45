// The Mirror on its own against the API server stand-in (real client-node ListWatch and CoreV1Api):
// what its list does that a KubernetesSource test cannot reach directly. The rest of its
// behaviour (watch events, relists, outages) is covered through KubernetesSource in
// kubernetes.test.ts.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { loadKubeConfig, requestOptions } from '@slipstream/shared/adapters/kube';
import { memoryLogger } from '@slipstream/shared/adapters/log';
import { readService, type Service, serviceKey } from '@slipstream/shared/core/service';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeApiServer } from '../../../test/apiserver/fake-apiserver.ts';
import { Mirror } from './mirror.ts';

const eventually = (fn: () => void | Promise<void>) => vi.waitFor(fn, { timeout: 20_000, interval: 10 });

describe('Mirror', () => {
  let server: FakeApiServer;
  let dir: string;
  let mirror: Mirror<Service> | undefined;
  let logger: ReturnType<typeof memoryLogger>;
  let changes: number;

  beforeEach(async () => {
    server = await FakeApiServer.start();
    dir = mkdtempSync(join(tmpdir(), 'slipstream-mirror-'));
    logger = memoryLogger();
    changes = 0;
    for (const name of ['a', 'b', 'c', 'd', 'e']) {
      await server.createService({
        metadata: { name, namespace: 'default' },
        spec: { ports: [{ port: 80 }] },
      });
    }
  });

  afterEach(async () => {
    await mirror?.stop();
    mirror = undefined;
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(listTimeoutMs = 10_000): Promise<Mirror<Service>> {
    const kubeConfig = loadKubeConfig(await server.writeKubeconfig(join(dir, 'kubeconfig')));
    const api = kubeConfig.makeApiClient(CoreV1Api);
    mirror = new Mirror<Service>({
      resource: 'services',
      path: '/api/v1/services',
      kubeConfig,
      list: (request, control) => api.listServiceForAllNamespaces(request, requestOptions(control)),
      read: readService,
      key: (entry) => serviceKey({ namespace: entry.metadata.namespace ?? '', name: entry.metadata.name }),
      changed: () => changes++,
      pageSize: 2,
      listTimeoutMs,
      backoff: { initialMs: 20, maxMs: 200, resetAfterMs: 60_000, jitter: false },
      log: logger,
    });
    mirror.start();
    return mirror;
  }

  it('restarts a paged list whose continue token expired, and ends with every object', async () => {
    let compacted = false;
    server.beforeHandle = (record) => {
      if (record.verb === 'list' && record.query.includes('continue=') && !compacted) {
        compacted = true;
        server.compact(); // the list's snapshot is gone: this page gets 410 Expired
      }
    };
    const m = await start();
    await m.syncedPromise;
    expect([...m.store.keys()].sort()).toEqual([
      'default/a',
      'default/b',
      'default/c',
      'default/d',
      'default/e',
    ]);
    expect(compacted).toBe(true);
    expect(m.status()).toMatchObject({ synced: true, restarts: 0, lists: 1, objects: 5 });
    expect(logger.lines.map((l) => l.msg)).toContain('services: continue token expired; restarting the list');
    // 3 pages, one refused, then the 3 pages again.
    expect(server.count('list', 'services')).toBe(5);
  });

  it('times a hung list page out, and starts over with a fresh informer', async () => {
    let held = 0;
    server.beforeHandle = async (record) => {
      if (record.verb === 'list' && held++ === 0) await new Promise((r) => setTimeout(r, 1500));
    };
    const m = await start(200);
    await m.syncedPromise;
    expect(m.store.size).toBe(5);
    const status = m.status();
    expect(status.restarts).toBeGreaterThanOrEqual(1);
    expect(status.lastError).toBeUndefined(); // cleared by the list that succeeded
    const warning = logger.lines.find((l) => l.msg.startsWith('services: list/watch failed; relisting in'));
    expect(String(warning?.fields?.error)).toMatch(/TimeoutError|abort/i);
    expect(logger.lines.map((l) => l.msg)).toContain('services: listed again after an error');
    expect(changes).toBe(1); // one replace with all five, not one call per object
  });

  it('deletes what a relist no longer has', async () => {
    const m = await start();
    await m.syncedPromise;
    await eventually(() => expect(server.openWatches('services')).toBe(1));
    await server.goDown();
    await server.deleteService('default', 'c'); // while it is down: no watch event can carry it
    await server.comeBack();
    await eventually(() => expect(m.store.has('default/c')).toBe(false));
    expect(m.store.size).toBe(4);
  });
});
