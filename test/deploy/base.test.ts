// The base install (`kubectl kustomize deploy/`): security settings, the webhook configuration, RBAC,
// the policy ConfigMap, images and the wiring between them.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NAMESPACE_OPT_OUT_LABEL, NAMESPACE_OPT_OUT_VALUE } from '@slipstream/shared/core/contract';
import { parsePolicy } from '@slipstream/shared/core/policy';
import type { IMutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration';
import type { IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import type { IClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import type { IClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import type { IRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import type { IRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import type { IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { INamespace } from 'kubernetes-models/v1/Namespace';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import type { IService } from 'kubernetes-models/v1/Service';
import { describe, expect, it } from 'vitest';
import { parseDaemonArgs } from '../../daemon/src/cli.ts';
import { DAEMON_NAMESPACE, DAEMON_SELECTOR, STATUS_PORT } from '../../daemon/src/daemon-pods.ts';
import { parseLabelSelector, selectorMatches } from '../lib/label-selector.ts';
import { has, type KubeObject, NAMESPACE, one, REPO, render, TARGETS } from './manifests.ts';
import {
  container,
  daemonSet,
  envOf,
  flag,
  IMAGE,
  POLICY_MOUNT,
  POLICY_PATH,
  podSpec,
  webhookDeployment,
} from './workloads.ts';

const base = (): KubeObject[] => render(TARGETS.base);
const webhook = () => webhookDeployment(base());
const webhookPod = (): IPodSpec => podSpec(webhook());
const webhookContainer = (): IContainer => container(webhook(), 'webhook');
const daemon = () => daemonSet(base());
const daemonPod = (): IPodSpec => podSpec(daemon());
const daemonContainer = (): IContainer => container(daemon(), 'daemon');
const mwc = (): IMutatingWebhookConfiguration =>
  one<IMutatingWebhookConfiguration>(base(), 'MutatingWebhookConfiguration', 'slipstream');
const theWebhook = () => {
  const hooks = mwc().webhooks ?? [];
  expect(hooks).toHaveLength(1);
  return hooks[0]!;
};

describe('namespace', () => {
  it(`creates ${NAMESPACE}, admitting the daemon's privileges under Pod Security Admission`, () => {
    const ns = one<INamespace>(base(), 'Namespace', NAMESPACE);
    expect(ns.metadata?.labels?.['pod-security.kubernetes.io/enforce']).toBe('privileged');
  });
});

describe('webhook Deployment', () => {
  it('runs 2 replicas spread across nodes', () => {
    expect(webhook().spec?.replicas).toBe(2);
    const spread = webhookPod().topologySpreadConstraints ?? [];
    const byHost = spread.find((t) => t.topologyKey === 'kubernetes.io/hostname');
    expect(byHost?.maxSkew).toBe(1);
    expect(byHost?.labelSelector?.matchLabels).toEqual(webhook().spec?.selector.matchLabels);
    const anti =
      webhookPod().affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? [];
    expect(anti.map((a) => a.podAffinityTerm.topologyKey)).toContain('kubernetes.io/hostname');
  });

  it('has a PodDisruptionBudget over its pods that always leaves one serving', () => {
    const pdb = one<IPodDisruptionBudget>(base(), 'PodDisruptionBudget', 'slipstream-webhook');
    expect(pdb.spec?.minAvailable).toBe(1);
    expect(pdb.spec?.minAvailable).toBeLessThan(webhook().spec?.replicas ?? 0);
    expect(selectorMatches(pdb.spec!.selector!, webhook().spec!.template.metadata!.labels!)).toBe(true);
    expect(selectorMatches(pdb.spec!.selector!, daemon().spec!.template.metadata!.labels!)).toBe(false);
  });

  it('runs non-root with a read-only root filesystem, no capabilities, RuntimeDefault seccomp', () => {
    const pod = webhookPod().securityContext;
    const c = webhookContainer().securityContext;
    expect(pod?.runAsNonRoot).toBe(true);
    expect(c?.runAsNonRoot).toBe(true);
    expect(c?.runAsUser ?? pod?.runAsUser).toBe(65532);
    expect(c?.readOnlyRootFilesystem).toBe(true);
    expect(c?.allowPrivilegeEscalation).toBe(false);
    expect(c?.privileged).not.toBe(true);
    expect(c?.capabilities?.drop).toEqual(['ALL']);
    expect(c?.capabilities?.add).toBeUndefined();
    expect(pod?.seccompProfile?.type).toBe('RuntimeDefault');
    expect(c?.seccompProfile?.type ?? pod?.seccompProfile?.type).toBe('RuntimeDefault');
    expect(webhookPod().hostNetwork).not.toBe(true);
  });

  it('probes /healthz and /readyz over HTTPS on the port it listens on', () => {
    const c = webhookContainer();
    const port = c.ports?.find((p) => p.name === 'https');
    expect(port?.containerPort).toBe(8443);
    expect(flag(c.args, '--listen')).toBe(`0.0.0.0:${port?.containerPort}`);
    expect(c.livenessProbe?.httpGet).toMatchObject({ path: '/healthz', port: 'https', scheme: 'HTTPS' });
    expect(c.readinessProbe?.httpGet).toMatchObject({ path: '/readyz', port: 'https', scheme: 'HTTPS' });
    expect(c.startupProbe?.httpGet).toMatchObject({ path: '/healthz', port: 'https', scheme: 'HTTPS' });
  });

  it('requests CPU and memory and caps memory', () => {
    const r = webhookContainer().resources;
    expect(r?.requests?.cpu).toBeDefined();
    expect(r?.requests?.memory).toBeDefined();
    expect(r?.limits?.memory).toBeDefined();
  });

  it('bootstraps its own TLS into the Secret and webhook configuration its RBAC names, mounting none', () => {
    const c = webhookContainer();
    expect(flag(c.args, '--tls-secret')).toBe(`${NAMESPACE}/slipstream-webhook-tls`);
    expect(flag(c.args, '--webhook-config')).toBe('slipstream');
    expect(flag(c.args, '--tls-cert')).toBeUndefined();
    expect(flag(c.args, '--tls-key')).toBeUndefined();
    expect(webhookPod().volumes?.some((v) => v.secret)).toBe(false);
    expect(has(base(), 'MutatingWebhookConfiguration', 'slipstream')).toBe(true);
  });

  it('is reached through a Service on 443 that targets its HTTPS port', () => {
    const svc = one<IService>(base(), 'Service', 'slipstream-webhook');
    expect(svc.spec?.ports).toEqual([{ name: 'https', port: 443, targetPort: 'https', protocol: 'TCP' }]);
    expect(
      selectorMatches({ matchLabels: svc.spec?.selector }, webhook().spec!.template.metadata!.labels!),
    ).toBe(true);
    expect(
      selectorMatches({ matchLabels: svc.spec?.selector }, daemon().spec!.template.metadata!.labels!),
    ).toBe(false);
  });
});

describe('daemon DaemonSet', () => {
  it('runs in the host network with cluster DNS', () => {
    expect(daemonPod().hostNetwork).toBe(true);
    expect(daemonPod().dnsPolicy).toBe('ClusterFirstWithHostNet');
  });

  it('has CAP_NET_ADMIN and nothing else: not privileged, no escalation, read-only root', () => {
    const c = daemonContainer().securityContext;
    expect(c?.capabilities?.add).toEqual(['NET_ADMIN']);
    expect(c?.capabilities?.drop).toEqual(['ALL']);
    expect(c?.privileged).toBe(false);
    expect(c?.allowPrivilegeEscalation).toBe(false);
    expect(c?.readOnlyRootFilesystem).toBe(true);
    expect(c?.seccompProfile?.type ?? daemonPod().securityContext?.seccompProfile?.type).toBe(
      'RuntimeDefault',
    );
    expect(daemonPod().hostPID).not.toBe(true);
    expect(daemonPod().hostIPC).not.toBe(true);
  });

  it('mounts nothing from the host (no /run/xtables.lock: nftables)', () => {
    expect(daemonPod().volumes?.filter((v) => v.hostPath)).toEqual([]);
  });

  it('tolerates every taint and is node-critical', () => {
    expect(daemonPod().tolerations).toEqual([{ operator: 'Exists' }]);
    expect(daemonPod().priorityClassName).toBe('system-node-critical');
  });

  it('rolls out with RollingUpdate and a maxUnavailable', () => {
    const strategy = daemon().spec?.updateStrategy;
    expect(strategy?.type).toBe('RollingUpdate');
    expect(strategy?.rollingUpdate?.maxUnavailable).toBeDefined();
  });

  it('gets NODE_NAME from the downward API', () => {
    expect(envOf(daemonContainer()).get('NODE_NAME')).toBe('field:spec.nodeName');
  });

  it('is probed over HTTP on the loopback health listener it is told to serve', () => {
    const c = daemonContainer();
    const listen = flag(c.args, '--health-listen');
    expect(listen).toBe('127.0.0.1:9469');
    const port = c.ports?.find((p) => p.name === 'health');
    expect(`127.0.0.1:${port?.containerPort}`).toBe(listen);
    // Liveness: the process answers. Readiness: the node's kernel holds what is wanted.
    for (const [probe, path] of [
      [c.livenessProbe, '/healthz'],
      [c.readinessProbe, '/readyz'],
    ] as const) {
      expect(probe?.httpGet).toMatchObject({ host: '127.0.0.1', path, port: 'health', scheme: 'HTTP' });
    }
  });

  it('passes arguments the daemon parses, the flowtable patterns at their default', () => {
    const options = parseDaemonArgs(daemonContainer().args ?? [], { KUBERNETES_SERVICE_HOST: '10.96.0.1' });
    if (options === 'help') throw new Error('the DaemonSet asks for help');
    expect(options.source).toEqual({ kind: 'kubernetes' });
    // The fields are there to be edited; as shipped they mean "every UP link but loopback".
    expect(daemonContainer().args).toEqual(
      expect.arrayContaining(['--flowtable-include', '--flowtable-exclude']),
    );
    expect(options.devices).toEqual({ include: [], exclude: [] });
  });

  it('uses the in-cluster API (neither --services nor --kubeconfig) and does not clean up', () => {
    const args = daemonContainer().args ?? [];
    for (const absent of ['--services', '--kubeconfig', '--once', '--cleanup'])
      expect(args).not.toContain(absent);
  });

  it('requests CPU and memory and caps memory', () => {
    const r = daemonContainer().resources;
    expect(r?.requests?.cpu).toBeDefined();
    expect(r?.requests?.memory).toBeDefined();
    expect(r?.limits?.memory).toBeDefined();
  });
});

describe('both components', () => {
  const both = (): [string, IPodSpec, IContainer][] => [
    ['webhook', webhookPod(), webhookContainer()],
    ['daemon', daemonPod(), daemonContainer()],
  ];

  it('run from the one image, overridable through kustomize images:', () => {
    for (const [, , c] of both()) expect(c.image).toBe(IMAGE);
    const kustomization = readFileSync(join(REPO, 'deploy/base/kustomization.yaml'), 'utf8');
    expect(kustomization).toMatch(
      /images:\n\s+- name: ghcr\.io\/slipstream-dev\/slipstream\n\s+newTag: 0\.1\.0/,
    );
  });

  it('run their entry points with node from /app', () => {
    // Both run their bundles (npm run build); the webhook with the flags the benchmark measured;
    // --disable-sigusr1: no inspector on SIGUSR1 (the daemon's is a root process on the host network).
    expect(webhookContainer().command).toEqual([
      'node',
      '--disable-sigusr1',
      '--max-semi-space-size=2',
      '--no-concurrent-recompilation',
      '--no-maglev',
      'webhook/build/main.mjs',
    ]);
    expect(daemonContainer().command).toEqual([
      'node',
      '--disable-sigusr1',
      '--max-semi-space-size=4',
      '--expose-gc',
      'daemon/build/main.mjs',
    ]);
    for (const [, , c] of both()) expect(c.workingDir).toBe('/app');
  });

  it('read the policy from the generated ConfigMap at /etc/slipstream/policy.yaml', () => {
    const cm = one<IConfigMap>(base(), 'ConfigMap', 'slipstream-policy-');
    expect(cm.metadata?.name).toMatch(/^slipstream-policy-[a-z0-9]{10}$/); // hashed: a change rolls the pods
    for (const [name, pod, c] of both()) {
      expect(flag(c.args, '--policy'), name).toBe(POLICY_PATH);
      const mount = c.volumeMounts?.find((m) => m.mountPath === POLICY_MOUNT);
      expect(mount?.readOnly, name).toBe(true);
      const volume = pod.volumes?.find((v) => v.name === mount?.name);
      expect(volume?.configMap?.name, name).toBe(cm.metadata?.name);
      expect(volume?.configMap?.items, name).toBeUndefined(); // every key, so policy.yaml is there
    }
    expect(Object.keys(cm.data ?? {})).toEqual(['policy.yaml']);
  });

  it('ship exactly shared/policy/default.yaml (deploy/base/policy.yaml is an in-sync copy)', () => {
    const source = readFileSync(join(REPO, 'shared/policy/default.yaml'), 'utf8');
    const copy = readFileSync(join(REPO, 'deploy/base/policy.yaml'), 'utf8');
    expect(
      copy,
      'deploy/base/policy.yaml drifted: cp shared/policy/default.yaml deploy/base/policy.yaml',
    ).toBe(source);
    const cm = one<IConfigMap>(base(), 'ConfigMap', 'slipstream-policy-');
    expect(cm.data?.['policy.yaml']).toBe(source);
    expect(parsePolicy(copy, 'deploy/base/policy.yaml').document.name).toBe('default');
  });

  it('have tracing off, with a service name each', () => {
    for (const [name, , c] of both()) {
      const env = envOf(c);
      expect(env.get('OTEL_SERVICE_NAME'), name).toBe(`slipstream-${name}`);
      expect(env.get('OTEL_TRACES_EXPORTER'), name).toBe('none');
      expect(env.get('OTEL_METRICS_EXPORTER'), name).toBe('none');
      expect(env.get('OTEL_LOGS_EXPORTER'), name).toBe('none');
      expect(env.has('OTEL_EXPORTER_OTLP_ENDPOINT'), name).toBe(false);
    }
  });

  it('use their own service accounts', () => {
    expect(webhookPod().serviceAccountName).toBe('slipstream-webhook');
    expect(daemonPod().serviceAccountName).toBe('slipstream-daemon');
    expect(has(base(), 'ServiceAccount', 'slipstream-webhook')).toBe(true);
    expect(has(base(), 'ServiceAccount', 'slipstream-daemon')).toBe(true);
  });
});

describe('MutatingWebhookConfiguration slipstream', () => {
  it('intercepts exactly CREATE and UPDATE of core/v1 Services', () => {
    expect(theWebhook().rules).toEqual([
      {
        apiGroups: [''],
        apiVersions: ['v1'],
        resources: ['services'],
        operations: ['CREATE', 'UPDATE'],
        scope: 'Namespaced',
      },
    ]);
  });

  it('never blocks Service writes and has no side effects', () => {
    const w = theWebhook();
    expect(w.failurePolicy).toBe('Ignore');
    expect(w.sideEffects).toBe('None');
    expect(w.timeoutSeconds).toBeLessThanOrEqual(5);
    expect(w.timeoutSeconds).toBe(3);
    expect(w.admissionReviewVersions).toEqual(['v1']);
    expect(w.matchPolicy).toBe('Equivalent');
    expect(w.reinvocationPolicy).toBe('IfNeeded');
  });

  it('skips opted-out namespaces, kube-system and slipstream-system', () => {
    const selector = theWebhook().namespaceSelector!;
    const ns = (name: string, labels: Record<string, string> = {}) => ({
      'kubernetes.io/metadata.name': name,
      ...labels,
    });
    expect(selectorMatches(selector, ns('default'))).toBe(true);
    expect(selectorMatches(selector, ns('shop', { [NAMESPACE_OPT_OUT_LABEL]: 'enabled' }))).toBe(true);
    expect(
      selectorMatches(selector, ns('shop', { [NAMESPACE_OPT_OUT_LABEL]: NAMESPACE_OPT_OUT_VALUE })),
    ).toBe(false);
    expect(selectorMatches(selector, ns('kube-system'))).toBe(false);
    expect(selectorMatches(selector, ns(NAMESPACE))).toBe(false);
    expect(theWebhook().objectSelector).toBeUndefined();
  });

  it('calls the webhook Service at /mutate, with caBundle left for the webhook to write', () => {
    const client = theWebhook().clientConfig;
    expect(client.url).toBeUndefined();
    expect(client.service).toEqual({
      name: 'slipstream-webhook',
      namespace: NAMESPACE,
      path: '/mutate',
      port: 443,
    });
    expect(client.caBundle).toBeUndefined();
    const svc = one<IService>(base(), 'Service', client.service!.name);
    expect(svc.spec?.ports?.map((p) => p.port)).toContain(client.service?.port);
  });
});

describe('RBAC', () => {
  const rolesOf = (objects: KubeObject[]) =>
    objects.filter(
      (o): o is KubeObject & (IRole | IClusterRole) => o.kind === 'Role' || o.kind === 'ClusterRole',
    );
  const sorted = (xs: string[] | undefined) => [...(xs ?? [])].sort();

  it('gives the daemon exactly get/list/watch on services and namespaces, cluster-wide', () => {
    const role = one<IClusterRole>(base(), 'ClusterRole', 'slipstream-daemon');
    expect(role.rules).toHaveLength(1);
    const rule = role.rules![0]!;
    expect(rule.apiGroups).toEqual(['']);
    expect(sorted(rule.resources)).toEqual(['namespaces', 'services']);
    expect(sorted(rule.verbs)).toEqual(['get', 'list', 'watch']);
    expect(rule.resourceNames).toBeUndefined();
    const binding = one<IClusterRoleBinding>(base(), 'ClusterRoleBinding', 'slipstream-daemon');
    expect(binding.roleRef).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'ClusterRole',
      name: 'slipstream-daemon',
    });
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'slipstream-daemon', namespace: NAMESPACE },
    ]);
  });

  it('gives the status reader (kubectl slipstream) only pods get/list and pods/portforward create, in its namespace', () => {
    const role = one<IRole>(base(), 'Role', 'slipstream-status-reader');
    expect(role.metadata?.namespace).toBe(NAMESPACE);
    expect(role.rules).toEqual([
      { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] },
      { apiGroups: [''], resources: ['pods/portforward'], verbs: ['create'] },
    ]);
  });

  it('points kubectl slipstream at the daemon pods and their loopback status port', () => {
    expect(DAEMON_NAMESPACE).toBe(NAMESPACE);
    const labels = daemon().spec!.template.metadata!.labels!;
    expect(selectorMatches(parseLabelSelector(DAEMON_SELECTOR), labels)).toBe(true);
    // Only the daemons: no other pod of the install matches.
    for (const o of base()) {
      const template = (o as { spec?: { template?: { metadata?: { labels?: Record<string, string> } } } })
        .spec?.template;
      if (o.kind !== 'DaemonSet' && template?.metadata?.labels)
        expect(selectorMatches(parseLabelSelector(DAEMON_SELECTOR), template.metadata.labels)).toBe(false);
    }
    expect(flag(daemonContainer().args, '--health-listen')).toBe(`127.0.0.1:${STATUS_PORT}`);
  });

  it('lets the webhook touch only its own Secret by name, plus create (unscopable by name), in its namespace', () => {
    const role = one<IRole>(base(), 'Role', 'slipstream-webhook');
    expect(role.metadata?.namespace).toBe(NAMESPACE);
    expect(role.rules).toEqual([
      {
        apiGroups: [''],
        resources: ['secrets'],
        resourceNames: ['slipstream-webhook-tls'],
        verbs: ['get', 'update', 'patch'],
      },
      { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
    ]);
    const binding = one<IRoleBinding>(base(), 'RoleBinding', 'slipstream-webhook');
    expect(binding.roleRef).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'Role',
      name: 'slipstream-webhook',
    });
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'slipstream-webhook', namespace: NAMESPACE },
    ]);
    // The Secret the Role names is the one the webhook is told to use.
    const secret = flag(webhookContainer().args, '--tls-secret');
    expect(secret).toBe(`${role.metadata?.namespace}/${role.rules?.[0]?.resourceNames?.[0]}`);
  });

  it('lets the webhook get/patch/update only the slipstream webhook configuration', () => {
    const role = one<IClusterRole>(base(), 'ClusterRole', 'slipstream-webhook');
    expect(role.rules).toEqual([
      {
        apiGroups: ['admissionregistration.k8s.io'],
        resources: ['mutatingwebhookconfigurations'],
        resourceNames: ['slipstream'],
        verbs: ['get', 'patch', 'update'],
      },
    ]);
    const binding = one<IClusterRoleBinding>(base(), 'ClusterRoleBinding', 'slipstream-webhook');
    expect(binding.roleRef.name).toBe('slipstream-webhook');
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'slipstream-webhook', namespace: NAMESPACE },
    ]);
    expect(role.rules?.[0]?.resourceNames).toEqual([flag(webhookContainer().args, '--webhook-config')]);
  });

  it.each(Object.entries(TARGETS))(
    'has no wildcards, no privilege-granting verbs and no secret reads in %s',
    (_n, dir) => {
      const roles = rolesOf(render(dir));
      expect(roles.length).toBeGreaterThan(0);
      for (const role of roles) {
        const name = `${role.kind} ${role.metadata?.name}`;
        expect((role as IClusterRole).aggregationRule, name).toBeUndefined();
        for (const rule of role.rules ?? []) {
          for (const list of [
            rule.apiGroups,
            rule.resources,
            rule.verbs,
            rule.resourceNames,
            rule.nonResourceURLs,
          ]) {
            expect(list?.filter((x) => x.includes('*')) ?? [], name).toEqual([]);
          }
          expect(rule.nonResourceURLs, name).toBeUndefined();
          expect(
            rule.verbs.filter((v) =>
              ['escalate', 'bind', 'impersonate', 'delete', 'deletecollection'].includes(v),
            ),
            name,
          ).toEqual([]);
          if (rule.resources?.includes('secrets')) {
            // list/watch cannot be held to one name without a field selector: they would expose every Secret.
            expect(
              rule.verbs.filter((v) => v === 'list' || v === 'watch'),
              name,
            ).toEqual([]);
            if (rule.verbs.includes('get')) expect(rule.resourceNames, name).toBeDefined();
          }
        }
      }
    },
  );

  it.each(Object.entries(TARGETS))(
    'binds only existing roles to existing service accounts in %s',
    (_n, dir) => {
      const objects = render(dir);
      const bindings = objects.filter(
        (o): o is KubeObject & (IRoleBinding | IClusterRoleBinding) =>
          o.kind === 'RoleBinding' || o.kind === 'ClusterRoleBinding',
      );
      for (const b of bindings) {
        expect(has(objects, b.roleRef.kind, b.roleRef.name), b.metadata?.name).toBe(true);
        for (const s of b.subjects ?? []) {
          expect(s.kind).toBe('ServiceAccount');
          expect(s.namespace).toBe(NAMESPACE);
          expect(has(objects, 'ServiceAccount', s.name), s.name).toBe(true);
        }
      }
    },
  );
});
