// Tracing set-up shared by the webhook and the daemon: one TracerProvider per process, configured
// by the standard OTEL_* variables, exporting over OTLP/HTTP when an endpoint is configured.
//
// Why not @opentelemetry/sdk-node's NodeSDK: importing it loads every exporter it might ever need
// (gRPC, protobuf, Prometheus, Zipkin, logs, metrics) and measured 0.8-1.3 s on the 2-core machine,
// several times the webhook's whole cold-start budget (300 ms), and by default it also starts OTLP
// metric and log exporters. The same pieces it would assemble for traces are assembled here
// directly (BasicTracerProvider, BatchSpanProcessor, OTLPTraceExporter, AsyncLocalStorage context,
// W3C propagation), with the same environment variables, and the exporter is loaded only when it
// will be used.
//
// Environment (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
// - OTEL_SDK_DISABLED=true: nothing is registered; spans are no-ops and carry no trace context.
// - OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES: override the component's `service.name` / add attributes.
// - OTEL_TRACES_EXPORTER: `otlp` (default), `console`, or `none` (spans stay in-process).
// - OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: where `otlp` sends. Unset:
//   spans are still created (trace ids go into annotations and logs) but exported nowhere, so a
//   cluster without a collector sees no connection errors.
// - OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, OTEL_EXPORTER_OTLP_(TRACES_)HEADERS/TIMEOUT: as specified.

import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type Context,
  type ContextManager,
  context,
  defaultTextMapGetter,
  isSpanContextValid,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from '@opentelemetry/core';
import {
  defaultResource,
  detectResources,
  envDetector,
  resourceFromAttributes,
} from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ConsoleSpanExporter,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';

/** `service.name` (a literal: the semantic-conventions index costs ~6 ms of start-up to import). */
const ATTR_SERVICE_NAME = 'service.name';

export interface Telemetry {
  /** A tracer named after the component. */
  tracer: Tracer;
  /** Where spans go: `otlp <url>`, `console`, `in-process only (...)`, or `disabled (...)`. */
  exportTarget: string;
  /** Flushes pending spans (bounded by the exporter's timeout) and unregisters everything. */
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  /** Replaces whatever the environment asks for, OTEL_SDK_DISABLED included (tests). */
  exporter?: SpanExporter;
  /** Export each span as it ends instead of batching (tests). */
  simple?: boolean;
}

/** AsyncLocalStorage-backed active context, so `startActiveSpan` and `context.with` follow awaits. */
class AsyncLocalContextManager implements ContextManager {
  #storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.#storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.#storage.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const manager = this;
    const fn = target as unknown as (...args: unknown[]) => unknown;
    return function (this: unknown, ...args: unknown[]) {
      return manager.with(ctx, () => fn.apply(this, args));
    } as unknown as T;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.#storage.disable();
    return this;
  }
}

function truthy(value: string | undefined): boolean {
  return ['true', '1', 'yes', 'on'].includes((value ?? '').trim().toLowerCase());
}

function exporterNames(env: Record<string, string | undefined>): string[] {
  const raw = env.OTEL_TRACES_EXPORTER?.trim();
  if (!raw) return ['otlp'];
  return [
    ...new Set(
      raw
        .split(',')
        .map((s) => s.trim().toLowerCase())
        .filter(Boolean),
    ),
  ];
}

function unregister(): void {
  trace.disable();
  context.disable();
  propagation.disable();
}

function register(provider: BasicTracerProvider): void {
  // A second start in one process (tests) replaces the first instead of being ignored.
  unregister();
  context.setGlobalContextManager(new AsyncLocalContextManager());
  propagation.setGlobalPropagator(
    new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }),
  );
  trace.setGlobalTracerProvider(provider);
}

/** A processor that keeps nothing: spans are recorded (they have ids, attributes) but go nowhere. */
const DISCARD: SpanProcessor = {
  onStart() {},
  onEnd() {},
  forceFlush: () => Promise.resolve(),
  shutdown: () => Promise.resolve(),
};

/**
 * Starts tracing for one component (`slipstream-webhook`, `slipstream-daemon`). Call it before the
 * component's other modules are imported. Never throws for a bad configuration: it says what it
 * did in `exportTarget` and falls back to in-process tracing.
 */
export async function startTelemetry(
  serviceName: string,
  options: TelemetryOptions = {},
): Promise<Telemetry> {
  const env = process.env;
  if (!options.exporter && truthy(env.OTEL_SDK_DISABLED)) {
    unregister();
    return {
      tracer: trace.getTracer(serviceName),
      exportTarget: 'disabled (OTEL_SDK_DISABLED)',
      shutdown: () => Promise.resolve(),
    };
  }

  let exporter = options.exporter;
  let exportTarget = exporter ? 'custom exporter' : '';
  if (!exporter) {
    const names = exporterNames(env);
    const endpoint =
      env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
    if (names.includes('none')) {
      exportTarget = 'in-process only (OTEL_TRACES_EXPORTER=none)';
    } else if (names.includes('console')) {
      exporter = new ConsoleSpanExporter();
      exportTarget = 'console';
    } else if (names.includes('otlp') && endpoint) {
      // Loaded only when used: the exporter and its transformer are a third of the tracing start-up cost.
      const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
      exporter = new OTLPTraceExporter();
      const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || env.OTEL_EXPORTER_OTLP_PROTOCOL)?.trim();
      exportTarget = `otlp http/json ${endpoint}`;
      if (protocol && protocol !== 'http/json')
        exportTarget += ` (protocol ${protocol} is not supported here)`;
    } else if (names.includes('otlp')) {
      exportTarget = 'in-process only (OTEL_EXPORTER_OTLP_ENDPOINT is not set)';
    } else {
      exportTarget = `in-process only (unsupported OTEL_TRACES_EXPORTER=${names.join(',')})`;
    }
  }

  const resource = defaultResource()
    .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }))
    // OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME win over the component's own name.
    .merge(detectResources({ detectors: [envDetector] }));

  let processor: SpanProcessor = DISCARD;
  if (exporter)
    processor = options.simple ? new SimpleSpanProcessor(exporter) : new BatchSpanProcessor(exporter);
  const provider = new BasicTracerProvider({ resource, spanProcessors: [processor] });
  register(provider);

  let stopped: Promise<void> | undefined;
  return {
    tracer: provider.getTracer(serviceName),
    exportTarget,
    shutdown() {
      stopped ??= provider
        .shutdown()
        .catch(() => {})
        .finally(() => {
          // Leave the globals alone if another start has replaced this one meanwhile.
          const global = trace.getTracerProvider() as { getDelegate?: () => unknown };
          if (global.getDelegate?.() === provider) unregister();
        });
      return stopped;
    },
  };
}

export interface InMemoryTelemetry extends Telemetry {
  exporter: InMemorySpanExporter;
}

/** Tests: installs tracing that keeps every finished span in memory (`exporter.getFinishedSpans()`). */
export async function startInMemoryTelemetry(serviceName: string): Promise<InMemoryTelemetry> {
  const exporter = new InMemorySpanExporter();
  const telemetry = await startTelemetry(serviceName, { exporter, simple: true });
  return { ...telemetry, exporter };
}

/** The W3C `traceparent` of a span (or span context); undefined when it carries no valid context. */
export function traceparentOf(span: Span | SpanContext): string | undefined {
  const sc = 'spanContext' in span ? span.spanContext() : span;
  if (!isSpanContextValid(sc)) return undefined;
  const flags = (sc.traceFlags & 0xff).toString(16).padStart(2, '0');
  return `00-${sc.traceId}-${sc.spanId}-${flags}`;
}

/** Reads a W3C `traceparent` (e.g. the `hints.slipstream.dev/trace` annotation); undefined when invalid. */
export function spanContextFromTraceparent(value: string | undefined): SpanContext | undefined {
  if (typeof value !== 'string' || value.length > 256) return undefined;
  const extracted = new W3CTraceContextPropagator().extract(
    ROOT_CONTEXT,
    { traceparent: value },
    defaultTextMapGetter,
  );
  const sc = trace.getSpanContext(extracted);
  return sc && isSpanContextValid(sc) ? sc : undefined;
}

/** A span link to the trace recorded in an annotation, for `startSpan(name, { links })`. */
export function linkFromTraceparent(value: string | undefined): Link[] {
  const sc = spanContextFromTraceparent(value);
  return sc ? [{ context: sc }] : [];
}

/** The context carried by incoming headers (`traceparent`, `tracestate`, `baggage`), for a server span's parent. */
export function contextFromHeaders(headers: Record<string, string | string[] | undefined>): Context {
  if (headers.traceparent === undefined) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, headers);
}
