// Test support: a small HTTPS client for the webhook (127.0.0.1 only), trusting the server's own certificate.

import { type Agent, request } from 'node:https';
import type { TLSSocket } from 'node:tls';

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
  /** The certificate the server presented on this connection (DER, base64). */
  peerCertificate?: string;
}

export interface SendOptions {
  method?: string;
  path?: string;
  headers?: Record<string, string | number>;
  body?: string | Buffer;
  agent?: Agent | false;
  ca?: string;
  /** A client certificate and its key. */
  cert?: string;
  key?: string;
  timeoutMs?: number;
}

export function send(baseUrl: string, options: SendOptions = {}): Promise<Answer> {
  const url = new URL(options.path ?? '/mutate', baseUrl);
  if (url.hostname !== '127.0.0.1' && url.hostname !== 'localhost')
    throw new Error('tests talk to loopback only');
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: options.method ?? 'POST',
        // Always framed: without a length, Node sends a GET's body unframed (the server would read it as the next request).
        headers: {
          'content-length': options.body === undefined ? 0 : Buffer.byteLength(options.body),
          ...options.headers,
        },
        agent: options.agent ?? false,
        ...(options.ca ? { ca: options.ca } : { rejectUnauthorized: false }),
        ...(options.cert && options.key ? { cert: options.cert, key: options.key } : {}),
        timeout: options.timeoutMs ?? 10_000,
      },
      (res) => {
        // Read now: with a keep-alive agent the socket is detached from the response at its end.
        const raw = (res.socket as TLSSocket | null)?.getPeerCertificate?.()?.raw;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json,
            ...(raw ? { peerCertificate: raw.toString('base64') } : {}),
          });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(options.body);
  });
}

/** POSTs a JSON body to /mutate the way the API server does (with its `?timeout=` query). */
export function postReview(baseUrl: string, body: unknown, options: SendOptions = {}): Promise<Answer> {
  return send(baseUrl, {
    path: '/mutate?timeout=10s',
    ...options,
    headers: { 'content-type': 'application/json', accept: 'application/json', ...options.headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}
