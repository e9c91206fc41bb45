import { X509Certificate } from 'node:crypto';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { send } from '../../test/lib/webhook-client.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';
import { selfSignedCertificate } from './tls.ts';
import { checkTlsMaterial, type TlsMaterial } from './tls-policy.ts';

const der = (pem: string) => new X509Certificate(pem).raw.toString('base64');

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('self-signed certificate', () => {
  it('is a valid P-256 server certificate for localhost and 127.0.0.1', async () => {
    const { cert, key } = await selfSignedCertificate(['webhook.example.svc', 'fd00::7']);
    checkTlsMaterial({ cert, key });
    const x509 = new X509Certificate(cert);
    expect(x509.checkHost('localhost')).toBe('localhost');
    expect(x509.checkHost('webhook.example.svc')).toBe('webhook.example.svc');
    expect(x509.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(x509.checkIP('fd00::7')).toBe('fd00::7');
    expect(x509.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(new Date(x509.validTo).getTime()).toBeGreaterThan(Date.now() + 300 * 24 * 3600_000);
  });

  it('is served, and verifies against itself as the CA', async () => {
    const log = memoryLogger();
    const server = await startWebhookServer({ host: '127.0.0.1', port: 0, policy: loadDefaultPolicy, log });
    try {
      const answer = await send(server.url, { method: 'GET', path: '/healthz', ca: server.certificate });
      expect(answer.status).toBe(200);
      expect(log.lines.some((l) => l.msg.includes('self-signed certificate generated in memory'))).toBe(true);
    } finally {
      await server.close(500);
    }
  });
});

describe('certificate files are reloaded without dropping connections', () => {
  let dir: string;
  let a: TlsMaterial;
  let b: TlsMaterial;
  let server: WebhookServer;
  const log = memoryLogger();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'slipstream-tls-'));
    [a, b] = await Promise.all([selfSignedCertificate(), selfSignedCertificate()]);
    writeFileSync(join(dir, 'tls.crt'), a.cert);
    writeFileSync(join(dir, 'tls.key'), a.key);
    server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      tls: { certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key') },
      policy: loadDefaultPolicy,
      log,
      watch: { debounceMs: 50, pollMs: 500 },
    });
  });
  afterAll(async () => {
    await server?.close(500);
    rmSync(dir, { recursive: true, force: true });
  });

  const fresh = async () => (await send(server.url, { method: 'GET', path: '/healthz' })).peerCertificate;

  it('serves the new certificate to new connections, and keeps the open one working', async () => {
    const keepAlive = new Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
    try {
      const first = await send(server.url, { method: 'GET', path: '/healthz', agent: keepAlive });
      expect(first.peerCertificate).toBe(der(a.cert));
      expect(await fresh()).toBe(der(a.cert));

      // Replaced the way a Secret volume does it: new files, then an atomic rename into place.
      writeFileSync(join(dir, 'tls.key.new'), b.key);
      writeFileSync(join(dir, 'tls.crt.new'), b.cert);
      renameSync(join(dir, 'tls.key.new'), join(dir, 'tls.key'));
      renameSync(join(dir, 'tls.crt.new'), join(dir, 'tls.crt'));

      await until('the new certificate on a new connection', async () => (await fresh()) === der(b.cert));
      expect(log.lines.some((l) => l.msg === 'TLS certificate reloaded')).toBe(true);

      // The connection opened before the reload is still up, still answering, on the old certificate.
      const again = await send(server.url, { method: 'GET', path: '/healthz', agent: keepAlive });
      expect(again.status).toBe(200);
      expect(again.peerCertificate).toBe(der(a.cert));
    } finally {
      keepAlive.destroy();
    }
  });

  it('keeps the current certificate when the new files do not belong together', async () => {
    writeFileSync(join(dir, 'tls.key'), a.key); // b's certificate with a's key
    await until('the error log line', async () =>
      log.lines.some(
        (l) => l.level === 'error' && l.msg.includes('do not load; keeping the current certificate'),
      ),
    );
    expect(await fresh()).toBe(der(b.cert));
    writeFileSync(join(dir, 'tls.crt'), a.cert); // completes the pair: a
    await until('certificate a again', async () => (await fresh()) === der(a.cert));
  });
});
