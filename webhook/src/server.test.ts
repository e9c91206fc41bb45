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
