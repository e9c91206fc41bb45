import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadDefaultPolicy } from '@slipstream/shared/policy';
import { afterAll, describe, expect, it } from 'vitest';
import type { AdmissionReviewResponse } from './admission.ts';
import { parseCli, parseListen, UsageError } from './cli.ts';
import { postReview, send } from './testing/client.ts';
import { decodePatch, loadFixtures } from './testing/fixtures.ts';
import { spawnWebhook } from './testing/spawn.ts';

const fixtures = loadFixtures(loadDefaultPolicy().id);
const postgres = fixtures.find((f) => f.name === 'postgres-create')!;

describe('command line', () => {
  it.each([
    ['0.0.0.0:8443', { host: '0.0.0.0', port: 8443 }],
    ['127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
    ['[::]:9443', { host: '::', port: 9443 }],
    [':8443', { host: '0.0.0.0', port: 8443 }],
    ['webhook.local:443', { host: 'webhook.local', port: 443 }],
  ])('--listen %s', (value, expected) => {
    expect(parseListen(value)).toEqual(expected);
  });

  it.each(['8443', 'host:', 'host:70000', '[::1:80', 'a:b:c'])('refuses --listen %s', (value) => {
    expect(() => parseListen(value)).toThrow(UsageError);
  });

  it('reads every option', () => {
    expect(
      parseCli([
        '--listen',
        '127.0.0.1:9443',
        '--tls-cert',
        'c.pem',
        '--tls-key',
        'k.pem',
        '--policy',
        'p.yaml',
      ]),
    ).toEqual({
      host: '127.0.0.1',
      port: 9443,
      tlsCert: 'c.pem',
      tlsKey: 'k.pem',
      policy: 'p.yaml',
    });
    expect(parseCli([])).toEqual({ host: '0.0.0.0', port: 8443 });
    expect(parseCli(['--help'])).toBe('help');
  });

  it('refuses a certificate without its key, and unknown options', () => {
    expect(() => parseCli(['--tls-cert', 'c.pem'])).toThrow(/go together/);
    expect(() => parseCli(['--port', '1'])).toThrow(UsageError);
    expect(() => parseCli(['stray'])).toThrow(UsageError);
  });
});

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
      await until('the reload', async () => (await offloadOf()) === '5432/TCP');
      const ready = await send(webhook.url, { method: 'GET', path: '/readyz' });
      expect(String((ready.json as { policy: string }).policy)).toMatch(/^everything@1#/);
    } finally {
      await webhook.stop();
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
