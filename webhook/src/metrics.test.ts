// The webhook's metrics through the real HTTPS server: each review moves the series it should,
// rejected bodies are counted by class, and nothing a client sends becomes a label value.

import { X509Certificate } from 'node:crypto';
import { memoryLogger } from '@slipstream/shared/adapters/log';
import { createMetricsRegistry } from '@slipstream/shared/adapters/metrics';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import type { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { loadFixtures } from '../../test/lib/admission-fixtures.ts';
import { postReview } from '../../test/lib/webhook-client.ts';
import { rejectionClass, WebhookMetrics } from './metrics.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';
import { selfSignedCertificate } from './tls.ts';

const policy = loadDefaultPolicy();
const fixtures = new Map(loadFixtures(policy.id).map((f) => [f.name, f]));
const review = (name: string) => fixtures.get(name)!.review;

const servers: WebhookServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close(100);
});

async function start(): Promise<{ server: WebhookServer; registry: Registry }> {
  const registry = createMetricsRegistry('webhook');
  const server = await startWebhookServer({
    host: '127.0.0.1',
    port: 0,
    policy: () => policy,
    log: memoryLogger(),
    metrics: new WebhookMetrics(registry),
  });
  servers.push(server);
  return { server, registry };
}

/** `name{labels} value` lines of the exposition, as a map. */
async function series(registry: Registry): Promise<Map<string, number>> {
  const map = new Map<string, number>();
  for (const line of (await registry.metrics()).split('\n')) {
    const m = /^(slipstream_webhook_\S+) (\S+)$/.exec(line);
    if (m) map.set(m[1]!, Number(m[2]));
  }
  return map;
}

describe('WebhookMetrics through the HTTPS server', () => {
  it('counts reviews by operation and outcome, and times each one', async () => {
    const { server, registry } = await start();
    for (const name of ['postgres-create', 'already-patched-update', 'configmap-create', 'service-delete']) {
      expect((await postReview(server.url, review(name))).status).toBe(200);
    }
    const s = await series(registry);
    expect(s.get('slipstream_webhook_reviews_total{operation="CREATE",outcome="patched"}')).toBe(1);
    expect(s.get('slipstream_webhook_reviews_total{operation="UPDATE",outcome="unchanged"}')).toBe(1);
    expect(s.get('slipstream_webhook_reviews_total{operation="CREATE",outcome="skipped"}')).toBe(1);
    expect(s.get('slipstream_webhook_reviews_total{operation="DELETE",outcome="skipped"}')).toBe(1);
    expect(s.get('slipstream_webhook_review_duration_seconds_count')).toBe(4);
    expect(s.get('slipstream_webhook_review_duration_seconds_bucket{le="+Inf"}')).toBe(4);
    expect(s.get('slipstream_webhook_review_duration_seconds_sum')).toBeGreaterThan(0);
  });

  it('counts rejected bodies by class, under operation="unknown"', async () => {
    const { server, registry } = await start();
    expect((await postReview(server.url, '{"not": "json"')).status).toBe(400);
    expect((await postReview(server.url, { apiVersion: 'v1', kind: 'Pod' })).status).toBe(400);
    const wrongType = await postReview(server.url, review('postgres-create'), {
      headers: { 'content-type': 'text/plain' },
    });
    expect(wrongType.status).toBe(415);
    expect((await postReview(server.url, 'x'.repeat(1024 * 1024 + 1))).status).toBe(413);
    const s = await series(registry);
    expect(s.get('slipstream_webhook_reviews_total{operation="unknown",outcome="malformed"}')).toBe(2);
    expect(
      s.get('slipstream_webhook_reviews_total{operation="unknown",outcome="unsupported-media-type"}'),
    ).toBe(1);
    expect(s.get('slipstream_webhook_reviews_total{operation="unknown",outcome="too-large"}')).toBe(1);
    expect(s.get('slipstream_webhook_review_duration_seconds_count')).toBe(4);
  });

  it('counts port decisions by rule, and warnings by the key they name', async () => {
    const { server, registry } = await start();
    await postReview(server.url, review('thresholds-per-port-create'));
    await postReview(server.url, review('invalid-threshold-abc'));
    await postReview(server.url, review('malformed-service'));
    const s = await series(registry);
    const decisions = [...s].filter(([k]) => k.startsWith('slipstream_webhook_decisions_total'));
    expect(decisions.length).toBeGreaterThanOrEqual(2);
    expect(decisions.some(([k]) => /decision="offload"/.test(k))).toBe(true);
    expect(s.get('slipstream_webhook_decisions_total{rule="user:invalid",decision="keep"}')).toBe(1);
    expect(s.get('slipstream_webhook_warnings_total{key="slipstream.dev/packet-threshold"}')).toBe(1);
    expect(s.get('slipstream_webhook_warnings_total{key="slipstream"}')).toBe(1);
  });

  it('a client cannot add label values: odd operations and annotation keys fall into fixed ones', async () => {
    const { server, registry } = await start();
    const odd = structuredClone(review('postgres-create')) as { request: Record<string, unknown> };
    odd.request.operation = 'FROBNICATE-12345';
    expect((await postReview(server.url, odd)).status).toBe(200);
    const text = await registry.metrics();
    expect(text).not.toContain('FROBNICATE');
    expect(text).toContain('slipstream_webhook_reviews_total{operation="other",outcome="skipped"} 1');
  });

  it('exposes when the serving certificate expires, and follows a new one', async () => {
    const { server, registry } = await start();
    const first = new X509Certificate(server.certificate).validToDate.getTime() / 1000;
    expect((await series(registry)).get('slipstream_webhook_certificate_expiry_timestamp_seconds')).toBe(
      first,
    );
    const next = await selfSignedCertificate(['127.0.0.1']);
    server.setCertificate(next);
    const expiry = new X509Certificate(next.cert).validToDate.getTime() / 1000;
    expect((await series(registry)).get('slipstream_webhook_certificate_expiry_timestamp_seconds')).toBe(
      expiry,
    );
  });
});

describe('metrics attached to a running server (after the review port answers)', () => {
  it('count the reviews from then on, and take the certificate being served', async () => {
    const server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log: memoryLogger(),
    });
    servers.push(server);
    expect((await postReview(server.url, review('postgres-create'))).status).toBe(200);
    const registry = createMetricsRegistry('webhook');
    server.setMetrics(new WebhookMetrics(registry));
    const expiry = new X509Certificate(server.certificate).validToDate.getTime() / 1000;
    expect((await series(registry)).get('slipstream_webhook_certificate_expiry_timestamp_seconds')).toBe(
      expiry,
    );
    expect((await postReview(server.url, review('postgres-create'))).status).toBe(200);
    const s = await series(registry);
    expect(s.get('slipstream_webhook_reviews_total{operation="CREATE",outcome="patched"}')).toBe(1);
  });
});

describe('rejectionClass', () => {
  it.each([
    [400, 'malformed'],
    [413, 'too-large'],
    [415, 'unsupported-media-type'],
    [429, 'too-many-requests'],
    [404, 'rejected'],
    [500, 'error'],
    [503, 'error'],
  ])('%i is %s', (status, label) => {
    expect(rejectionClass(status)).toBe(label);
  });
});
