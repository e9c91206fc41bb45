import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { context, SpanKind, trace } from '@opentelemetry/api';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  contextFromHeaders,
  linkFromTraceparent,
  spanContextFromTraceparent,
  startInMemoryTelemetry,
  startTelemetry,
  type Telemetry,
  traceparentOf,
} from './telemetry.ts';

const running: Telemetry[] = [];
afterEach(async () => {
  for (const t of running.splice(0)) await t.shutdown();
  vi.unstubAllEnvs();
});

const OTEL_VARS = [
  'OTEL_SDK_DISABLED',
  'OTEL_TRACES_EXPORTER',
  'OTEL_EXPORTER_OTLP_ENDPOINT',
  'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
  'OTEL_SERVICE_NAME',
  'OTEL_RESOURCE_ATTRIBUTES',
];
function cleanEnv(vars: Record<string, string> = {}) {
  for (const name of OTEL_VARS) vi.stubEnv(name, undefined);
  for (const [k, v] of Object.entries(vars)) vi.stubEnv(k, v);
}
async function start(name = 'slipstream-test') {
  const t = await startTelemetry(name);
  running.push(t);
  return t;
}

describe('in-memory exporter (tests)', () => {
  it('keeps finished spans with their attributes and the component name', async () => {
    const t = await startInMemoryTelemetry('slipstream-webhook');
    running.push(t);
    const span = t.tracer.startSpan('admission.review', {
      kind: SpanKind.SERVER,
      attributes: { 'k8s.service.name': 'pg' },
    });
    span.setAttribute('slipstream.patched', true);
    span.end();
    const [finished] = t.exporter.getFinishedSpans();
    expect(finished?.name).toBe('admission.review');
    expect(finished?.attributes).toEqual({ 'k8s.service.name': 'pg', 'slipstream.patched': true });
    expect(finished?.resource.attributes['service.name']).toBe('slipstream-webhook');
  });

  it('propagates the active span across awaits (AsyncLocalStorage context)', async () => {
    const t = await startInMemoryTelemetry('slipstream-daemon');
    running.push(t);
    await t.tracer.startActiveSpan('sync', async (parent) => {
      await new Promise((r) => setTimeout(r, 5));
      const child = t.tracer.startSpan('apply');
      child.end();
      expect(trace.getSpan(context.active())).toBe(parent);
      parent.end();
    });
    const [child, parent] = t.exporter.getFinishedSpans();
    expect(child?.parentSpanContext?.spanId).toBe(parent?.spanContext().spanId);
  });
});

describe('configuration from OTEL_* variables', () => {
  it('traces in-process, exporting nowhere, when no endpoint is set', async () => {
    cleanEnv();
    const t = await start();
    expect(t.exportTarget).toMatch(/in-process only.*OTEL_EXPORTER_OTLP_ENDPOINT/);
    const span = t.tracer.startSpan('x');
    expect(traceparentOf(span)).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    span.end();
  });

  it('exports nothing with OTEL_TRACES_EXPORTER=none, even with an endpoint', async () => {
    cleanEnv({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' });
    const t = await start();
    expect(t.exportTarget).toMatch(/OTEL_TRACES_EXPORTER=none/);
    expect(traceparentOf(t.tracer.startSpan('x'))).toBeDefined();
  });

  it('registers nothing with OTEL_SDK_DISABLED=true', async () => {
    cleanEnv({ OTEL_SDK_DISABLED: 'true' });
    const t = await start();
    expect(t.exportTarget).toMatch(/disabled/);
    expect(traceparentOf(t.tracer.startSpan('x'))).toBeUndefined();
  });
});

describe('OTLP/HTTP export', () => {
  let receiver: Server | undefined;
  afterEach(() => {
    receiver?.close();
    receiver = undefined;
  });

  it('sends spans to /v1/traces of OTEL_EXPORTER_OTLP_ENDPOINT, flushed by shutdown()', async () => {
    const bodies: { path: string; type: string; body: unknown }[] = [];
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push({
          path: req.url ?? '',
          type: req.headers['content-type'] ?? '',
          body: JSON.parse(Buffer.concat(chunks).toString('utf8')),
        });
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    receiver.listen(0, '127.0.0.1');
    await new Promise((r) => receiver!.once('listening', r));
    const { port } = receiver.address() as AddressInfo;

    cleanEnv({
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_SERVICE_NAME: 'renamed-webhook',
    });
    const t = await startTelemetry('slipstream-webhook');
    expect(t.exportTarget).toBe(`otlp http/json http://127.0.0.1:${port}`);
    const span = t.tracer.startSpan('admission.review', {
      attributes: { 'slipstream.decision.offload': '5432/TCP' },
    });
    span.end();
    await t.shutdown();

    expect(bodies).toHaveLength(1);
    expect(bodies[0]?.path).toBe('/v1/traces');
    expect(bodies[0]?.type).toMatch(/application\/json/);
    const text = JSON.stringify(bodies[0]?.body);
    expect(text).toContain('"admission.review"');
    expect(text).toContain('5432/TCP');
    expect(text).toContain('renamed-webhook'); // OTEL_SERVICE_NAME wins over the component's name
    expect(text).toContain(span.spanContext().traceId);
  });
});

describe('trace context helpers', () => {
  const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

  it('round-trips a traceparent', () => {
    const sc = spanContextFromTraceparent(tp);
    expect(sc).toMatchObject({
      traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7',
      traceFlags: 1,
    });
    expect(traceparentOf(sc!)).toBe(tp);
    expect(linkFromTraceparent(tp)).toHaveLength(1);
  });

  it.each([undefined, '', 'garbage', `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`, 'x'.repeat(1000)])(
    'ignores %j',
    (value) => {
      expect(spanContextFromTraceparent(value)).toBeUndefined();
      expect(linkFromTraceparent(value)).toEqual([]);
    },
  );

  it('reads the parent from request headers', async () => {
    const t = await startInMemoryTelemetry('slipstream-webhook');
    running.push(t);
    const parent = contextFromHeaders({ traceparent: tp });
    expect(trace.getSpanContext(parent)?.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(trace.getSpanContext(contextFromHeaders({}))).toBeUndefined();
  });
});
