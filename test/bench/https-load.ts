// A closed-loop HTTPS load generator: `concurrency` keep-alive connections, each sending the next
// request as soon as the previous answer is read, until `requests` have been answered. Loopback only.

import { Agent, request } from 'node:https';

export interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
  perSecond: number;
  /** Latency of each answered request, in ms (unsorted). */
  latencies: Float64Array;
}

export interface LoadOptions {
  url: string;
  path: string;
  body: Buffer;
  requests: number;
  concurrency: number;
  /** Stop early after this long, whatever the count (bounded runs). */
  maxSeconds?: number;
}

export async function load(options: LoadOptions): Promise<LoadResult> {
  const target = new URL(options.path, options.url);
  if (target.hostname !== '127.0.0.1') throw new Error('load goes to 127.0.0.1 only');
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency, rejectUnauthorized: false });
  const headers = { 'content-type': 'application/json', 'content-length': options.body.length };
  const latencies = new Float64Array(options.requests);
  const deadline = performance.now() + (options.maxSeconds ?? 120) * 1000;
  let started = 0;
  let done = 0;
  let errors = 0;

  const one = () =>
    new Promise<void>((resolve) => {
      const t0 = performance.now();
      const req = request(
        {
          host: target.hostname,
          port: target.port,
          path: target.pathname + target.search,
          method: 'POST',
          agent,
          headers,
        },
        (res) => {
          if (res.statusCode !== 200) errors++;
          res.on('data', () => {});
          res.on('end', () => {
            latencies[done++] = performance.now() - t0;
            resolve();
          });
        },
      );
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end(options.body);
    });

  const t0 = performance.now();
  const worker = async () => {
    while (started < options.requests && performance.now() < deadline) {
      started++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  return {
    requests: done,
    errors,
    seconds,
    perSecond: done / seconds,
    latencies: latencies.subarray(0, done),
  };
}

export function percentile(values: Float64Array | number[], p: number): number {
  const sorted = Float64Array.from(values).sort();
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function median(values: number[]): number {
  return percentile(values, 50);
}
