// How Prometheus finds and judges Slipstream: the base's scrape annotations and metrics ports match
// what the programs listen on; deploy/overlays/prometheus adds only the PodMonitors and the
// PrometheusRule; the PodMonitors select exactly their component's pods; the rules pass
// `promtool check rules` and their alerts fire (and stay quiet) as `promtool test rules` cases say.

import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IPodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import type { IPrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { selectorMatches } from '../lib/label-selector.ts';
import { promtool } from '../lib/prometheus.ts';
import { tempDir } from '../lib/temp-dir.ts';
import { alertRules, describe as id, NAMESPACE, one, render, TARGETS } from './manifests.ts';
import { container, daemonSet, envOf, flag, webhookDeployment } from './workloads.ts';

const TEST_CASES = join(import.meta.dirname, 'alerts.promtool.yaml');

/** The PrometheusRule's spec written as a Prometheus rules file (it is one: `groups`). */
function rulesFile(dir: string, withAnnotations = true): string {
  const path = join(dir, 'rules.yaml');
  writeFileSync(path, stringify(alertRules(withAnnotations)));
  return path;
}

const workloads: [string, () => IDaemonSet | IDeployment][] = [
  ['daemon', () => daemonSet(render(TARGETS.base))],
  ['webhook', () => webhookDeployment(render(TARGETS.base))],
];

describe('scrape configuration in the base', () => {
  it.each(workloads)(
    'the %s pods say where their metrics are, and the program listens there',
    (name, get) => {
      const workload = get();
      const annotations = workload.spec?.template.metadata?.annotations ?? {};
      const c = container(workload, name);
      const port = c.ports?.find((p) => p.name === 'metrics');
      expect(port?.containerPort).toBe(9470);
      expect(annotations).toMatchObject({
        'prometheus.io/scrape': 'true',
        'prometheus.io/port': String(port?.containerPort),
        'prometheus.io/path': '/metrics',
        'prometheus.io/scheme': 'http',
      });
      expect(flag(c.args, '--metrics-listen')?.endsWith(`:${port?.containerPort}`)).toBe(true);
    },
  );

  it('the daemon serves metrics on the pod IP (the node address, where pod discovery scrapes); health stays on loopback', () => {
    const c = container(daemonSet(render(TARGETS.base)), 'daemon');
    expect(flag(c.args, '--metrics-listen')).toBe('$(POD_IP):9470');
    expect(envOf(c).get('POD_IP')).toBe('field:status.podIP');
    expect(flag(c.args, '--health-listen')).toBe('127.0.0.1:9469');
  });

  it('the webhook keeps its review port HTTPS and metrics off the Service', () => {
    const objects = render(TARGETS.base);
    const c = container(webhookDeployment(objects), 'webhook');
    expect(flag(c.args, '--listen')).toBe('0.0.0.0:8443');
    expect(flag(c.args, '--metrics-listen')).toBe('0.0.0.0:9470');
    const svc = one<{ spec: { ports: { targetPort: unknown }[] } }>(objects, 'Service', 'slipstream-webhook');
    expect(svc.spec.ports.map((p) => p.targetPort)).toEqual(['https']);
  });

  it('the cert-manager overlay keeps the webhook metrics listener', () => {
    const c = container(webhookDeployment(render(TARGETS.certManager)), 'webhook');
    expect(flag(c.args, '--metrics-listen')).toBe('0.0.0.0:9470');
  });
});

describe('deploy/overlays/prometheus', () => {
  const objects = () => render(TARGETS.prometheus);

  it('adds two PodMonitors and a PrometheusRule, and changes nothing of the base', () => {
    const base = new Map(render(TARGETS.base).map((o) => [id(o), JSON.stringify(o)]));
    const added = objects()
      .filter((o) => !base.has(id(o)))
      .map(id)
      .sort();
    expect(added).toEqual([
      `monitoring.coreos.com/v1 PodMonitor ${NAMESPACE}/slipstream-daemon`,
      `monitoring.coreos.com/v1 PodMonitor ${NAMESPACE}/slipstream-webhook`,
      `monitoring.coreos.com/v1 PrometheusRule ${NAMESPACE}/slipstream`,
    ]);
    for (const o of objects()) if (base.has(id(o))) expect(JSON.stringify(o), id(o)).toBe(base.get(id(o)));
  });

  it.each(workloads)(
    'the %s PodMonitor selects only its pods, on their metrics port, with the node name',
    (name, get) => {
      const monitor = one<IPodMonitor>(objects(), 'PodMonitor', `slipstream-${name}`);
      const mine = get().spec!.template.metadata!.labels!;
      const other = workloads.find(([n]) => n !== name)![1]().spec!.template.metadata!.labels!;
      expect(selectorMatches(monitor.spec.selector, mine)).toBe(true);
      expect(selectorMatches(monitor.spec.selector, other)).toBe(false);
      const [endpoint] = monitor.spec.podMetricsEndpoints ?? [];
      expect(endpoint).toMatchObject({ port: 'metrics', path: '/metrics', scheme: 'http' });
      expect(container(get(), name).ports?.some((p) => p.name === endpoint?.port)).toBe(true);
      expect(endpoint?.relabelings).toContainEqual({
        sourceLabels: ['__meta_kubernetes_pod_node_name'],
        targetLabel: 'node',
      });
    },
  );

  it('carries the alerts operators expect', () => {
    const rule = one<IPrometheusRule>(objects(), 'PrometheusRule', 'slipstream');
    const alerts = (rule.spec.groups ?? []).flatMap((g) => (g.rules ?? []).map((r) => r.alert));
    expect(new Set(alerts)).toEqual(
      new Set([
        'SlipstreamDaemonNotSyncing',
        'SlipstreamSyncFailing',
        'SlipstreamServicesQuarantined',
        'SlipstreamNodeDegraded',
        'SlipstreamWebhookSlow',
        'SlipstreamWebhookCertificateExpiring',
      ]),
    );
  });

  it('passes promtool check rules', () => {
    const r = promtool(['check', 'rules', rulesFile(tempDir())]);
    expect(r.output).toMatch(/SUCCESS: 7 rules found/);
    expect(r.code, r.output).toBe(0);
  });

  it('fires (and stays quiet) as the promtool test cases say', () => {
    const dir = tempDir();
    rulesFile(dir, false);
    copyFileSync(TEST_CASES, join(dir, 'alerts.promtool.yaml'));
    const r = promtool(['test', 'rules', 'alerts.promtool.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('SUCCESS');
  });
});
