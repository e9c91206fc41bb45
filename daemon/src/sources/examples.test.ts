// deploy/examples: the manifests load through the embedded-mode source, every comment's claim
// matches decide() with the default policy, and the fake API server accepts every object.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { decide } from '@slipstream/shared/core/decide';
import { formatOffload } from '@slipstream/shared/core/hints';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { FakeApiServer, type Json } from '../../../test/apiserver/fake-apiserver.ts';
import { FileSource } from './files.ts';

const EXAMPLES = fileURLToPath(new URL('../../../deploy/examples/', import.meta.url));

/** What each Service's comment says: offloaded ports, each with its threshold, and the deciding rules. */
const EXPECTED: Record<string, { offload: string; rule: RegExp }> = {
  'shop/postgres': { offload: '5432/TCP=20', rule: /datastore-port-name/ },
  'shop/redis': { offload: '6379/TCP=20', rule: /datastore-port-name/ },
  'platform/dns': { offload: 'none', rule: /dns-port-name/ },
  'shop/checkout': { offload: '50051/TCP=20', rule: /grpc-http2-app-protocol/ },
  'shop/catalog': { offload: '8080/TCP=100', rule: /http-port-name/ },
  'media/edge': { offload: '443/TCP=100,443/UDP=20', rule: /quic.*http-port-name|http-port-name.*quic/ },
  'shop/search': { offload: '9200/TCP=200', rule: /http-port-name/ },
  'shop/exports': { offload: 'none', rule: /user:acceleration/ },
  'shop/postgres-headless': { offload: 'none', rule: /no-cluster-ip/ },
  'shop/payments': { offload: 'none', rule: /no-cluster-ip/ },
  'media/iperf3': { offload: '5201/TCP=20,5201/UDP=20', rule: /iperf3/ },
  'default/whoami': { offload: '80/TCP=100', rule: /http-port-name/ },
  'legacy/ledger': { offload: 'none', rule: /namespace:opt-out/ },
};

describe('deploy/examples', () => {
  let source: FileSource;

  beforeAll(async () => {
    source = new FileSource({ dir: EXAMPLES, rescanIntervalMs: 0, log: silentLogger });
    await source.start();
  });

  afterAll(async () => {
    await source.stop();
  });

  it('load completely through the embedded-mode source', () => {
    const { services, namespaces, rejected } = source.snapshot();
    expect(rejected).toEqual([]);
    expect(source.fileErrors()).toEqual([]);
    expect(services.map((s) => `${s.namespace}/${s.name}`).sort()).toEqual(Object.keys(EXPECTED).sort());
    expect([...namespaces.keys()].sort()).toEqual(['default', 'legacy', 'media', 'platform', 'shop']);
    expect(namespaces.get('legacy')?.labels['slipstream.dev/acceleration']).toBe('disabled');
    const catalog = services.find((s) => s.name === 'catalog');
    expect(catalog?.clusterIPs).toEqual(['10.96.10.30', 'fd00:10:96::1e']);
    for (const service of services) {
      for (const ip of service.clusterIPs)
        expect(ip).toMatch(/^(10\.96\.\d+\.\d+|fd00:10:96::[0-9a-f]{1,4})$/);
    }
  });

  it('decide what their comments say', () => {
    const policy = loadDefaultPolicy();
    const { services, namespaces } = source.snapshot();
    for (const service of services) {
      const key = `${service.namespace}/${service.name}`;
      const expected = EXPECTED[key];
      const decision = decide(service, policy, namespaces.get(service.namespace));
      expect({ key, offload: formatOffload(decision.offload) }).toEqual({ key, offload: expected?.offload });
      if (expected?.rule) expect(decision.rule, key).toMatch(expected.rule);
    }
  });

  it('are accepted by the (fake) API server', async () => {
    const server = await FakeApiServer.start();
    try {
      const objects: Json[] = [];
      for (const file of ['namespaces.yaml', 'services.yaml']) {
        for (const document of parseAllDocuments(readFileSync(`${EXAMPLES}${file}`, 'utf8'))) {
          objects.push(document.toJS() as Json);
        }
      }
      for (const object of objects.filter((o) => o.kind === 'Namespace')) {
        const metadata = object.metadata as { name: string; labels?: Record<string, string> };
        await server.createNamespace(metadata.name, metadata.labels);
      }
      for (const object of objects.filter((o) => o.kind === 'Service')) await server.createService(object);
      expect(server.listServices()).toHaveLength(Object.keys(EXPECTED).length);
    } finally {
      await server.close();
    }
  });
});
