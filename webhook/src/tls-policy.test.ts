// The review port's TLS over real sockets: which suites and versions a client can get, h2 next to
// HTTP/1.1, connections that go silent, and client certificates with --client-ca.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConnectionOptions, connect, type TLSSocket } from 'node:tls';
import { memoryLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadFixtures } from '../../test/lib/admission-fixtures.ts';
import { postReview, send } from '../../test/lib/webhook-client.ts';
import type { AdmissionReviewResponse } from './admission.ts';
import { createCa, type KeyPair } from './certs.ts';
import { review } from './review.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';
import { selfSignedCertificate } from './tls.ts';

const policy = loadDefaultPolicy();
const postgres = loadFixtures(policy.id).find((f) => f.name === 'postgres-create')!;
/** What the server answers (it has no tracer here, so no trace context): the pure review's answer. */
const expected = (() => {
  const result = review(postgres.review, { policy });
  if (!result.ok) throw new Error(result.error);
  return result.review;
})();

interface Handshake {
  ok: boolean;
  protocol?: string | null;
  cipher?: string;
  alpn?: string | false | null;
  error?: string;
}

/** Opens a TLS connection with these client options and reports what was negotiated. */
function handshake(port: number, options: ConnectionOptions = {}): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    socket.once('secureConnect', () => {
      resolve({
        ok: true,
        protocol: socket.getProtocol(),
        cipher: socket.getCipher().name,
        alpn: socket.alpnProtocol,
      });
      socket.destroy();
    });
    socket.once('error', (error) =>
      resolve({ ok: false, error: (error as NodeJS.ErrnoException).code ?? error.message }),
    );
  });
}

/** Resolves with how long after `start` the peer closed the connection (or rejects after `maxMs`). */
function closedWithin(socket: { once(e: 'close', f: () => void): unknown }, start: number, maxMs: number) {
  return new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still open after ${maxMs} ms`)), maxMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(performance.now() - start);
    });
  });
}

describe('TLS policy', () => {
  let server: WebhookServer;
  beforeAll(async () => {
    server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log: memoryLogger(),
    });
  });
  afterAll(() => server?.close(500));

  it.each([
    ['CBC with SHA-1 (ECDHE-ECDSA-AES128-SHA)', 'ECDHE-ECDSA-AES128-SHA'],
    ['CBC with SHA-256 (ECDHE-ECDSA-AES128-SHA256)', 'ECDHE-ECDSA-AES128-SHA256'],
    ['CCM (ECDHE-ECDSA-AES128-CCM)', 'ECDHE-ECDSA-AES128-CCM'],
    ['ARIA (ECDHE-ECDSA-ARIA128-GCM-SHA256)', 'ECDHE-ECDSA-ARIA128-GCM-SHA256'],
  ])('refuses a TLS 1.2 client that offers only %s', async (_what, cipher) => {
    const result = await handshake(server.port, { maxVersion: 'TLSv1.2', ciphers: cipher });
    expect(result.ok).toBe(false);
  });

  it('refuses TLS 1.1', async () => {
    const result = await handshake(server.port, {
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.1',
      ciphers: 'DEFAULT@SECLEVEL=0',
    });
    expect(result.ok).toBe(false);
  });

  it('accepts TLS 1.2 with ECDHE and AEAD, and TLS 1.3 as it is', async () => {
    for (const cipher of [
      'ECDHE-ECDSA-AES128-GCM-SHA256',
      'ECDHE-ECDSA-AES256-GCM-SHA384',
      'ECDHE-ECDSA-CHACHA20-POLY1305',
    ]) {
      expect(await handshake(server.port, { maxVersion: 'TLSv1.2', ciphers: cipher })).toMatchObject({
        ok: true,
        protocol: 'TLSv1.2',
        cipher,
      });
    }
    expect(await handshake(server.port)).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
  });

  it('keeps the policy when the certificate is replaced', async () => {
    server.setCertificate(await selfSignedCertificate());
    expect(
      (await handshake(server.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA' })).ok,
    ).toBe(false);
    expect(await handshake(server.port, { maxVersion: 'TLSv1.2' })).toMatchObject({
      ok: true,
      protocol: 'TLSv1.2',
    });
  });

  it('offers h2 and http/1.1 by ALPN', async () => {
    expect((await handshake(server.port, { ALPNProtocols: ['h2', 'http/1.1'] })).alpn).toBe('h2');
    expect((await handshake(server.port, { ALPNProtocols: ['http/1.1'] })).alpn).toBe('http/1.1');
    // A client without ALPN gets HTTP/1.1.
    const answer = await send(server.url, { method: 'GET', path: '/healthz' });
    expect(answer.status).toBe(200);
  });
});

describe('h2', () => {
  let server: WebhookServer;
  beforeAll(async () => {
    server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log: memoryLogger(),
    });
  });
  afterAll(() => server?.close(500));

  it('answers AdmissionReviews, health and errors over h2, several streams on one connection', async () => {
    const session = h2connect(server.url, { ca: server.certificate, servername: 'localhost' });
    const call = (headers: Record<string, string | number>, body?: string) =>
      new Promise<{ status: number; headers: Record<string, unknown>; text: string }>((resolve, reject) => {
        const stream = session.request(headers);
        const chunks: Buffer[] = [];
        let responseHeaders: Record<string, unknown> = {};
        stream.on('response', (h) => {
          responseHeaders = h;
        });
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () =>
          resolve({
            status: Number(responseHeaders[':status']),
            headers: responseHeaders,
            text: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        stream.on('error', reject);
        stream.end(body);
      });
    try {
      const body = JSON.stringify(postgres.review);
      const reviews = await Promise.all(
        Array.from({ length: 5 }, () =>
          call(
            {
              ':method': 'POST',
              ':path': '/mutate?timeout=3s',
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
            body,
          ),
        ),
      );
      for (const answer of reviews) {
        expect(answer.status).toBe(200);
        expect(answer.headers['content-type']).toBe('application/json');
        expect(JSON.parse(answer.text)).toEqual(expected);
      }
      expect((await call({ ':method': 'GET', ':path': '/healthz' })).text).toBe('{"status":"ok"}');
      const bad = await call({ ':method': 'POST', ':path': '/mutate', 'content-type': 'text/plain' }, 'x');
      expect(bad.status).toBe(415);
      const wrong = await call({ ':method': 'GET', ':path': '/mutate' });
      expect(wrong.status).toBe(405);
      expect(wrong.headers.allow).toBe('POST');
    } finally {
      session.close();
    }
  });
});

describe('connections that go silent are closed', () => {
  let server: WebhookServer;
  beforeAll(async () => {
    server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log: memoryLogger(),
      timeouts: { handshakeMs: 300, firstRequestMs: 300, idleMs: 3000 },
    });
  });
  afterAll(() => server?.close(500));

  it('a TCP connection that never starts the TLS handshake', async () => {
    const start = performance.now();
    const socket = tcpConnect(server.port, '127.0.0.1');
    expect(await closedWithin(socket, start, 5000)).toBeGreaterThanOrEqual(250);
  });

  it('a TLS connection that never sends a request (HTTP/1.1)', async () => {
    const start = performance.now();
    const socket = connect({
      host: '127.0.0.1',
      port: server.port,
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    await new Promise((r) => socket.once('secureConnect', r));
    expect(await closedWithin(socket, start, 5000)).toBeGreaterThanOrEqual(250);
  });

  it('an h2 connection that never opens a stream', async () => {
    const start = performance.now();
    const session = h2connect(server.url, { rejectUnauthorized: false });
    session.on('error', () => {});
    await new Promise((r) => session.once('connect', r));
    expect(await closedWithin(session, start, 5000)).toBeGreaterThanOrEqual(250);
  });

  it('keeps a kept-alive connection between reviews longer than a silent new one', async () => {
    const socket = connect({
      host: '127.0.0.1',
      port: server.port,
      rejectUnauthorized: false,
      ALPNProtocols: ['http/1.1'],
    });
    await new Promise((r) => socket.once('secureConnect', r));
    const body = JSON.stringify(postgres.review);
    socket.write(
      `POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
    await new Promise((r) => socket.once('data', r));
    const answered = performance.now();
    // Open well past the first-request timeout (300 ms), closed at the idle timeout (3 s).
    const closed = await closedWithin(socket as TLSSocket, answered, 8000);
    expect(closed).toBeGreaterThan(2000);
  });
});

describe('--client-ca', () => {
  const dir = mkdtempSync(join(tmpdir(), 'slipstream-client-ca-'));
  let ca: KeyPair;
  let server: WebhookServer;

  async function clientCertificate(issuer: KeyPair, name: string): Promise<KeyPair> {
    const { generate } = await import('selfsigned');
    const pems = await generate([{ name: 'commonName', value: name }], {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notBeforeDate: new Date(Date.now() - 60_000),
      notAfterDate: new Date(Date.now() + 3600_000),
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true },
        { name: 'extKeyUsage', clientAuth: true },
      ],
      ca: issuer,
    });
    return { cert: pems.cert, key: pems.private };
  }

  beforeAll(async () => {
    ca = await createCa({ name: 'apiserver-clients', validityMs: 3600_000 });
    writeFileSync(join(dir, 'ca.crt'), ca.cert);
    server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log: memoryLogger(),
      clientAuth: { caFile: join(dir, 'ca.crt'), names: ['kube-apiserver'] },
    });
  });
  afterAll(async () => {
    await server?.close(500);
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers reviews for a client certificate from the CA that names an allowed client', async () => {
    const client = await clientCertificate(ca, 'kube-apiserver');
    const answer = await postReview(server.url, postgres.review, { cert: client.cert, key: client.key });
    expect(answer.status).toBe(200);
    expect(answer.json as AdmissionReviewResponse).toEqual(expected);
  });

  it('refuses reviews (403) without a certificate, from another CA, or for another name; health stays open', async () => {
    const other = await createCa({ name: 'someone-else', validityMs: 3600_000 });
    const cases: [string, { cert?: string; key?: string }, RegExp][] = [
      ['none', {}, /client certificate is required/],
      ['another CA', await clientCertificate(other, 'kube-apiserver'), /not accepted/],
      ['another name', await clientCertificate(ca, 'kubelet'), /names \["kubelet"\], none of --client-name/],
    ];
    for (const [what, tls, message] of cases) {
      const answer = await postReview(server.url, postgres.review, tls);
      expect(answer.status, what).toBe(403);
      expect((answer.json as { error: string }).error, what).toMatch(message);
    }
    expect((await send(server.url, { method: 'GET', path: '/healthz' })).status).toBe(200);
    expect((await send(server.url, { method: 'GET', path: '/readyz' })).status).toBe(200);
  });
});
