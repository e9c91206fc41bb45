import { connect } from 'node:http2';
import { request } from 'node:https';
import { memoryLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { describe, expect, it } from 'vitest';
import { loadFixtures } from '../../test/lib/admission-fixtures.ts';
import { send } from '../../test/lib/webhook-client.ts';
import { startWebhookServer } from './server.ts';

const policy = loadDefaultPolicy();
const fixture = loadFixtures(policy.id).find((f) => f.name === 'postgres-create')!;

describe('graceful close', () => {
  it('stops accepting, lets the review in flight finish, then closes', async () => {
    const server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log: memoryLogger(),
    });
    const body = Buffer.from(JSON.stringify(fixture.review));
    const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(
        `${server.url}/mutate`,
        {
          method: 'POST',
          rejectUnauthorized: false,
          headers: { 'content-type': 'application/json', 'content-length': body.length },
        },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => {
            text += c.toString();
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on('error', reject);
      req.write(body.subarray(0, 100));
      // The rest of the body arrives after close() has begun.
      setTimeout(() => req.end(body.subarray(100)), 300);
    });
    await new Promise((r) => setTimeout(r, 100));
    const closed = server.close(10_000);
    await expect(send(server.url, { method: 'GET', path: '/healthz' })).rejects.toThrow(/ECONNREFUSED/);
    const { status, text } = await answer;
    expect(status).toBe(200);
    expect(JSON.parse(text).response.uid).toBe(fixture.review.request.uid);
    await closed;
  });
});

describe('bounded concurrent work', () => {
  /** Starts a review whose body is sent only in part: it holds a slot until `finish` is called. */
  function partial(url: string, declared: number) {
    const req = request(`${url}/mutate`, {
      method: 'POST',
      rejectUnauthorized: false,
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': declared },
    });
    const answered = new Promise<number>((resolve) => {
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', () => resolve(-1));
    });
    req.write('{"apiVersion":');
    return { answered, finish: () => req.destroy() };
  }

  it('answers 429 beyond the limits, at once and without reading the body, while health and small reviews go on', async () => {
    const log = memoryLogger();
    const server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log,
      limits: { maxInFlight: 2, maxLarge: 1, largeBytes: 10_000 },
    });
    const review = JSON.stringify(fixture.review);
    const post = (body: string, declared = Buffer.byteLength(body)) =>
      send(server.url, {
        path: '/mutate',
        headers: { 'content-type': 'application/json', 'content-length': declared },
        body,
      });
    try {
      const large = partial(server.url, 500_000);
      await new Promise((r) => setTimeout(r, 100));
      // A second large body: refused before it is read (the 600 kB are never parsed).
      const refused = await post(`{"a":"${'x'.repeat(600_000)}"}`);
      expect(refused.status).toBe(429);
      expect(refused.headers.connection).toBe('close');
      expect((refused.json as { error: string }).error).toMatch(
        /too many reviews in flight \(at most 2, 1 of them/,
      );
      // Ordinary reviews still fit.
      expect((await post(review)).status).toBe(200);
      const small = partial(server.url, 2000);
      await new Promise((r) => setTimeout(r, 100));
      for (let i = 0; i < 3; i++) expect((await post(review)).status).toBe(429);
      expect((await send(server.url, { method: 'GET', path: '/healthz' })).status).toBe(200);
      expect(server.gate.refused).toBe(4);
      // One line when refusing starts (twice here: a review got in between), not one per refusal.
      expect(log.lines.filter((l) => l.msg.startsWith('too many reviews in flight'))).toHaveLength(2);
      large.finish();
      small.finish();
      await Promise.all([large.answered, small.answered]);
      // The slots are free again.
      await new Promise((r) => setTimeout(r, 100));
      expect(server.gate.inFlight).toBe(0);
      expect((await post(review)).status).toBe(200);
      expect(log.lines.some((l) => l.msg === 'reviews in flight are back under the limit')).toBe(true);
    } finally {
      await server.close(500);
    }
  });

  it('over h2: 429 ends only the refused stream; the connection goes on serving', async () => {
    const server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log: memoryLogger(),
      limits: { maxInFlight: 1 },
    });
    const session = connect(server.url, { rejectUnauthorized: false });
    const call = (headers: Record<string, string | number>, body?: string, end = true) =>
      new Promise<number>((resolve, reject) => {
        const stream = session.request(headers);
        stream.on('response', (h) => resolve(Number(h[':status'])));
        stream.on('error', reject);
        stream.resume();
        if (end) stream.end(body);
        else stream.write(body);
      });
    try {
      const review = JSON.stringify(fixture.review);
      const mutate = { ':method': 'POST', ':path': '/mutate', 'content-type': 'application/json' };
      // Holds the only slot: its body never ends.
      void call({ ...mutate, 'content-length': 5000 }, '{"apiVersion":', false).catch(() => {});
      await new Promise((r) => setTimeout(r, 100));
      expect(await call({ ...mutate, 'content-length': Buffer.byteLength(review) }, review)).toBe(429);
      expect(await call({ ':method': 'GET', ':path': '/healthz' })).toBe(200);
    } finally {
      session.destroy();
      await server.close(500);
    }
  });
});
