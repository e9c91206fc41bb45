// Operators see it in Prometheus: a real Prometheus server (loopback, random port, temp config and
// storage, 1 s scrapes, the shipped alert rules) scrapes the real daemon (programming a private
// network namespace from a manifests directory) and the real webhook, and answers PromQL whose
// value moves when a Service is added and when a review is made. Both expositions pass
// `promtool check metrics`. No timing assertions: every wait polls a condition, bounded.

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { alertRules } from '../deploy/manifests.ts';
import { loadFixtures } from '../lib/admission-fixtures.ts';
import { canUseNetns, netnsName } from '../lib/netns.ts';
import { DAEMON_MAIN, freePort, Proc, ROOT, until } from '../lib/process.ts';
import { hasPrometheus, PrometheusServer, promtool } from '../lib/prometheus.ts';
import { postReview } from '../lib/webhook-client.ts';
import { type SpawnedWebhook, spawnWebhook } from '../lib/webhook-process.ts';

const ENV: Record<string, string | undefined> = { ...process.env, OTEL_TRACES_EXPORTER: 'none' };
delete ENV.KUBERNETES_SERVICE_HOST;
delete ENV.OTEL_EXPORTER_OTLP_ENDPOINT;

const NODE = 'node-a';

function serviceYaml(name: string, ip: string, port: number, portName: string): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'shop' },
    spec: {
      type: 'ClusterIP',
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [{ name: portName, port, protocol: 'TCP' }],
    },
  });
}

/** The README's answer to "is node X programming Services?" (1: yes, 0: no, nothing: not scraped), for `node`. */
function programmingQuery(node: string): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const query = /\*\*Is node X programming Services\?\*\*[\s\S]*?```promql\n([^\n]+)\n```/.exec(readme)?.[1];
  if (!query) throw new Error('README.md has no "Is node X programming Services?" query');
  return query.replaceAll('node="X"', `node="${node}"`);
}

describe.skipIf(!canUseNetns())('a real Prometheus scrapes the daemon and the webhook', () => {
  const ns = netnsName('prom');
  let dir: string;
  let daemon: Proc;
  let webhook: SpawnedWebhook;
  let prometheus: PrometheusServer;
  let daemonMetrics: string;
  let webhookMetrics: string;

  beforeAll(async () => {
    if (!hasPrometheus()) {
      throw new Error(
        "prometheus/promtool are not installed: Debian's prometheus package (scripts/setup.sh)",
      );
    }
    dir = mkdtempSync(join(tmpdir(), 'slipstream-prom-'));
    const services = join(dir, 'services');
    mkdirSync(services);
    mkdirSync(join(dir, 'prometheus'));
    writeFileSync(
      join(services, 'namespaces.yaml'),
      stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } }),
    );
    writeFileSync(join(services, 'postgres.yaml'), serviceYaml('postgres', '10.96.10.10', 5432, 'postgres'));
    execFileSync('ip', ['netns', 'add', ns]);

    const daemonPort = await freePort();
    daemon = new Proc(
      DAEMON_MAIN,
      [
        ...['--services', services, '--netns', ns, '--min-sync-period', '100ms'],
        ...['--metrics-listen', `127.0.0.1:${daemonPort}`, '--conntrack-sample-period', '2s'],
      ],
      { name: 'daemon', env: ENV },
    );
    await daemon.waitForLog('metrics listening', (l) => l.msg === 'metrics listening');
    daemonMetrics = `http://127.0.0.1:${daemonPort}/metrics`;

    webhook = await spawnWebhook(['--metrics-listen', '127.0.0.1:0']);
    // The review port answers first; the metrics listener follows.
    const listening = await until('the webhook metrics listener', () =>
      webhook.logs.find((l) => l.msg === 'metrics listening'),
    );
    webhookMetrics = `http://127.0.0.1:${(listening.address as { port: number }).port}/metrics`;

    prometheus = await PrometheusServer.start({
      dir: join(dir, 'prometheus'),
      targets: [
        { job: 'slipstream-daemon', address: new URL(daemonMetrics).host, labels: { node: NODE } },
        { job: 'slipstream-webhook', address: new URL(webhookMetrics).host },
      ],
      rules: alertRules(),
    });
  });

  afterAll(async () => {
    await prometheus?.stop();
    await webhook?.stop();
    await daemon?.stop();
    execFileSync('ip', ['netns', 'delete', ns]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('promtool check metrics finds nothing wrong in either exposition', async () => {
    for (const url of [daemonMetrics, webhookMetrics]) {
      const text = await (await fetch(url)).text();
      expect(text).toContain('slipstream_build_info');
      const r = promtool(['check', 'metrics'], { input: text });
      expect(r.output, url).toBe('');
      expect(r.code, url).toBe(0);
    }
  });

  it('scrapes both components', async () => {
    for (const job of ['slipstream-daemon', 'slipstream-webhook']) {
      await prometheus.waitFor(`up{job="${job}"}`, (s) => s.value === 1);
    }
    const build = await prometheus.waitFor('slipstream_build_info', (s) => s.metric.component === 'webhook');
    expect(build.metric.version).toBe('0.1.0');
  });

  it('a Service added: its element and its programming latency show in PromQL, and the node is programming', async () => {
    const elements = 'sum(slipstream_elements{job="slipstream-daemon"})';
    const programmed = 'sum(slipstream_network_programming_duration_seconds_count{job="slipstream-daemon"})';
    await prometheus.waitFor(elements, (s) => s.value === 1, 'the first Service in Prometheus');
    expect((await prometheus.query(programmed))[0]?.value).toBe(0);

    writeFileSync(join(dir, 'services', 'redis.yaml'), serviceYaml('redis', '10.96.10.11', 6379, 'redis'));
    await prometheus.waitFor(elements, (s) => s.value === 2, 'the added Service in Prometheus');
    await prometheus.waitFor(programmed, (s) => s.value === 1, 'one change programmed');
    const p99 = await prometheus.waitFor(
      'histogram_quantile(0.99, sum by (le) (slipstream_network_programming_duration_seconds_bucket))',
      (s) => Number.isFinite(s.value),
    );
    expect(p99.value).toBeGreaterThan(0);
    const offload = await prometheus.query('slipstream_services{decision="offload"}');
    expect(offload.reduce((n, s) => n + s.value, 0)).toBe(2);

    const answer = await prometheus.waitFor(programmingQuery(NODE), () => true);
    expect(answer.value).toBe(1);
    expect(await prometheus.query(programmingQuery('node-b'))).toEqual([]);
  });

  it('a review: the webhook counts it by operation and outcome, and times it', async () => {
    const patched = 'sum(slipstream_webhook_reviews_total{operation="CREATE",outcome="patched"})';
    await prometheus.waitFor(patched, (s) => s.value === 0, 'the webhook scraped before any review');
    const fixture = loadFixtures(loadDefaultPolicy().id).find((f) => f.name === 'postgres-create')!;
    expect((await postReview(webhook.url, fixture.review)).status).toBe(200);
    await prometheus.waitFor(patched, (s) => s.value === 1, 'the review in Prometheus');
    const reviews = await prometheus.waitFor(
      'sum(slipstream_webhook_review_duration_seconds_count)',
      (s) => s.value >= 1,
    );
    expect(reviews.value).toBe(1);
    const rule = await prometheus.query('slipstream_webhook_decisions_total{decision="offload"}');
    expect(rule.length).toBeGreaterThan(0);
  });

  it('the shipped alert rules evaluate on these series: this degraded kernel makes SlipstreamNodeDegraded pending', async () => {
    const degraded = await prometheus.waitFor(`slipstream_degraded{node="${NODE}"}`, () => true);
    const alert = `ALERTS{alertname="SlipstreamNodeDegraded",node="${NODE}"}`;
    if (degraded.value === 1) {
      const pending = await prometheus.waitFor(alert, () => true, 'the degraded alert pending');
      expect(pending.metric).toMatchObject({ alertstate: 'pending', severity: 'warning' });
    } else {
      expect(await prometheus.query(alert)).toEqual([]);
    }
    // A healthy node: nothing about syncing fires.
    expect(
      await prometheus.query('ALERTS{alertname=~"SlipstreamDaemonNotSyncing|SlipstreamSyncFailing"}'),
    ).toEqual([]);
  });
});
