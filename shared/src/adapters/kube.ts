// The client-node helpers both components use: where the API server's configuration comes from,
// how an API error reads in a log line, and the per-request options (abort, timeout, a patch's
// content type, one connection pool for a sequence of requests).

import {
  ApiException,
  type ConfigurationOptions,
  KubeConfig,
  Observable,
  type RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';
import { isRecord } from '../core/record.ts';

/** `path`, else the in-cluster configuration inside a Pod, else the default kubeconfig ($KUBECONFIG, ~/.kube/config). */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error(`kubeconfig${path ? ` ${path}` : ''} has no current cluster`);
  return kc;
}

/** The HTTP status of an API error (client-node's ApiException, or an error carrying `code`/`statusCode`). */
export function statusCode(error: unknown): number | undefined {
  if (error instanceof ApiException) return error.code;
  if (!isRecord(error)) return undefined;
  if (typeof error.code === 'number') return error.code;
  return typeof error.statusCode === 'number' ? error.statusCode : undefined;
}

/**
 * One line for a log or a status field: `HTTP 409 AlreadyExists: secrets "x" already exists` for
 * an API error (the Status in the body, not client-node's message, which carries whole bodies and
 * headers), `TypeError: fetch failed (ECONNREFUSED)` for a network failure.
 */
export function describeError(error: unknown): string {
  if (!isRecord(error)) return String(error);
  const code = statusCode(error);
  if (code !== undefined) {
    let body = error.body;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        // not a Status: shown as text
      }
    }
    let reason = '';
    let message = '';
    if (isRecord(body) && typeof body.message === 'string') {
      message = body.message;
      if (typeof body.reason === 'string') reason = body.reason;
    } else if (typeof body === 'string' && body !== '') {
      message = body.slice(0, 200);
    } else if (typeof error.message === 'string') {
      message = (error.message.split('\n')[0] ?? '').replace(/^HTTP-Code: \d+$/, '').trim();
    }
    return `HTTP ${code}${reason ? ` ${reason}` : ''}${message ? `: ${message}` : ''}`;
  }
  const name = typeof error.name === 'string' && error.name !== 'Error' ? `${error.name}: ` : '';
  const base = `${name}${typeof error.message === 'string' ? error.message : ''}`;
  const cause = isRecord(error.cause) ? String(error.cause.code ?? error.cause.message ?? '') : '';
  return cause && !base.includes(cause) ? `${base} (${cause})` : base;
}

/**
 * Lets requests share a connection pool: client-node builds a new undici Agent (so a new
 * connection and TLS handshake) for every request; the first request that carries this records
 * its dispatcher and the later ones reuse it. A new object starts afresh (rotated credentials
 * are picked up).
 */
export interface SharedConnection {
  dispatcher?: ReturnType<RequestContext['getDispatcher']>;
}

export interface RequestControl {
  /** Aborts the request. */
  signal?: AbortSignal;
  /** Aborts the request after this long. */
  timeoutMs?: number;
  /** The body's Content-Type (a PATCH's strategy: PatchStrategy.JsonPatch, MergePatch, …). */
  contentType?: string;
  connection?: SharedConnection;
}

/** Per-request middleware (client-node's Observable flavour), appended to the configuration's own. */
export function requestOptions(control: RequestControl): ConfigurationOptions {
  return {
    middleware: [
      {
        pre: (context: RequestContext) => {
          const signals = [
            ...(control.signal ? [control.signal] : []),
            ...(control.timeoutMs !== undefined ? [AbortSignal.timeout(control.timeoutMs)] : []),
          ];
          if (signals.length > 0) context.setSignal(AbortSignal.any(signals));
          if (control.contentType) context.setHeaderParam('Content-Type', control.contentType);
          const shared = control.connection;
          if (shared?.dispatcher) context.setDispatcher(shared.dispatcher);
          else if (shared) shared.dispatcher = context.getDispatcher();
          return new Observable(Promise.resolve(context));
        },
        post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}
