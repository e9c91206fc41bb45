// The overlays change what they say they change and nothing else: Jaeger adds a tracing backend and
// switches the components' OTLP export on; cert-manager takes over the webhook's TLS.

import type { ICertificate } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate';
import type { IIssuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer';
import type { IMutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IService } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { selectorMatches } from '../lib/label-selector.ts';
import {
  has,
  describe as id,
  type KubeObject,
  NAMESPACE,
  one,
  render,
  renderComposed,
  TARGETS,
} from './manifests.ts';
import { container, daemonSet, envOf, flag, POLICY_PATH, podSpec, webhookDeployment } from './workloads.ts';

const base = (): KubeObject[] => render(TARGETS.base);

/** Objects of `overlay` that differ from the base, and base objects the overlay dropped. */
function changes(overlay: KubeObject[]): { added: string[]; changed: string[]; removed: string[] } {
  const before = new Map(base().map((o) => [id(o), o]));
  const after = new Map(overlay.map((o) => [id(o), o]));
  return {
    added: [...after.keys()].filter((k) => !before.has(k)).sort(),
    changed: [...after.keys()]
      .filter((k) => before.has(k) && JSON.stringify(before.get(k)) !== JSON.stringify(after.get(k)))
      .sort(),
    removed: [...before.keys()].filter((k) => !after.has(k)).sort(),
  };
}

/** A copy without the container env lists, to compare workloads apart from their environment. */
function withoutEnv<T extends KubeObject>(workload: T): T {
  const copy = structuredClone(workload) as T & {
    spec: { template: { spec: { containers: { env?: unknown }[] } } };
  };
  for (const c of copy.spec.template.spec.containers) delete c.env;
  return copy;
}

describe('deploy/overlays/jaeger', () => {
  const jaeger = (): KubeObject[] => render(TARGETS.jaeger);
  const ENDPOINT = 'http://jaeger.slipstream-system:4318';

  it('adds only a Jaeger Deployment and Service, and changes only the two workloads', () => {
    expect(changes(jaeger())).toEqual({
      added: [`apps/v1 Deployment ${NAMESPACE}/jaeger`, `v1 Service ${NAMESPACE}/jaeger`],
      changed: [
        `apps/v1 DaemonSet ${NAMESPACE}/slipstream-daemon`,
        `apps/v1 Deployment ${NAMESPACE}/slipstream-webhook`,
      ],
      removed: [],
    });
    // ...and of those, only the environment.
    expect(withoutEnv(webhookDeployment(jaeger()) as KubeObject)).toEqual(
      withoutEnv(webhookDeployment(base()) as KubeObject),
    );
    expect(withoutEnv(daemonSet(jaeger()) as KubeObject)).toEqual(
      withoutEnv(daemonSet(base()) as KubeObject),
    );
  });

  it('runs Jaeger v2 all-in-one pinned to a concrete version', () => {
    const deployment = one<IDeployment>(jaeger(), 'Deployment', 'jaeger');
    expect(container(deployment, 'jaeger').image).toMatch(/^jaegertracing\/jaeger:2\.\d+\.\d+$/);
    expect(deployment.spec?.replicas).toBe(1);
  });

  it('exposes OTLP gRPC 4317, OTLP HTTP 4318 and the UI 16686 through the jaeger Service', () => {
    const deployment = one<IDeployment>(jaeger(), 'Deployment', 'jaeger');
    const ports = new Map(container(deployment, 'jaeger').ports?.map((p) => [p.name, p.containerPort]));
    expect(ports.get('otlp-grpc')).toBe(4317);
    expect(ports.get('otlp-http')).toBe(4318);
    expect(ports.get('ui')).toBe(16686);
    const svc = one<IService>(jaeger(), 'Service', 'jaeger');
    expect(svc.spec?.ports?.map((p) => [p.port, p.targetPort])).toEqual([
      [4317, 'otlp-grpc'],
      [4318, 'otlp-http'],
      [16686, 'ui'],
    ]);
    expect(
      selectorMatches({ matchLabels: svc.spec?.selector }, deployment.spec!.template.metadata!.labels!),
    ).toBe(true);
    expect(
      selectorMatches(
        { matchLabels: svc.spec?.selector },
        webhookDeployment(jaeger()).spec!.template.metadata!.labels!,
      ),
    ).toBe(false);
  });

  it('runs Jaeger non-root with a read-only root filesystem and no capabilities', () => {
    const deployment = one<IDeployment>(jaeger(), 'Deployment', 'jaeger');
    const c = container(deployment, 'jaeger').securityContext;
    expect(podSpec(deployment).securityContext?.runAsNonRoot).toBe(true);
    expect(c?.readOnlyRootFilesystem).toBe(true);
    expect(c?.allowPrivilegeEscalation).toBe(false);
    expect(c?.capabilities?.drop).toEqual(['ALL']);
    expect(podSpec(deployment).automountServiceAccountToken).toBe(false);
  });

  it('points both components at the jaeger Service over OTLP/HTTP, keeping their service names', () => {
    const objects = jaeger();
    const svc = one<IService>(objects, 'Service', 'jaeger');
    for (const [name, c] of [
      ['webhook', container(webhookDeployment(objects), 'webhook')],
      ['daemon', container(daemonSet(objects), 'daemon')],
    ] as const) {
      const env = envOf(c);
      expect(env.get('OTEL_TRACES_EXPORTER'), name).toBe('otlp');
      expect(env.get('OTEL_EXPORTER_OTLP_ENDPOINT'), name).toBe(ENDPOINT);
      expect(env.get('OTEL_SERVICE_NAME'), name).toBe(`slipstream-${name}`);
      expect(env.get('OTEL_METRICS_EXPORTER'), name).toBe('none');
      expect(env.get('OTEL_LOGS_EXPORTER'), name).toBe('none');
    }
    const url = new URL(ENDPOINT);
    expect(url.hostname).toBe(`${svc.metadata?.name}.${svc.metadata?.namespace}`);
    expect(svc.spec?.ports?.find((p) => p.port === Number(url.port))?.name).toBe('otlp-http');
    // The daemon is in the host network: only this DNS policy lets it resolve the Service name.
    expect(podSpec(daemonSet(objects)).dnsPolicy).toBe('ClusterFirstWithHostNet');
  });
});

describe('deploy/overlays/cert-manager', () => {
  const cm = (): KubeObject[] => render(TARGETS.certManager);
  const webhook = () => webhookDeployment(cm());
  const args = () => container(webhook(), 'webhook').args;

  it('adds the issuers and certificates, drops the webhook RBAC, and changes only the webhook side', () => {
    expect(changes(cm())).toEqual({
      added: [
        `cert-manager.io/v1 Certificate ${NAMESPACE}/slipstream-webhook`,
        `cert-manager.io/v1 Certificate ${NAMESPACE}/slipstream-webhook-ca`,
        `cert-manager.io/v1 Issuer ${NAMESPACE}/slipstream-ca`,
        `cert-manager.io/v1 Issuer ${NAMESPACE}/slipstream-selfsigned`,
      ],
      changed: [
        'admissionregistration.k8s.io/v1 MutatingWebhookConfiguration slipstream',
        `apps/v1 Deployment ${NAMESPACE}/slipstream-webhook`,
      ],
      removed: [
        'rbac.authorization.k8s.io/v1 ClusterRole slipstream-webhook',
        'rbac.authorization.k8s.io/v1 ClusterRoleBinding slipstream-webhook',
        `rbac.authorization.k8s.io/v1 Role ${NAMESPACE}/slipstream-webhook`,
        `rbac.authorization.k8s.io/v1 RoleBinding ${NAMESPACE}/slipstream-webhook`,
      ],
    });
  });

  it('serves the cert-manager Secret from files: --tls-cert/--tls-key instead of --tls-secret', () => {
    expect(flag(args(), '--tls-secret')).toBeUndefined();
    expect(flag(args(), '--webhook-config')).toBeUndefined();
    expect(flag(args(), '--listen')).toBe('0.0.0.0:8443');
    expect(flag(args(), '--policy')).toBe(POLICY_PATH);
    const certificate = one<ICertificate>(cm(), 'Certificate', 'slipstream-webhook');
    const pod = podSpec(webhook());
    const volume = pod.volumes?.find((v) => v.secret?.secretName === certificate.spec?.secretName);
    expect(certificate.spec?.secretName).toBe('slipstream-webhook-tls');
    const mount = container(webhook(), 'webhook').volumeMounts?.find((m) => m.name === volume?.name);
    expect(mount?.readOnly).toBe(true);
    expect(flag(args(), '--tls-cert')).toBe(`${mount?.mountPath}/tls.crt`);
    expect(flag(args(), '--tls-key')).toBe(`${mount?.mountPath}/tls.key`);
    // Readable by the webhook's group (fsGroup), not by everyone.
    expect(volume?.secret?.defaultMode).toBe(0o440);
    expect(pod.securityContext?.fsGroup).toBe(pod.securityContext?.runAsGroup);
  });

  it('keeps the webhook locked down and gives it no API token (it has no RBAC left)', () => {
    const before = container(webhookDeployment(base()), 'webhook');
    const after = container(webhook(), 'webhook');
    expect(after.securityContext).toEqual(before.securityContext);
    expect(after.image).toBe(before.image);
    expect(podSpec(webhook()).automountServiceAccountToken).toBe(false);
    const grants = cm()
      .filter((o) => o.kind.endsWith('Binding'))
      .flatMap((o) => (o as { subjects?: { name: string }[] }).subjects ?? []);
    expect(grants.map((s) => s.name)).not.toContain('slipstream-webhook');
  });

  it('has cainjector fill caBundle from the serving Certificate', () => {
    const mwc = one<IMutatingWebhookConfiguration>(cm(), 'MutatingWebhookConfiguration', 'slipstream');
    const certificate = one<ICertificate>(cm(), 'Certificate', 'slipstream-webhook');
    expect(mwc.metadata?.annotations?.['cert-manager.io/inject-ca-from']).toBe(
      `${certificate.metadata?.namespace}/${certificate.metadata?.name}`,
    );
    expect(mwc.webhooks?.[0]?.clientConfig.caBundle).toBeUndefined();
  });

  it('issues the serving certificate for the name the API server dials, from a CA rooted in a self-signed Issuer', () => {
    const objects = cm();
    const mwc = one<IMutatingWebhookConfiguration>(objects, 'MutatingWebhookConfiguration', 'slipstream');
    const service = mwc.webhooks?.[0]?.clientConfig.service;
    const certificate = one<ICertificate>(objects, 'Certificate', 'slipstream-webhook');
    expect(certificate.spec?.dnsNames).toContain(`${service?.name}.${service?.namespace}.svc`);
    expect(certificate.spec?.isCA).not.toBe(true);
    // Follow the issuer chain: serving cert <- CA Issuer <- CA Certificate <- self-signed Issuer.
    const issuer = one<IIssuer>(objects, 'Issuer', certificate.spec!.issuerRef.name);
    const caSecret = issuer.spec?.ca?.secretName;
    const ca = objects.find(
      (o): o is KubeObject & ICertificate =>
        o.kind === 'Certificate' && (o as ICertificate).spec?.secretName === caSecret,
    );
    expect(ca?.spec?.isCA).toBe(true);
    const root = one<IIssuer>(objects, 'Issuer', ca!.spec!.issuerRef.name);
    expect(root.spec?.selfSigned).toEqual({});
  });

  it('leaves the daemon exactly as in the base', () => {
    expect(daemonSet(cm())).toEqual(daemonSet(base()));
  });
});

describe('both components together', () => {
  it('compose: cert-manager TLS and Jaeger tracing in one install', () => {
    const objects = renderComposed({
      resources: ['deploy/base'],
      components: ['deploy/components/cert-manager', 'deploy/components/jaeger'],
    });
    const c = container(webhookDeployment(objects), 'webhook');
    expect(flag(c.args, '--tls-cert')).toBeDefined();
    expect(envOf(c).get('OTEL_TRACES_EXPORTER')).toBe('otlp');
    expect(has(objects, 'Deployment', 'jaeger')).toBe(true);
    expect(has(objects, 'Role', 'slipstream-webhook')).toBe(false);
  });
});
