// The webhook as a real process (main.ts): start-up, reviews, reloads, traces, signals, exit codes.

import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkServerIdentity, type TLSSocket } from 'node:tls';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { FakeApiServer } from '../../test/apiserver/fake-apiserver.ts';
import { decodePatch, loadFixtures } from '../../test/lib/admission-fixtures.ts';
import { postReview, send } from '../../test/lib/webhook-client.ts';
import { spawnWebhook } from '../../test/lib/webhook-process.ts';
import type { AdmissionReviewResponse } from './admission.ts';

const fixtures = loadFixtures(loadDefaultPolicy().id);
const postgres = fixtures.find((f) => f.name === 'postgres-create')!;

describe('npm run webhook (a real process)', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('serves a self-signed certificate, says so, answers a review, and stops cleanly on SIGTERM', async () => {
    const webhook = await spawnWebhook();
    try {
      expect(
        webhook.logs.some((l) => String(l.msg).includes('self-signed certificate generated in memory')),
      ).toBe(true);
      const answer = await postReview(webhook.url, postgres.review);
      expect(answer.status).toBe(200);
      expect((answer.json as AdmissionReviewResponse).response.uid).toBe(postgres.review.request.uid);
    } finally {
      expect(await webhook.stop()).toBe(0);
    }
    expect(webhook.logs.at(-1)?.msg).toBe('stopped');
  });

  it('exits 1 with a clear line when the policy does not load', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'slipstream-cli-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'bad.yaml'), 'name: bad\n');
    await expect(spawnWebhook(['--policy', join(dir, 'bad.yaml')])).rejects.toThrow(
      /exited with 1.*the policy does not load/,
    );
  });

  it('exits 2 on bad arguments', async () => {
    await expect(spawnWebhook(['--tls-cert', 'only.pem'])).rejects.toThrow(/exited with 2/);
  });

  it('reloads --policy: a bad file keeps the last good policy (with a log line), a good one switches', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'slipstream-cli-'));
    dirs.push(dir);
    const file = join(dir, 'policy.yaml');
    const policy = (name: string, offload: boolean) =>
      `name: ${name}\nversion: 1\ndefault: { offload: ${offload}, reason: ${name} default }\nrules: []\n`;
    writeFileSync(file, policy('nothing', false));
    const webhook = await spawnWebhook(['--policy', file]);
    const offloadOf = async () => {
      const answer = await postReview(webhook.url, postgres.review);
      const op = decodePatch(answer.json as AdmissionReviewResponse)[0] as { value: Record<string, string> };
      return op.value['hints.slipstream.dev/offload'];
    };
    const until = async (what: string, check: () => Promise<boolean> | boolean) => {
      const end = Date.now() + 15_000;
      while (!(await check())) {
        if (Date.now() > end)
          throw new Error(`timed out waiting for ${what}: ${JSON.stringify(webhook.logs)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      expect(await offloadOf()).toBe('none');
      writeFileSync(file, 'name: broken\nversion: 1\ndefault: {}\nrules: []\n');
      await until('the error line', () =>
        webhook.logs.some(
          (l) => l.level === 'error' && String(l.msg).includes('keeping the last good policy'),
        ),
      );
      const line = webhook.logs.find((l) => l.level === 'error')!;
      expect(String(line.kept)).toMatch(/^nothing@1#/);
      expect(String(line.error)).toContain(file);
      expect(await offloadOf()).toBe('none');

      writeFileSync(file, policy('everything', true));
      await until('the reload', async () => (await offloadOf()) === '5432/TCP=20');
      const ready = await send(webhook.url, { method: 'GET', path: '/readyz' });
      expect(String((ready.json as { policy: string }).policy)).toMatch(/^everything@1#/);
    } finally {
      await webhook.stop();
    }
  });

  it('SIGUSR1 opens no inspector and SIGHUP re-reads the policy: the webhook says so and keeps serving', async () => {
    const webhook = await spawnWebhook();
    const logged = async (what: string) => {
      const end = Date.now() + 15_000;
      while (!webhook.logs.some((l) => String(l.msg).startsWith(what))) {
        if (Date.now() > end) throw new Error(`no "${what}" line: ${JSON.stringify(webhook.logs)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    try {
      webhook.child.kill('SIGUSR1');
      await logged('SIGUSR1 ignored');
      // The inspector would listen on 127.0.0.1:9229; the webhook's only listener is its review port.
      const own = execFileSync('ss', ['-ltnpH'], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => l.includes(`pid=${webhook.child.pid},`));
      expect(own.map((l) => l.split(/\s+/)[3])).toEqual([new URL(webhook.url).host]);
      webhook.child.kill('SIGHUP');
      await logged('SIGHUP: reloading');
      expect((await postReview(webhook.url, postgres.review)).status).toBe(200);
    } finally {
      expect(await webhook.stop()).toBe(0);
    }
  });

  it('exports its review spans over OTLP/HTTP and flushes them on SIGTERM', async () => {
    const received: string[] = [];
    const receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push(`${req.method} ${req.url} ${Buffer.concat(chunks).toString('utf8')}`);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    receiver.listen(0, '127.0.0.1');
    await new Promise((r) => receiver.once('listening', r));
    const { port } = receiver.address() as AddressInfo;
    try {
      const webhook = await spawnWebhook([], {
        OTEL_TRACES_EXPORTER: undefined,
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
        OTEL_BSP_SCHEDULE_DELAY: '60000',
      });
      const answer = await postReview(webhook.url, postgres.review);
      const op = decodePatch(answer.json as AdmissionReviewResponse)[0] as { value: Record<string, string> };
      const traceId = op.value['hints.slipstream.dev/trace']?.split('-')[1];
      expect(await webhook.stop()).toBe(0);
      const all = received.join('\n');
      expect(all).toContain('POST /v1/traces');
      expect(all).toContain('admission.review');
      expect(all).toContain('slipstream-webhook');
      expect(all).toContain(traceId);
    } finally {
      receiver.close();
    }
  });
});

describe('npm run webhook -- --tls-secret (a real process against the API server stand-in)', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('creates the Secret, writes the caBundle, becomes ready, answers reviews the caBundle verifies, stops on SIGTERM', async () => {
    const api = await FakeApiServer.start({ namespaces: ['default', 'slipstream-system'] });
    const dir = mkdtempSync(join(tmpdir(), 'slipstream-cli-'));
    dirs.push(dir);
    try {
      await api.createMutatingWebhookConfiguration({
        metadata: { name: 'slipstream' },
        webhooks: [
          {
            name: 'service-hints.slipstream.dev',
            admissionReviewVersions: ['v1'],
            sideEffects: 'None',
            clientConfig: {
              service: { name: 'slipstream-webhook', namespace: 'slipstream-system', path: '/mutate' },
            },
          },
        ],
      });
      const kubeconfig = await api.writeKubeconfig(join(dir, 'kubeconfig'));
      const webhook = await spawnWebhook(
        [
          '--tls-secret',
          'slipstream-system/slipstream-webhook-tls',
          '--webhook-config',
          'slipstream',
          '--kubeconfig',
          kubeconfig,
        ],
        { KUBERNETES_SERVICE_HOST: undefined },
      );
      try {
        await vi.waitFor(
          async () => expect((await send(webhook.url, { method: 'GET', path: '/readyz' })).status).toBe(200),
          { timeout: 20_000, interval: 50 },
        );
        // The caBundle is written right after the certificate is served.
        await vi.waitFor(() => expect(webhook.logs.map((l) => l.msg)).toContain('caBundle updated'), {
          timeout: 20_000,
          interval: 50,
        });
        const bundle = api.caBundles('slipstream')?.[0] ?? '';
        const served = api.secretData('slipstream-system', 'slipstream-webhook-tls')!['tls.crt']!;
        expect(bundle).toContain('BEGIN CERTIFICATE');
        const name = 'slipstream-webhook.slipstream-system.svc';
        const body = JSON.stringify(postgres.review);
        const answer = await new Promise<{ status: number; fingerprint: string }>((resolve, reject) => {
          const req = request(
            `${webhook.url}/mutate`,
            {
              method: 'POST',
              agent: false,
              ca: bundle,
              servername: name,
              checkServerIdentity: (_h, cert) => checkServerIdentity(name, cert),
              headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
            },
            (res) => {
              const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
              res.resume();
              res.on('end', () => resolve({ status: res.statusCode ?? 0, fingerprint }));
            },
          );
          req.on('error', reject);
          req.end(body);
        });
        expect(answer.status).toBe(200);
        expect(answer.fingerprint).toBe(new X509Certificate(served).fingerprint256);
        const messages = webhook.logs.map((l) => l.msg);
        expect(messages).toContain('TLS Secret created');
        expect(messages).toContain('serving the certificate from the TLS Secret');
        expect(messages).toContain('caBundle updated');
        const listening = webhook.logs.find((l) => l.msg === 'slipstream webhook listening')!;
        expect(listening.tlsSecret).toBe('slipstream-system/slipstream-webhook-tls');
      } finally {
        expect(await webhook.stop()).toBe(0);
      }
      expect(webhook.logs.at(-1)?.msg).toBe('stopped');
    } finally {
      await api.close();
    }
  });

  it('exits 1 with a clear line when there is no kubeconfig to load', async () => {
    await expect(
      spawnWebhook(
        ['--tls-secret', 'ns/name', '--webhook-config', 'w', '--kubeconfig', '/nonexistent/kubeconfig'],
        { KUBERNETES_SERVICE_HOST: undefined },
      ),
    ).rejects.toThrow(/exited with 1.*no access to the Kubernetes API/);
  });
});
