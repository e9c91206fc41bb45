// Per-kind defaults and validation: over HTTP for Secrets, directly for the rest.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaulted, validate } from './defaults.ts';
import { FakeApiServer } from './fake-apiserver.ts';
import type { Json } from './resources.ts';
import type { StatusError } from './status.ts';
import { api, b64, tlsSecret, webhookConfiguration } from './wire.ts';

const SECRETS = '/api/v1/namespaces/slipstream-system/secrets';

describe('Secret defaults and validation', () => {
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
});

describe('defaults and validation of the other kinds', () => {
  const invalid = (resource: Parameters<typeof validate>[0], object: Json): string => {
    try {
      validate(resource, defaulted(resource, object), undefined);
      return 'valid';
    } catch (error) {
      return `${(error as StatusError).code} ${(error as StatusError).message}`;
    }
  };

  it('Namespaces get their name label and the kubernetes finalizer', () => {
    expect(defaulted('namespaces', { metadata: { name: 'shop', labels: { a: 'b' } } })).toEqual({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: 'shop', labels: { a: 'b', 'kubernetes.io/metadata.name': 'shop' } },
      spec: { finalizers: ['kubernetes'] },
    });
  });

  it('Services: type, protocol, targetPort, session affinity; ports checked', () => {
    const s = defaulted('services', { metadata: { name: 'a' }, spec: { ports: [{ port: 80 }] } });
    expect(s.spec).toEqual({
      type: 'ClusterIP',
      sessionAffinity: 'None',
      internalTrafficPolicy: 'Cluster',
      ports: [{ port: 80, protocol: 'TCP', targetPort: 80 }],
    });
    const svc = (spec: Json) => ({ metadata: { name: 'a' }, spec });
    expect(invalid('services', svc({ ports: [{ port: 0 }] }))).toMatch(
      /^422 .*spec\.ports\[0\]\.port: must be between 1 and 65535/,
    );
    expect(invalid('services', svc({ ports: [{ port: 1, protocol: 'ICMP' }] }))).toMatch(
      /spec\.ports\[0\]\.protocol: Unsupported value/,
    );
    expect(
      invalid(
        'services',
        svc({
          ports: [
            { port: 1, name: 'a' },
            { port: 2, name: 'a' },
          ],
        }),
      ),
    ).toMatch(/Duplicate value: "a"/);
    expect(invalid('services', svc({ ports: [] }))).toMatch(/spec\.ports: Required value/);
    expect(invalid('services', svc({ type: 'ExternalName' }))).toMatch(/spec\.externalName: Required value/);
    expect(invalid('services', svc({ type: 'ExternalName', externalName: 'db.example.com' }))).toBe('valid');
    expect(invalid('services', svc({ clusterIP: 'None' }))).toBe('valid');
  });

  it('MutatingWebhookConfigurations: webhook defaults; names, client config and review versions checked', () => {
    const config = defaulted('mutatingwebhookconfigurations', webhookConfiguration('x'));
    expect((config.webhooks as Json[])[0]).toMatchObject({
      failurePolicy: 'Fail',
      matchPolicy: 'Equivalent',
      namespaceSelector: {},
      objectSelector: {},
      timeoutSeconds: 10,
      reinvocationPolicy: 'Never',
      clientConfig: { service: { port: 443 } },
    });
    const hook = (extra: Json) => ({
      metadata: { name: 'x' },
      webhooks: [{ ...(webhookConfiguration('x').webhooks as Json[])[0], ...extra }],
    });
    expect(invalid('mutatingwebhookconfigurations', hook({ name: 'nodots' }))).toMatch(
      /webhooks\[0\]\.name: Invalid value/,
    );
    expect(
      invalid(
        'mutatingwebhookconfigurations',
        hook({ clientConfig: { url: 'https://x', service: { name: 's', namespace: 'n' } } }),
      ),
    ).toMatch(/exactly one of url or service/);
    expect(invalid('mutatingwebhookconfigurations', hook({ admissionReviewVersions: [] }))).toMatch(
      /admissionReviewVersions: Required value/,
    );
    expect(invalid('mutatingwebhookconfigurations', hook({ sideEffects: 'Some' }))).toMatch(
      /sideEffects: Unsupported value/,
    );
    expect(
      invalid(
        'mutatingwebhookconfigurations',
        hook({ clientConfig: { url: 'https://x', caBundle: b64('ca') } }),
      ),
    ).toBe('valid');
    expect(
      invalid('mutatingwebhookconfigurations', hook({ clientConfig: { url: 'https://x', caBundle: 'no!' } })),
    ).toMatch(/^400 .*illegal base64/);
  });
});
