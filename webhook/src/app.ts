// The HTTP face of the webhook, over HTTP/1.1 and h2 alike: the review handler (checks the
// client and the body, waits for the gate, calls the pure `review`, records one span per review,
// answers) and the three other routes (health, readiness, errors). Bad input gets a 4xx JSON
// error; nothing a client sends makes it answer 5xx or stop serving.
//
// No web framework: the routes are three fixed paths. Express, even bundled, cost 15 MB of RSS
// (2.7 MB of heap) and 170 ms or more of start-up on the benchmark machine for that, and it
// swaps the prototypes of Node's request and response objects, which breaks h2's.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { type Attributes, SpanKind, SpanStatusCode, type Tracer, trace } from '@opentelemetry/api';
import type { Logger } from '@slipstream/shared/adapters/log';
import { contextFromHeaders, traceparentOf } from '@slipstream/shared/adapters/telemetry';
import type { Policy } from '@slipstream/shared/core/policy';
import { answerReview } from './answer.ts';
import { checkContentType, declaredLength, HttpError, readBody } from './body.ts';
import { ReviewGate } from './gate.ts';
import type { LargeReviews } from './large-reviews.ts';
import type { WebhookMetrics } from './metrics.ts';
import type { ReviewOutcome } from './review.ts';

export type Request = IncomingMessage | Http2ServerRequest;
export type Response = ServerResponse | Http2ServerResponse;

export interface AppOptions {
  /** The policy in force; called once per review (a reload swaps what it returns). */
  policy: () => Policy;
  log: Logger;
  /** False while starting or shutting down: /readyz answers 503. */
  ready?: () => boolean;
  tracer?: Tracer;
  metrics?: WebhookMetrics;
  /** Bounds concurrent reviews (default limits when absent). */
  gate?: ReviewGate;
  /** Where large reviews run; absent: on the event loop, like the others. */
  large?: LargeReviews;
  /** With --client-ca: why this request's client may not ask for reviews (undefined: it may). */
  clientRefusal?: (req: Request) => string | undefined;
}

export const SPAN_NAME = 'admission.review';

const h2 = (req: Request): req is Http2ServerRequest => req.httpVersionMajor === 2;

interface SendOptions {
  /** Close the HTTP/1.1 connection after the answer (the body was not read to its end). */
  close?: boolean;
  /** The Allow header of a 405. */
  allow?: string;
}

function sendJson(
  req: Request,
  res: Response,
  status: number,
  body: unknown,
  options: SendOptions = {},
): void {
  const { close = false } = options;
  // One Buffer, written with its length: the cheapest path through TLS (a single write).
  const data = body instanceof Uint8Array ? body : Buffer.from(JSON.stringify(body));
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': data.length,
  };
  if (options.allow !== undefined) headers.allow = options.allow;
  // h2 has no Connection header: a stream ends on its own, the connection stays.
  if (close && !h2(req)) headers.connection = 'close';
  (res as ServerResponse).writeHead(status, headers);
  if (req.method === 'HEAD') res.end();
  else res.end(data);
  // The body was not read: an h2 stream discards it (the connection carries other streams).
  if (close && h2(req)) req.resume();
}

/** Ends the exchange without an answer: the h2 stream, or the HTTP/1.1 connection. */
function abort(req: Request, res: Response): void {
  if (h2(req)) req.stream.close();
  else (res as ServerResponse).destroy();
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

/** Logs when the gate starts refusing and when it has room again, not once per refusal. */
function busyReporter(gate: ReviewGate, log: Logger): (refused: boolean) => void {
  let since: number | undefined;
  return (refused) => {
    if (refused && since === undefined) {
      since = gate.refused - 1;
      log.warn('too many reviews in flight: answering 429 (the API server admits those Services unchanged)', {
        ...gate.limits,
      });
    } else if (!refused && since !== undefined) {
      log.info('reviews in flight are back under the limit', { refused: gate.refused - since });
      since = undefined;
    }
  };
}

/** POST /mutate: never throws; every failure is answered here (4xx for bad input, 500 for a bug). */
export function reviewHandler(options: AppOptions): (req: Request, res: Response) => Promise<void> {
  const tracer = options.tracer ?? trace.getTracer('slipstream-webhook');
  const gate = options.gate ?? new ReviewGate();
  const busy = busyReporter(gate, options.log);
  return async (req, res) => {
    const started = performance.now();
    const span = tracer.startSpan(
      SPAN_NAME,
      { kind: SpanKind.SERVER, attributes: { 'http.request.method': 'POST', 'url.path': '/mutate' } },
      contextFromHeaders(req.headers),
    );
    let ticket: ReturnType<ReviewGate['admit']>;
    try {
      const refusal = options.clientRefusal?.(req);
      if (refusal !== undefined) throw new HttpError(403, refusal, true);
      checkContentType(req.headers);
      const declared = declaredLength(req.headers);
      ticket = gate.admit(declared);
      busy(ticket === undefined);
      if (ticket === undefined) {
        throw new HttpError(
          429,
          `too many reviews in flight (at most ${gate.limits.maxInFlight}, ${gate.limits.maxLarge} of them over ${gate.limits.largeBytes} bytes)`,
          true,
        );
      }
      const bytes = await readBody(req, declared);
      const traceparent = traceparentOf(span);
      const policy = options.policy();
      const result =
        ticket.large && options.large
          ? await options.large.review(bytes, policy, traceparent)
          : await ticket.run(() => answerReview(bytes, policy, traceparent));
      if (!result.ok) throw new HttpError(result.status, result.message);
      span.setAttributes(outcomeAttributes(result.outcome));
      span.setAttribute('http.response.status_code', 200);
      sendJson(req, res, 200, result.answer);
      options.metrics?.reviewed(result.outcome, (performance.now() - started) / 1000);
    } catch (error) {
      const status = errorStatus(error);
      options.metrics?.rejected(status, (performance.now() - started) / 1000);
      const message = error instanceof Error ? error.message : String(error);
      span.setAttribute('http.response.status_code', status);
      span.setStatus({ code: SpanStatusCode.ERROR, message });
      if (status >= 500) options.log.error('unexpected error reviewing a request', { error: message });
      if (res.headersSent) abort(req, res);
      else
        sendJson(
          req,
          res,
          status,
          { error: status >= 500 ? 'internal error' : message },
          { close: (error as HttpError).close === true },
        );
    } finally {
      ticket?.release();
      span.end();
    }
  };
}

type Route = 'mutate' | 'healthz' | 'readyz';
const ROUTES: Record<string, Route> = { '/mutate': 'mutate', '/healthz': 'healthz', '/readyz': 'readyz' };

/** The route of a request target: its path without the query, case-insensitive, one trailing slash allowed. */
export function routeOf(url: string | undefined): Route | undefined {
  const target = url ?? '';
  const q = target.indexOf('?');
  let path = (q === -1 ? target : target.slice(0, q)).toLowerCase();
  if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1);
  return Object.hasOwn(ROUTES, path) ? ROUTES[path] : undefined;
}

/** The server's request listener, for HTTP/1.1 and h2 requests alike. */
export function createRequestListener(options: AppOptions): (req: Request, res: Response) => void {
  const ready = options.ready ?? (() => true);
  const reviewer = reviewHandler(options);
  return (req, res) => {
    const route = routeOf(req.url);
    const method = req.method;
    if (route === 'mutate') {
      if (method !== 'POST') {
        sendJson(req, res, 405, { error: 'use POST /mutate' }, { allow: 'POST' });
        return;
      }
      // The handler answers every failure itself; this only guards against a bug escaping it.
      reviewer(req, res).catch((error: unknown) => {
        options.log.error('review handler failed', { error: String(error) });
        abort(req, res);
      });
    } else if (route !== undefined && method !== 'GET' && method !== 'HEAD') {
      sendJson(req, res, 405, { error: `use GET /${route}` }, { allow: 'GET, HEAD' });
    } else if (route === 'healthz') {
      sendJson(req, res, 200, { status: 'ok' });
    } else if (route === 'readyz') {
      if (ready()) sendJson(req, res, 200, { status: 'ready', policy: options.policy().id });
      else sendJson(req, res, 503, { status: 'not ready' });
    } else {
      sendJson(req, res, 404, { error: 'not found' });
    }
  };
}
