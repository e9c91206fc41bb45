// The stand-in as the components use it: client-node's CoreV1Api and AdmissionregistrationV1Api
// against Secrets and MutatingWebhookConfigurations, with direct writes in between.

import {
  AdmissionregistrationV1Api,
  ApiException,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import type { Json } from './resources.ts';
import { api, b64, patch, tlsSecret, webhookConfiguration } from './wire.ts';

const MWC = '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations';

describe('the API server stand-in through client-node', () => {
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
});
