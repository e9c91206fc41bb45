// The webhook under load, measured against a bare node:https server in the same run: same
// certificate, same request, same load generator, each server in its own child process.
//
//   webhook.throughputRatio  reviews/s of /mutate / baseline answers/s (concurrency 32, keep-alive)
//   webhook.p99Ms            p99 latency of /mutate at that load
//   webhook.coldStartMs      median of 10 runs, process spawn -> first answered review
//   webhook.rssMB            RSS after 100,000 reviews (and at 50,000, to show it is flat)

import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { review } from '../../webhook/src/review.ts';
import { selfSignedCertificate } from '../../webhook/src/tls.ts';
import { loadFixtures } from '../lib/admission-fixtures.ts';
import { postReview } from '../lib/webhook-client.ts';
import { type SpawnedWebhook, spawnWebhook } from '../lib/webhook-process.ts';
import { type LoadResult, load, median, percentile } from './https-load.ts';
import type { Figures, Goal } from './run.ts';

export const goals: Record<string, Goal> = {
  'webhook.throughputRatio': {
    min: 0.8,
    note: 'reviews/s of /mutate divided by a bare node:https server answering a constant AdmissionReview',
  },
  'webhook.p99Ms': { max: 5 },
  'webhook.coldStartMs': {
    max: 300,
    note: "median of 10 starts, spawn to first answered review, with Node's compile cache (main.ts enables it)",
  },
  'webhook.rssMB': {
    max: 100,
    note: "VmRSS after 100,000 reviews; it counts the pages of the node binary the process touched (shared with other node processes); rssAnonMB is the process's own memory",
  },
};

const CONCURRENCY = 32;
const REQUESTS = 20_000;
const WARMUP = 4_000;
const RSS_REVIEWS = 100_000;
const COLD_STARTS = 10;
const BASELINE = fileURLToPath(new URL('./baseline-server.ts', import.meta.url));

function note(text: string) {
  process.stderr.write(`  ${text}\n`);
}

async function startBaseline(
  cert: string,
  key: string,
  response: string,
): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [BASELINE, cert, key, response], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.stdout!.setEncoding('utf8');
  const [line] = (await once(child.stdout!, 'data')) as [string];
  const { port } = JSON.parse(line) as { port: number };
  return { child, url: `https://127.0.0.1:${port}` };
}

async function stop(child: ChildProcess) {
  if (child.exitCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await once(child, 'exit');
  clearTimeout(timer);
}

/** Resident memory of a process in MB: total (VmRSS) and its own anonymous part (RssAnon). */
function memoryMB(pid: number): { rss: number; anon: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mb = (field: string) =>
    Math.round((Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1]) / 1024) * 10) / 10;
  return { rss: mb('VmRSS'), anon: mb('RssAnon') };
}

/** CPU time (user + system) a process has used, in microseconds (/proc/PID/stat, 100 ticks/s). */
function cpuMicros(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

function summary(r: LoadResult & { cpuMicros: number }) {
  const ms = (x: number) => Number(x.toFixed(2));
  return {
    perSecond: Math.round(r.perSecond),
    p50Ms: ms(percentile(r.latencies, 50)),
    p99Ms: ms(percentile(r.latencies, 99)),
    cpuMicrosPerRequest: Math.round(r.cpuMicros / r.requests),
    errors: r.errors,
  };
}

export async function run(): Promise<Figures> {
  const dir = mkdtempSync(join(tmpdir(), 'slipstream-bench-'));
  const children: ChildProcess[] = [];
  try {
    // The request: the recorded PostgreSQL CREATE; the baseline's answer: the webhook's real answer to it.
    const policy = loadDefaultPolicy();
    const fixture = loadFixtures(policy.id).find((f) => f.name === 'postgres-create')!;
    const body = Buffer.from(JSON.stringify(fixture.review));
    const expected = review(fixture.review, {
      policy,
      traceparent: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01`,
    });
    if (!expected.ok) throw new Error(expected.error);
    const tls = await selfSignedCertificate();
    const files = {
      cert: join(dir, 'tls.crt'),
      key: join(dir, 'tls.key'),
      response: join(dir, 'answer.json'),
    };
    writeFileSync(files.cert, tls.cert);
    writeFileSync(files.key, tls.key);
    writeFileSync(files.response, JSON.stringify(expected.review));
    // As the manifests run it: metrics on (counted on every review, served on a port of their own).
    const webhookArgs = ['--tls-cert', files.cert, '--tls-key', files.key, '--metrics-listen', '127.0.0.1:0'];
    const env = { OTEL_TRACES_EXPORTER: undefined, OTEL_EXPORTER_OTLP_ENDPOINT: undefined };
    note(`request ${body.length} bytes, answer ${readFileSync(files.response).length} bytes`);

    // Throughput and latency: baseline and webhook alternate twice, after a warm-up of each.
    const baseline = await startBaseline(files.cert, files.key, files.response);
    children.push(baseline.child);
    const webhook = await spawnWebhook(webhookArgs, env);
    children.push(webhook.child);
    const check = await postReview(webhook.url, fixture.review);
    if (check.status !== 200 || !(check.json as { response?: { patch?: string } }).response?.patch) {
      throw new Error(
        `the webhook did not answer the benchmark request properly: ${check.status} ${check.text}`,
      );
    }
    const target = (url: string, requests: number) =>
      load({ url, path: '/mutate?timeout=10s', body, requests, concurrency: CONCURRENCY, maxSeconds: 120 });
    // Server CPU per answer as well: less sensitive to other load on the machine than answers/s.
    const measured = async (url: string, pid: number) => {
      const before = cpuMicros(pid);
      const result = await target(url, REQUESTS);
      return { ...result, cpuMicros: cpuMicros(pid) - before };
    };
    await target(baseline.url, WARMUP);
    await target(webhook.url, WARMUP);
    const rounds: {
      baseline: LoadResult & { cpuMicros: number };
      webhook: LoadResult & { cpuMicros: number };
    }[] = [];
    for (let i = 0; i < 2; i++) {
      const b = await measured(baseline.url, baseline.child.pid!);
      const w = await measured(webhook.url, webhook.child.pid!);
      rounds.push({ baseline: b, webhook: w });
      note(`round ${i + 1}: baseline ${JSON.stringify(summary(b))}, webhook ${JSON.stringify(summary(w))}`);
    }
    await stop(baseline.child);
    await webhook.stop();
    const sum = (xs: number[]) => xs.reduce((a, x) => a + x, 0);
    const baselineRate =
      sum(rounds.map((r) => r.baseline.requests)) / sum(rounds.map((r) => r.baseline.seconds));
    const webhookRate =
      sum(rounds.map((r) => r.webhook.requests)) / sum(rounds.map((r) => r.webhook.seconds));
    const webhookLatencies = Float64Array.from(rounds.flatMap((r) => [...r.webhook.latencies]));
    const baselineLatencies = Float64Array.from(rounds.flatMap((r) => [...r.baseline.latencies]));
    const errors = sum(rounds.map((r) => r.webhook.errors + r.baseline.errors));
    const cpuPer = (side: 'baseline' | 'webhook') =>
      sum(rounds.map((r) => r[side].cpuMicros)) / sum(rounds.map((r) => r[side].requests));

    // Memory: a fresh webhook, 100,000 reviews, RSS at half-way and at the end; then the same with
    // V8's young generation capped (a deployment option: NODE_OPTIONS=--max-semi-space-size=4).
    const memoryRun = async (extraEnv: Record<string, string | undefined>) => {
      const fresh = await spawnWebhook(webhookArgs, { ...env, ...extraEnv });
      children.push(fresh.child);
      const pid = fresh.child.pid!;
      const start = memoryMB(pid);
      await target(fresh.url, RSS_REVIEWS / 2);
      const half = memoryMB(pid);
      await target(fresh.url, RSS_REVIEWS / 2);
      const end = memoryMB(pid);
      await fresh.stop();
      note(
        `memory (MB) ${JSON.stringify(extraEnv)}: start ${JSON.stringify(start)}, 50k ${JSON.stringify(half)}, 100k ${JSON.stringify(end)}`,
      );
      return { start, half, end };
    };
    const memory = await memoryRun({});
    const cappedMemory = await memoryRun({ NODE_OPTIONS: '--max-semi-space-size=4' });

    // Cold start: spawn -> first answered review. One unmeasured start fills Node's compile cache.
    const startOnce = async (extraEnv: Record<string, string | undefined>) => {
      const t0 = performance.now();
      let w: SpawnedWebhook | undefined;
      try {
        w = await spawnWebhook(webhookArgs, { ...env, ...extraEnv });
        children.push(w.child);
        const answer = await postReview(w.url, fixture.review);
        if (answer.status !== 200) throw new Error(`cold start answered ${answer.status}`);
        return performance.now() - t0;
      } finally {
        await w?.stop();
      }
    };
    await startOnce({});
    const cold: number[] = [];
    for (let i = 0; i < COLD_STARTS; i++) cold.push(await startOnce({}));
    const coldNoCache: number[] = [];
    for (let i = 0; i < COLD_STARTS; i++)
      coldNoCache.push(await startOnce({ NODE_DISABLE_COMPILE_CACHE: '1' }));
    note(
      `cold starts (ms): ${cold.map(Math.round).join(' ')}; without compile cache: ${coldNoCache.map(Math.round).join(' ')}`,
    );

    const round = (x: number, digits = 3) => Number(x.toFixed(digits));
    return {
      'webhook.throughputRatio': round(webhookRate / baselineRate),
      'webhook.reviewsPerSecond': Math.round(webhookRate),
      'webhook.baselinePerSecond': Math.round(baselineRate),
      'webhook.p50Ms': round(percentile(webhookLatencies, 50)),
      'webhook.p99Ms': round(percentile(webhookLatencies, 99)),
      'webhook.baselineP99Ms': round(percentile(baselineLatencies, 99)),
      'webhook.loadErrors': errors,
      'webhook.coldStartMs': Math.round(median(cold)),
      'webhook.coldStartNoCompileCacheMs': Math.round(median(coldNoCache)),
      'webhook.serverCpuMicrosPerReview': Math.round(cpuPer('webhook')),
      'webhook.baselineCpuMicrosPerAnswer': Math.round(cpuPer('baseline')),
      'webhook.rssMBAtStart': memory.start.rss,
      'webhook.rssMBAt50k': memory.half.rss,
      'webhook.rssMB': memory.end.rss,
      'webhook.rssAnonMB': memory.end.anon,
      'webhook.rssMBSemiSpace4': cappedMemory.end.rss,
      'webhook.load': `${REQUESTS} requests x2 rounds each (after ${WARMUP} warm-up), concurrency ${CONCURRENCY}, HTTPS keep-alive, ${body.length}-byte request`,
    };
  } finally {
    for (const child of children) await stop(child);
    rmSync(dir, { recursive: true, force: true });
  }
}
