// The trace of one sync: a root `sync` span with `compute`, `diff` and `commit` children, links to
// the admission reviews whose hints it programmed (the `hints.slipstream.dev/trace` annotation),
// and one searchable `service.programmed` event per Service it changed (Jaeger searches event
// fields, not links). Quarantined Services get a `service.quarantined` event with the reason.

import { type Context, context, type Link, type Span, SpanStatusCode, trace } from '@opentelemetry/api';
import { spanContextFromTraceparent } from '@slipstream/shared/adapters/telemetry';
import type { Change } from '@slipstream/shared/core/change';
import type { Ruleset, ServiceEntry } from '@slipstream/shared/core/ruleset';
import { splitServiceKey } from '@slipstream/shared/core/service';
import type { SyncResult } from './result.ts';

const MAX_LINKS = 128;
const tracer = () => trace.getTracer('slipstream-daemon');

export class SyncTrace {
  readonly #span: Span;
  readonly #ctx: Context;

  constructor(triggers: readonly string[]) {
    this.#span = tracer().startSpan('sync', {
      root: true,
      attributes: {
        'slipstream.sync.trigger': triggers[0] ?? 'resync',
        'slipstream.sync.triggers': [...triggers],
      },
    });
    this.#ctx = trace.setSpan(context.active(), this.#span);
  }

  /** A child span (`compute`, `diff`, `commit`); ended by the caller. */
  child(name: string, attributes: Record<string, string | number | boolean> = {}): Span {
    return tracer().startSpan(name, { attributes }, this.#ctx);
  }

  /** Records what a Change does: links to the reviews, one event per Service. */
  change(
    change: Change,
    desired: Ruleset,
    gone: ReadonlyMap<string, ServiceEntry> | undefined,
    belief?: Ruleset | null,
  ): void {
    const links: Link[] = [];
    const seen = new Set<string>();
    for (const key of change.summary.services) {
      if (links.length >= MAX_LINKS) break;
      const entry = desired.services.get(key) ?? gone?.get(key) ?? belief?.services.get(key);
      const sc = spanContextFromTraceparent(entry?.trace);
      if (!sc || seen.has(sc.spanId)) continue;
      seen.add(sc.spanId);
      const { namespace, name } = splitServiceKey(key);
      links.push({
        context: { ...sc, isRemote: true },
        attributes: { 'k8s.service.name': name, 'k8s.namespace.name': namespace },
      });
    }
    this.#span.addLinks(links);
    for (const key of change.summary.services.slice(0, MAX_LINKS)) {
      const entry = desired.services.get(key);
      const { namespace, name } = splitServiceKey(key);
      this.#span.addEvent('service.programmed', {
        'k8s.namespace.name': namespace,
        'k8s.service.name': name,
        'slipstream.decision.offload': entry
          ? entry.decision.offload.map((o) => `${o.port}/${o.protocol}`).join(',') || 'none'
          : 'removed',
        'slipstream.decision.reason': entry?.decision.reason ?? 'Service removed',
      });
    }
  }

  quarantined(key: string, reason: string): void {
    const { namespace, name } = splitServiceKey(key);
    this.#span.addEvent('service.quarantined', {
      'k8s.namespace.name': namespace,
      'k8s.service.name': name,
      'slipstream.quarantine.reason': reason,
    });
  }

  /** Ends the span with the result's attributes (errors recorded on it). */
  end(result: SyncResult, error?: unknown): void {
    this.#span.setAttributes({
      'slipstream.services': result.services,
      'slipstream.elements.added': result.elementsAdded,
      'slipstream.elements.removed': result.elementsRemoved,
      'slipstream.chains': result.chains,
      'slipstream.degraded': result.degraded,
      'slipstream.sync.result': result.result,
      'slipstream.kernel.writes': result.writes,
      'slipstream.sync.read_back': result.readBack,
      'slipstream.sync.drift': result.drift,
      'slipstream.quarantined': result.quarantined,
    });
    if (result.evicted) {
      this.#span.setAttributes({
        'slipstream.evicted.ports': result.evicted.ports,
        'slipstream.evicted.connections': result.evicted.connections ?? -1,
      });
    }
    if (result.result === 'error') {
      const message = result.error ?? 'sync failed';
      this.#span.recordException(error instanceof Error ? error : new Error(message));
      this.#span.setStatus({ code: SpanStatusCode.ERROR, message });
    } else {
      this.#span.setStatus({ code: SpanStatusCode.OK });
    }
    this.#span.end();
  }
}

/** Ends a child span, recording an error on it when there is one. */
export function endChild(span: Span, error?: unknown, message?: string): void {
  if (error !== undefined) {
    span.recordException(error instanceof Error ? error : new Error(message ?? String(error)));
    span.setStatus({ code: SpanStatusCode.ERROR, message: message ?? String(error) });
  } else {
    span.setStatus({ code: SpanStatusCode.OK });
  }
  span.end();
}
