// The client side of the stand-in's own tests: plain fetch requests and a watch stream reader,
// so that the wire format itself is what the tests see (client-node is used where it matters).

import { vi } from 'vitest';
import type { FakeApiServer } from './fake-apiserver.ts';
import type { Json } from './resources.ts';

export const eventually = (fn: () => void | Promise<void>) =>
  vi.waitFor(fn, { timeout: 15_000, interval: 10 });

export function svc(name: string, namespace = 'default', port = 80, extra: Json = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec: { ports: [{ port }] },
    ...extra,
  };
}

export const b64 = (text: string) => Buffer.from(text).toString('base64');

export function tlsSecret(name: string, extra: Json = {}): Json {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: 'slipstream-system' },
    type: 'kubernetes.io/tls',
    data: { 'tls.crt': b64('cert'), 'tls.key': b64('key') },
    ...extra,
  };
}

export function webhookConfiguration(name: string, hooks = 1): Json {
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name },
    webhooks: Array.from({ length: hooks }, (_, i) => ({
      name: `hook-${i}.slipstream.dev`,
      admissionReviewVersions: ['v1'],
      sideEffects: 'None',
      clientConfig: {
        service: { name: 'slipstream-webhook', namespace: 'slipstream-system', path: '/mutate' },
      },
    })),
  };
}

export interface Stream {
  status: number;
  headers: Headers;
  events: Json[];
  readonly ended: boolean;
  readonly failed: unknown;
  close(): void;
}

/** Opens a watch and collects its events as they arrive. */
export async function openWatch(server: FakeApiServer, path: string): Promise<Stream> {
  const controller = new AbortController();
  const res = await fetch(`${server.url}${path}`, {
    headers: { authorization: `Bearer ${server.token}` },
    signal: controller.signal,
  });
  const events: Json[] = [];
  let ended = false;
  let failed: unknown;
  void (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      if (!res.body) throw new Error('no body');
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk, { stream: true });
        for (let i = buffer.indexOf('\n'); i >= 0; i = buffer.indexOf('\n')) {
          events.push(JSON.parse(buffer.slice(0, i)) as Json);
          buffer = buffer.slice(i + 1);
        }
      }
      ended = true;
    } catch (error) {
      failed = error;
    }
  })();
  return {
    status: res.status,
    headers: res.headers,
    events,
    get ended() {
      return ended;
    },
    get failed() {
      return failed;
    },
    close: () => controller.abort(),
  };
}

/** One JSON request with the server's token. */
export async function api(server: FakeApiServer, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

export async function patch(server: FakeApiServer, path: string, contentType: string, body: unknown) {
  const res = await fetch(`${server.url}${path}`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${server.token}`, 'content-type': contentType },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

export function rvOf(object: unknown): number {
  const metadata = (object as { metadata?: { resourceVersion?: string } }).metadata;
  return Number(metadata?.resourceVersion);
}

export function objectOf(event: Json | undefined): Json {
  return (event?.object ?? {}) as Json;
}

export function typeOf(event: Json | undefined): unknown {
  return event?.type;
}

export const namesOf = (list: Json) => (list.items as Json[]).map((i) => (i.metadata as Json).name);
