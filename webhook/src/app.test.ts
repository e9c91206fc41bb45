import { memoryLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import {
  type InMemoryTelemetry,
  startInMemoryTelemetry,
  traceparentOf,
} from '@slipstream/shared/adapters/telemetry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkAgainstFixture, loadFixtures } from '../../test/lib/admission-fixtures.ts';
import { postReview, send } from '../../test/lib/webhook-client.ts';
import type { AdmissionReviewResponse } from './admission.ts';
import { SPAN_NAME } from './app.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';

const policy = loadDefaultPolicy();
const fixtures = loadFixtures(policy.id);
let server: WebhookServer;
let telemetry: InMemoryTelemetry;
const log = memoryLogger();

beforeAll(async () => {
  telemetry = await startInMemoryTelemetry('slipstream-webhook');
  server = await startWebhookServer({
    host: '127.0.0.1',
    port: 0,
    policy: () => policy,
    log,
    tracer: telemetry.tracer,
  });
});
afterAll(async () => {
  await server?.close(1000);
  await telemetry?.shutdown();
});

function spanFor(uid: string) {
  return telemetry.exporter.getFinishedSpans().find((s) => s.attributes['slipstream.admission.uid'] === uid);
}

describe('POST /mutate over HTTPS: recorded AdmissionReviews', () => {
  for (const fixture of fixtures) {
    it(fixture.name, async () => {
      const answer = await postReview(server.url, fixture.review, { ca: server.certificate });
      expect(answer.status).toBe(200);
      expect(answer.headers['content-type']).toBe('application/json');
      const span = spanFor(fixture.review.request.uid);
      expect(span).toBeDefined();
      checkAgainstFixture(
        fixture,
        answer.json as AdmissionReviewResponse,
        traceparentOf(span!.spanContext()),
      );
    });
  }
});

describe('one span per review', () => {
  it('records the decision with semantic-convention-style attributes', async () => {
    const fixture = fixtures.find((f) => f.name === 'postgres-create')!;
    await postReview(server.url, fixture.review, { ca: server.certificate });
    const spans = telemetry.exporter
      .getFinishedSpans()
      .filter((s) => s.attributes['slipstream.admission.uid'] === fixture.review.request.uid);
    const span = spans.at(-1)!;
    expect(span.name).toBe(SPAN_NAME);
    expect(span.attributes).toMatchObject({
      'k8s.namespace.name': 'db',
      'k8s.service.name': 'postgres',
      'slipstream.operation': 'CREATE',
      'slipstream.decision.offload': '5432/TCP=20',
      'slipstream.decision.rule': 'datastore-port-name',
      'slipstream.patched': true,
      'slipstream.dry_run': false,
      'http.response.status_code': 200,
    });
    expect(span.attributes['slipstream.decision.threshold']).toBeUndefined(); // per port, in offload
    expect(String(span.attributes['slipstream.decision.reason'])).toContain(
      '5432/TCP offload after 20 packets',
    );
    expect(span.resource.attributes['service.name']).toBe('slipstream-webhook');
  });

  it('marks dry runs and skipped objects', async () => {
    const dry = fixtures.find((f) => f.name === 'dryrun-create')!;
    const cm = fixtures.find((f) => f.name === 'configmap-create')!;
    await postReview(server.url, dry.review, { ca: server.certificate });
    await postReview(server.url, cm.review, { ca: server.certificate });
    expect(spanFor(dry.review.request.uid)?.attributes['slipstream.dry_run']).toBe(true);
    expect(spanFor(cm.review.request.uid)?.attributes['slipstream.skipped']).toBe('not a v1 Service');
    expect(spanFor(cm.review.request.uid)?.attributes['slipstream.patched']).toBe(false);
  });

  it("continues the API server's trace when it sends a traceparent", async () => {
    const fixture = fixtures.find((f) => f.name === 'dns-create')!;
    const uid = 'traced-review';
    const parent = '00-11111111111111111111111111111111-2222222222222222-01';
    const answer = await postReview(
      server.url,
      { ...fixture.review, request: { ...fixture.review.request, uid } },
      { ca: server.certificate, headers: { traceparent: parent } },
    );
    expect(answer.status).toBe(200);
    const span = spanFor(uid)!;
    expect(span.spanContext().traceId).toBe('11111111111111111111111111111111');
    expect(span.parentSpanContext?.spanId).toBe('2222222222222222');
  });
});

describe('health', () => {
  it('answers /healthz and /readyz', async () => {
    expect(
      (await send(server.url, { method: 'GET', path: '/healthz', ca: server.certificate })).json,
    ).toEqual({ status: 'ok' });
    const ready = await send(server.url, { method: 'GET', path: '/readyz', ca: server.certificate });
    expect(ready.status).toBe(200);
    expect(ready.json).toMatchObject({ status: 'ready', policy: policy.id });
  });
});

describe('bad input gets a clear 4xx JSON error', () => {
  const valid = JSON.stringify(fixtures[0]!.review);
  const cases: [string, Parameters<typeof send>[1], number, RegExp][] = [
    [
      'a body that is not JSON',
      { headers: { 'content-type': 'application/json' }, body: '{"apiVersion": ' },
      400,
      /not JSON/,
    ],
    ['an empty body', { headers: { 'content-type': 'application/json' }, body: '' }, 400, /empty/],
    [
      'JSON that is not an AdmissionReview',
      { headers: { 'content-type': 'application/json' }, body: '{"kind":"Pod"}' },
      400,
      /AdmissionReview/,
    ],
    [
      'a JSON array',
      { headers: { 'content-type': 'application/json' }, body: '[]' },
      400,
      /not a JSON object/,
    ],
    [
      'a body over 1 MiB',
      { headers: { 'content-type': 'application/json' }, body: `{"a":"${'x'.repeat(1024 * 1024)}"}` },
      413,
      /at most 1048576/,
    ],
    [
      'nesting deeper than 64',
      { headers: { 'content-type': 'application/json' }, body: `${'['.repeat(65)}${']'.repeat(65)}` },
      400,
      /nested deeper than 64/,
    ],
    [
      '100k levels of nesting',
      { headers: { 'content-type': 'application/json' }, body: '{"a":'.repeat(100_000) },
      400,
      /nested deeper/,
    ],
    ['text/plain', { headers: { 'content-type': 'text/plain' }, body: valid }, 415, /application\/json/],
    ['no content type', { headers: {}, body: valid }, 415, /application\/json/],
    [
      'protobuf',
      { headers: { 'content-type': 'application/vnd.kubernetes.protobuf' }, body: 'k8s\0' },
      415,
      /application\/json/,
    ],
    [
      'latin-1',
      { headers: { 'content-type': 'application/json; charset=latin1' }, body: valid },
      415,
      /utf-8/,
    ],
    [
      'gzip',
      { headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: valid },
      415,
      /Content-Encoding/,
    ],
    ['GET /mutate', { method: 'GET', path: '/mutate' }, 405, /POST/],
    [
      'an unknown path',
      { method: 'POST', path: '/validate', headers: { 'content-type': 'application/json' }, body: valid },
      404,
      /not found/,
    ],
  ];
  for (const [what, options, status, message] of cases) {
    it(`${what} -> ${status}`, async () => {
      const answer = await send(server.url, { ca: server.certificate, ...options });
      expect(answer.status).toBe(status);
      expect(answer.headers['content-type']).toBe('application/json');
      expect((answer.json as { error: string }).error).toMatch(message);
      const health = await send(server.url, { method: 'GET', path: '/healthz', ca: server.certificate });
      expect(health.status).toBe(200);
    });
  }

  it('accepts application/json with charset=utf-8', async () => {
    const answer = await send(server.url, {
      ca: server.certificate,
      headers: { 'content-type': 'application/json; charset=UTF-8' },
      body: valid,
    });
    expect(answer.status).toBe(200);
  });

  it('logs nothing per request', () => {
    expect(log.lines.filter((l) => l.level === 'error')).toEqual([]);
  });
});
