// Every object of every shipped rendering is valid against the Kubernetes API schemas (and
// cert-manager's CRD schemas), carries no field the API does not know, and lands where it should.

import { expect, it, describe as suite } from 'vitest';
import {
  describe,
  type KubeObject,
  NAMESPACE,
  one,
  render,
  renderComposed,
  SCHEMAS,
  schemaErrors,
  TARGETS,
  unknownFieldErrors,
} from './manifests.ts';

const CLUSTER_SCOPED = new Set([
  'Namespace',
  'ClusterRole',
  'ClusterRoleBinding',
  'MutatingWebhookConfiguration',
]);

const renderings: [string, () => KubeObject[]][] = [
  ['deploy (base)', () => render(TARGETS.base)],
  ['deploy/overlays/jaeger', () => render(TARGETS.jaeger)],
  ['deploy/overlays/cert-manager', () => render(TARGETS.certManager)],
  ['deploy/overlays/prometheus', () => render(TARGETS.prometheus)],
  [
    'base + every component',
    () =>
      renderComposed({
        resources: ['deploy/base'],
        components: [
          'deploy/components/cert-manager',
          'deploy/components/jaeger',
          'deploy/components/prometheus',
        ],
      }),
  ],
];

suite.each(renderings)('%s', (_name, get) => {
  it('renders objects', () => {
    expect(get().length).toBeGreaterThan(10);
  });

  it('is valid against the API schemas (kubernetes-models validate())', () => {
    expect(get().flatMap(schemaErrors)).toEqual([]);
  });

  it('has no field the API does not know', () => {
    expect(unknownFieldErrors(get())).toEqual([]);
  });

  it('has no duplicate objects', () => {
    const ids = get().map(describe);
    expect(ids.filter((id, i) => ids.indexOf(id) !== i)).toEqual([]);
  });

  it(`puts every namespaced object in ${NAMESPACE} and no namespace on cluster-scoped ones`, () => {
    for (const object of get()) {
      if (CLUSTER_SCOPED.has(object.kind))
        expect(object.metadata.namespace, describe(object)).toBeUndefined();
      else expect(object.metadata.namespace, describe(object)).toBe(NAMESPACE);
    }
  });
});

it('the base is what `kubectl kustomize deploy/base` renders', () => {
  expect(render(TARGETS.base)).toEqual(render('deploy/base'));
});

it('every registered kind is one the manifests use (the registry holds no dead entries)', () => {
  const used = new Set(renderings.flatMap(([, get]) => get().map((o) => `${o.apiVersion}/${o.kind}`)));
  expect(Object.keys(SCHEMAS).filter((k) => !used.has(k))).toEqual([]);
});

suite('the validators reject broken manifests', () => {
  it('wrong types and enum values fail validate()', () => {
    const objects = render(TARGETS.certManager);
    one<{ spec: { replicas: unknown } }>(objects, 'Deployment', 'slipstream-webhook').spec.replicas = 'two';
    one<{ webhooks: { failurePolicy: string }[] }>(objects, 'MutatingWebhookConfiguration', 'slipstream')
      .webhooks[0]!.failurePolicy = 'Sometimes';
    one<{ spec: { dnsNames: unknown } }>(objects, 'Certificate', 'slipstream-webhook').spec.dnsNames = 'x';
    const errors = objects.flatMap(schemaErrors);
    expect(errors).toHaveLength(3);
    expect(errors.join('\n')).toMatch(/replicas must be integer/);
    expect(errors.join('\n')).toMatch(/failurePolicy must be equal to one of the allowed values/);
    expect(errors.join('\n')).toMatch(/dnsNames must be array/);
  });

  it('misspelt fields fail the unknown-field check, at any depth and in CRDs', () => {
    const objects = render(TARGETS.certManager);
    const daemon = one<{
      spec: { template: { spec: { containers: { securityContext: Record<string, unknown> }[] } } };
    }>(objects, 'DaemonSet', 'slipstream-daemon');
    daemon.spec.template.spec.containers[0]!.securityContext.readOnlyRootFileSystem = true;
    one<{ spec: Record<string, unknown> }>(objects, 'Certificate', 'slipstream-webhook').spec.dnsName = ['x'];
    const errors = unknownFieldErrors(objects);
    expect(errors).toHaveLength(2);
    expect(errors.join('\n')).toMatch(/'"readOnlyRootFileSystem"' does not exist in type 'ISecurityContext'/);
    expect(errors.join('\n')).toMatch(/'"dnsName"' does not exist in type 'ICertificateSpec'/);
  });

  it('an unregistered kind is reported, not skipped', () => {
    const stray: KubeObject = { apiVersion: 'example.dev/v1', kind: 'Widget', metadata: { name: 'w' } };
    expect(schemaErrors(stray)).toEqual([expect.stringMatching(/no schema registered/)]);
    expect(unknownFieldErrors([stray])).toEqual([expect.stringMatching(/no schema registered/)]);
  });
});
