// 10,000+ random and malformed requests against a running webhook process (127.0.0.1 only,
// bounded in count and time): no 5xx, no crash, and it still answers /healthz afterwards.

import { Agent } from 'node:https';
import { connect as connectTcp } from 'node:net';
import { connect as connectTls } from 'node:tls';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadFixtures } from '../../test/lib/admission-fixtures.ts';
import { type Answer, send } from '../../test/lib/webhook-client.ts';
import { type SpawnedWebhook, spawnWebhook } from '../../test/lib/webhook-process.ts';

const COUNT = 10_000;
const DEADLINE_MS = 120_000;
const CONCURRENCY = 8;
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed);

/** xorshift32: reproducible from the seed printed on failure. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!,
  };
}

type Request = {
  kind: string;
  headers: Record<string, string>;
  body: Buffer | string;
  path?: string;
  method?: string;
};

const fixtures = loadFixtures(loadDefaultPolicy().id).map((f) => f.review);
const JSON_TYPE = { 'content-type': 'application/json' };

function paths(value: unknown, prefix: (string | number)[] = [], out: (string | number)[][] = []) {
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const path = [...prefix, Array.isArray(value) ? Number(k) : k];
      out.push(path);
      if (out.length < 400) paths(v, path, out);
    }
  }
  return out;
}

function generator(seed: number) {
  const r = rng(seed);
  const randomValue = (depth = 0): unknown => {
    switch (r.int(depth > 2 ? 9 : 11)) {
      case 0:
        return null;
      case 1:
        return r.pick([0, -1, 1.5, 1e308, -0, 65536, 2 ** 53 + 1]);
      case 2:
        return r.pick([
          '',
          'x',
          'None',
          'Service',
          'CREATE',
          'disabled',
          '\u0000',
          '\ud800',
          '💥'.repeat(50),
        ]);
      case 3:
        return r.next() < 0.5;
      case 4:
        return 'y'.repeat(r.int(5000));
      case 5:
        return [];
      case 6:
        return {};
      case 7:
        return `${r.int(100000)}`;
      case 8:
        return { port: r.pick([0, 80, 70000, '80', null]), protocol: r.pick(['TCP', 'udp', 7, null]) };
      case 9:
        return Array.from({ length: r.int(5) }, () => randomValue(depth + 1));
      default:
        return Object.fromEntries(
          Array.from({ length: r.int(5) }, (_, i) => [`k${i}`, randomValue(depth + 1)]),
        );
    }
  };
  const randomBytes = (n: number) => Buffer.from(Array.from({ length: n }, () => r.int(256)));
  const mutateField = () => {
    const review = structuredClone(r.pick(fixtures)) as Record<string, unknown>;
    for (let i = 0, n = 1 + r.int(3); i < n; i++) {
      const all = paths(review);
      const path = r.pick(all);
      let target = review as Record<string | number, unknown>;
      for (const key of path.slice(0, -1)) target = target[key] as Record<string | number, unknown>;
      const last = path.at(-1)!;
      if (r.next() < 0.15) delete target[last];
      else target[last] = randomValue();
    }
    return JSON.stringify(review);
  };
  const nest = (depth: number) => {
    const open = r.pick(['[', '{"a":', '{"request":', '[{"x":']);
    const body = open.repeat(depth);
    return r.next() < 0.5 ? body : body + '1' + (open === '[' ? ']' : '}').repeat(depth);
  };

  return (i: number): Request => {
    if (i % 997 === 0) {
      // Over the limit, with and without a declared length (the client streams it).
      return { kind: 'huge', headers: JSON_TYPE, body: `{"a":"${'z'.repeat(1024 * 1024 + r.int(4096))}"}` };
    }
    switch (r.int(10)) {
      case 0:
        return { kind: 'random-bytes', headers: JSON_TYPE, body: randomBytes(r.int(2048)) };
      case 1: {
        const text = JSON.stringify(r.pick(fixtures));
        return { kind: 'truncated', headers: JSON_TYPE, body: text.slice(0, r.int(text.length)) };
      }
      case 2:
      case 3:
      case 4:
        return { kind: 'wrong-types', headers: JSON_TYPE, body: mutateField() };
      case 5:
        return { kind: 'deep', headers: JSON_TYPE, body: nest(30 + r.int(r.next() < 0.2 ? 200_000 : 100)) };
      case 6: {
        const type = r.pick([
          'text/plain',
          'application/yaml',
          'application/x-www-form-urlencoded',
          'application/vnd.kubernetes.protobuf',
          'multipart/form-data; boundary=x',
          'application/json; charset=utf-16',
          'application/jsonx',
          '',
          '*/*',
        ]);
        return {
          kind: 'content-type',
          headers: type ? { 'content-type': type } : {},
          body: JSON.stringify(r.pick(fixtures)),
        };
      }
      case 7:
        return { kind: 'json-values', headers: JSON_TYPE, body: JSON.stringify(randomValue()) };
      case 8: {
        const text = JSON.stringify(r.pick(fixtures));
        const at = r.int(text.length);
        return {
          kind: 'bytes-spliced',
          headers: JSON_TYPE,
          body: Buffer.concat([
            Buffer.from(text.slice(0, at)),
            randomBytes(1 + r.int(8)),
            Buffer.from(text.slice(at)),
          ]),
        };
      }
      default: {
        const method = r.pick(['GET', 'PUT', 'DELETE', 'PATCH', 'POST', 'OPTIONS']);
        const path = r.pick([
          '/mutate',
          '/mutate?timeout=10s',
          '/',
          '/healthz',
          '/readyz',
          '/%',
          '/mutate/../x',
          `/${'a'.repeat(3000)}`,
        ]);
        return {
          kind: 'method-path',
          headers: JSON_TYPE,
          body: r.next() < 0.5 ? JSON.stringify(r.pick(fixtures)) : '',
          path,
          method,
        };
      }
    }
  };
}

let webhook: SpawnedWebhook;
beforeAll(async () => {
  webhook = await spawnWebhook();
});
afterAll(async () => {
  await webhook?.stop();
});

describe('fuzz', () => {
  it(
    `answers ${COUNT} random and malformed requests without a 5xx or a crash`,
    async () => {
      const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
      const next = generator(SEED);
      const started = Date.now();
      const byKind = new Map<string, Map<number | string, number>>();
      const failures: string[] = [];
      let sent = 0;
      const worker = async () => {
        while (sent < COUNT && Date.now() - started < DEADLINE_MS) {
          const i = sent++;
          const req = next(i);
          let answer: Answer | undefined;
          let outcome: number | string;
          try {
            answer = await send(webhook.url, {
              agent,
              method: req.method ?? 'POST',
              path: req.path ?? '/mutate',
              headers: req.headers,
              body: req.body,
            });
            outcome = answer.status;
          } catch (error) {
            outcome = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
          }
          const counts = byKind.get(req.kind) ?? new Map();
          counts.set(outcome, (counts.get(outcome) ?? 0) + 1);
          byKind.set(req.kind, counts);
          const serverError = typeof outcome === 'number' && outcome >= 500;
          // A client that keeps writing past a 413 may see the connection reset: that is the point.
          const networkError = typeof outcome === 'string' && Buffer.byteLength(req.body) <= 1024 * 1024;
          const notJson =
            typeof outcome === 'number' &&
            outcome >= 400 &&
            answer?.json === undefined &&
            req.method !== 'OPTIONS';
          if (serverError || networkError || notJson)
            failures.push(`#${i} ${req.kind}: ${outcome} ${answer?.text.slice(0, 200) ?? ''}`);
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      agent.destroy();

      const summary = Object.fromEntries([...byKind].map(([k, v]) => [k, Object.fromEntries(v)]));
      expect(failures, `seed ${SEED}; ${JSON.stringify(summary)}`).toEqual([]);
      expect(sent).toBeGreaterThanOrEqual(COUNT);
      expect(webhook.child.exitCode).toBeNull();
      const health = await send(webhook.url, { method: 'GET', path: '/healthz' });
      expect(health.status).toBe(200);
      // Some of each kind got through to the review, and every kind was exercised.
      expect(Object.keys(summary).sort()).toEqual(
        [
          'bytes-spliced',
          'content-type',
          'deep',
          'huge',
          'json-values',
          'method-path',
          'random-bytes',
          'truncated',
          'wrong-types',
        ].sort(),
      );
      expect(summary['wrong-types']?.[200]).toBeGreaterThan(0);
      expect(webhook.logs.filter((l) => l.level === 'error')).toEqual([]);
    },
    DEADLINE_MS + 30_000,
  );

  it('survives garbage on the wire: malformed HTTP over TLS, and plain bytes on the TLS port', async () => {
    const r = rng(SEED ^ 0xabcdef);
    const { port } = new URL(webhook.url);
    const junk = () => Buffer.from(Array.from({ length: 1 + r.int(600) }, () => r.int(256)));
    const heads = [
      'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
      'POST /mutate HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello',
      'POST /mutate HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\nzz\r\n',
      'POST /mutate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a"',
      'BREW /pot HTTP/9.9\r\n\r\n',
    ];
    const once = (tls: boolean) =>
      new Promise<void>((resolve) => {
        const socket = tls
          ? connectTls({ host: '127.0.0.1', port: Number(port), rejectUnauthorized: false })
          : connectTcp({ host: '127.0.0.1', port: Number(port) });
        const done = () => {
          socket.destroy();
          resolve();
        };
        socket.setTimeout(2000, done);
        socket.on('error', done);
        socket.on('close', done);
        socket.on('data', () => {});
        socket.once(tls ? 'secureConnect' : 'connect', () => {
          socket.write(r.next() < 0.5 ? r.pick(heads) : junk());
          socket.end();
        });
      });
    for (let i = 0; i < 300; i++) await once(i % 3 !== 0);
    expect(webhook.child.exitCode).toBeNull();
    const health = await send(webhook.url, { method: 'GET', path: '/healthz' });
    expect(health.status).toBe(200);
  }, 60_000);
});
