// The HTTP face of the webhook: the review handler (checks and reads the body, calls the pure
// `review`, records one span per review, answers) and the express app around it (health,
// readiness, unknown paths, errors). Bad input gets a 4xx JSON error; nothing a client sends
// makes it answer 5xx or stop serving.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Attributes, SpanKind, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api';
import type { Logger } from '@slipstream/shared/adapters/log';
import { contextFromHeaders, traceparentOf } from '@slipstream/shared/adapters/telemetry';
import type { Policy } from '@slipstream/shared/core/policy';
import express, { type NextFunction, type Request, type Response } from 'express';
import { checkContentType, HttpError, parseJsonBody, readBody } from './body.ts';
import type { WebhookMetrics } from './metrics.ts';
import { type ReviewOutcome, review } from './review.ts';

export interface AppOptions {
  /** The policy in force; called once per review (a reload swaps what it returns). */
  policy: () => Policy;
  log: Logger;
  /** False while starting or shutting down: /readyz answers 503. */
  ready?: () => boolean;
  tracer?: Tracer;
  metrics?: WebhookMetrics;
}

export const SPAN_NAME = 'admission.review';

function sendJson(res: ServerResponse, status: number, body: unknown, close = false): void {
  // One Buffer, written with its length: the cheapest path through node:https (a single TLS write).
  const data = Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': data.length,
  };
  if (close) headers.connection = 'close';
  res.writeHead(status, headers);
  res.end(data);
}

function outcomeAttributes(outcome: ReviewOutcome): Attributes {
  const attributes: Attributes = {
    'k8s.namespace.name': outcome.namespace,
    'k8s.service.name': outcome.name,
    'slipstream.admission.uid': outcome.uid,
    'slipstream.admission.kind': outcome.kind,
    'slipstream.operation': outcome.operation,
    'slipstream.dry_run': outcome.dryRun,
    'slipstream.patched': outcome.patched,
    'slipstream.decision.changed': outcome.decisionChanged,
    'slipstream.warnings': outcome.warnings,
  };
  if (outcome.skipped !== undefined) attributes['slipstream.skipped'] = outcome.skipped;
  const d = outcome.decision;
  if (d) {
    attributes['slipstream.decision.offload'] = d.offload;
    attributes['slipstream.decision.rule'] = d.rule;
    attributes['slipstream.decision.reason'] = d.reason;
    attributes['slipstream.decision.policy'] = d.policy;
  }
  return attributes;
}

function errorStatus(error: unknown): number {
  if (error instanceof HttpError) return error.status;
  const status = (error as { status?: unknown } | null)?.status;
  return typeof status === 'number' && status >= 400 && status < 500 ? status : 500;
}

/** POST /mutate: never throws; every failure is answered here (4xx for bad input, 500 for a bug). */
export function reviewHandler(
  options: AppOptions,
): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const tracer = options.tracer ?? trace.getTracer('slipstream-webhook');
  return async (req, res) => {
    const started = performance.now();
    const span = tracer.startSpan(
      SPAN_NAME,
      { kind: SpanKind.SERVER, attributes: { 'http.request.method': 'POST', 'url.path': '/mutate' } },
      contextFromHeaders(req.headers),
    );
    try {
      checkContentType(req.headers);
      const body = parseJsonBody(await readBody(req));
      const traceparent = traceparentOf(span);
      const result = review(body, { policy: options.policy(), ...(traceparent ? { traceparent } : {}) });
      if (!result.ok) throw new HttpError(400, result.error);
      span.setAttributes(outcomeAttributes(result.outcome));
      span.setAttribute('http.response.status_code', 200);
      sendJson(res, 200, result.review);
      options.metrics?.reviewed(result.outcome, (performance.now() - started) / 1000);
    } catch (error) {
      const status = errorStatus(error);
      options.metrics?.rejected(status, (performance.now() - started) / 1000);
      const message = error instanceof Error ? error.message : String(error);
      span.setAttribute('http.response.status_code', status);
      span.setStatus({ code: SpanStatusCode.ERROR, message });
      if (status >= 500) options.log.error('unexpected error reviewing a request', { error: message });
      if (res.headersSent) res.destroy();
      else
        sendJson(
          res,
          status,
          { error: status >= 500 ? 'internal error' : message },
          (error as HttpError).close === true,
        );
    } finally {
      span.end();
    }
  };
}

/**
 * The server's request listener: `POST /mutate` goes straight to the review handler, everything
 * else (health, errors, other paths and methods) through the express app. Express's per-request
 * set-up (prototype swaps on req/res, router matching, finalhandler) measured about 17 us of the
 * 90 us a review cost under load, a fifth of the throughput, for a route that needs none of it.
 */
export function createRequestListener(
  options: AppOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  const app = createApp(options);
  const review = reviewHandler(options);
  return (req, res) => {
    const url = req.url ?? '';
    if (req.method === 'POST' && (url === '/mutate' || url.startsWith('/mutate?'))) {
      // The handler answers every failure itself; this only guards against a bug escaping it.
      review(req, res).catch((error: unknown) => {
        options.log.error('review handler failed', { error: String(error) });
        res.destroy();
      });
    } else {
      app(req, res);
    }
  };
}

export function createApp(options: AppOptions): express.Express {
  const ready = options.ready ?? (() => true);
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.set('query parser', false);

  app.get('/healthz', (_req, res) => sendJson(res, 200, { status: 'ok' }));
  app.get('/readyz', (_req, res) => {
    if (ready()) sendJson(res, 200, { status: 'ready', policy: options.policy().id });
    else sendJson(res, 503, { status: 'not ready' });
  });

  // Reached only for spellings the listener does not take itself (`/mutate/`, `/Mutate`).
  app.post('/mutate', reviewHandler(options));
  app.all('/mutate', (_req, res) => {
    res.setHeader('allow', 'POST');
    sendJson(res, 405, { error: 'use POST /mutate' });
  });
  app.use((_req: Request, res: Response) => sendJson(res, 404, { error: 'not found' }));

  // Express calls this for anything thrown above, and for its own errors (a malformed URL).
  app.use((error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const status = errorStatus(error);
    const message = error instanceof Error ? error.message : String(error);
    if (status >= 500) options.log.error('unexpected error answering a request', { error: message });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendJson(
      res,
      status,
      { error: status >= 500 ? 'internal error' : message },
      (error as HttpError).close === true,
    );
  });
  return app;
}
