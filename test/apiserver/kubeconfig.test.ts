// The kubeconfig, loaded by client-node's KubeConfig and used for real requests.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import { kubeconfigYaml } from './kubeconfig.ts';
import { selfSignedCertificate } from './tls.ts';
import { svc } from './wire.ts';

describe('kubeconfig', () => {
  let server: FakeApiServer;

  beforeEach(async () => {
    server = await FakeApiServer.start({ historyLimit: 50 });
  });

  afterEach(async () => {
    await server.close();
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

  it('a plain http:// server gets insecure-skip-tls-verify (client-node demands it); no token, no user token', () => {
    const kc = new KubeConfig();
    kc.loadFromString(kubeconfigYaml({ server: 'http://127.0.0.1:1', name: 'plain' }));
    expect(kc.getCurrentCluster()).toMatchObject({
      name: 'plain',
      server: 'http://127.0.0.1:1',
      skipTLSVerify: true,
    });
    expect(kc.getCurrentUser()?.token).toBeUndefined();
  });
});
