// The webhook as production runs it (the command of deploy/base/webhook/deployment.yaml: the
// esbuild bundle with its Node flags), measured against a bare node:https server in the same run:
// same certificate, same request, same load generator, each server in its own child process.
//
//   webhook.throughputRatio  reviews/s of /mutate / baseline answers/s (concurrency 32, keep-alive)
//   webhook.p99Ms            p99 latency of /mutate at that load
//   webhook.coldStartMs      median of 10 runs, process spawn -> first answered review
//   webhook.rssMB            RSS after 100,000 reviews (and at 50,000, to show it is flat)
//   webhook.flood*           32 clients sending worst-case bodies just under 1 MiB (webhook-flood.ts)
// and, to show what each step bought, RSS and cold start of the TypeScript sources and of the
// bundle without the flags.

import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { buildBundle, WEBHOOK } from '../../scripts/build.ts';
import { review } from '../../webhook/src/review.ts';
import { selfSignedCertificate } from '../../webhook/src/tls.ts';
import { loadFixtures } from '../lib/admission-fixtures.ts';
import { WEBHOOK_MAIN as MAIN } from '../lib/process.ts';
import { postReview } from '../lib/webhook-client.ts';
import { productionEntry, type SpawnedWebhook, spawnWebhook } from '../lib/webhook-process.ts';
import { type LoadResult, load, median, percentile } from './https-load.ts';
import type { Figures, Goal } from './run.ts';
import { flood } from './webhook-flood.ts';

export const goals: Record<string, Goal> = {
  'webhook.throughputRatio': {
    min: 0.9,
    note: 'reviews/s of /mutate divided by a bare node:https server answering a constant AdmissionReview, both measured here',
  },
  'webhook.p99Ms': { max: 5 },
  'webhook.coldStartMs': {
    max: 150,
    note: "median of 10 starts of the production command, spawn to first answered review, with Node's compile cache (main.ts enables it)",
  },
  'webhook.rssMB': {
    max: 100,
    note: "VmRSS after 100,000 reviews; it counts the pages of the node binary the process touched (~50 MB, shared with other node processes); rssAnonMB is the process's own memory",
  },
  'webhook.floodPeakRssMB': {
    max: 250,
    note: 'VmHWM (peak RSS) of a fresh webhook after 15 s of 32 clients sending worst-case bodies of 1010 KiB (70,000 ports; 31,000 annotations; 1,000 ports and 250 kB of annotations, evaluated in full)',
  },
  'webhook.floodHealthzMs': {
    max: 500,
    note: 'slowest GET /healthz during that flood, each on a new connection (as the kubelet probes), every 100 ms',
  },
};

type Steps = Record<string, { startMB: number; endMB: number; anonMB: number }>;

/** What each change bought, from this run's figures. */
export function notes(results: Figures): string[] {
  const steps = results['webhook.rssMBSteps'] as Steps | undefined;
  const num = (name: string) => results[name] as number;
  if (!steps) return [];
  const src = steps['TypeScript sources (type stripping)']!;
  const bundle = steps.bundle!;
  const semi = steps['bundle, --max-semi-space-size=2']!;
  const recompilation = steps['bundle, --max-semi-space-size=2 --no-concurrent-recompilation']!;
  const d = (a: number, b: number) => `${Math.round((a - b) * 10) / 10} MB`;
  return [
    `RSS at start / after 50,000 reviews: TypeScript sources ${src.startMB} / ${src.endMB} MB; bundle ${bundle.startMB} / ${bundle.endMB} MB (the bundle saved ${d(src.startMB, bundle.startMB)} at start, ${d(src.endMB, bundle.endMB)} under load: no TypeScript transformer, no module resolution); --max-semi-space-size=2 ${semi.endMB} MB (${d(bundle.endMB, semi.endMB)} less: V8 grew its young generation to 3 x 16 MB for garbage that dies young); --no-concurrent-recompilation ${recompilation.endMB} MB (${d(semi.endMB, recompilation.endMB)} less: optimizing compilation on a background thread kept its zone memory in that thread's malloc arena); --no-maglev ${num('webhook.rssMBAt50k')} MB (${d(recompilation.endMB, num('webhook.rssMBAt50k'))} less: without V8's mid tier, hot code goes from Sparkplug straight to TurboFan; with Maglev the main malloc arena and the V8 heap each held ~10 MB more after 100,000 reviews, and a review took ~15% more CPU). Production after 100,000: ${num('webhook.rssMB')} MB.`,
    `Cold start (median of 10, spawn to first answer): TypeScript sources ${num('webhook.coldStartSourcesMs')} ms, production bundle ${num('webhook.coldStartMs')} ms (${num('webhook.coldStartNoCompileCacheMs')} ms without the compile cache); a bare node:https server answering a constant takes ${num('webhook.baselineColdStartMs')} ms on this machine in the same run (${num('webhook.coldStartVsBaseline')}x). Issue 13 measured 329 ms against 156 ms (2.1x); what closed most of it: the policy schema is compiled at build time (Ajv's standalone code, scripts/build.ts) and the default policy is in the bundle already parsed, so a start no longer loads Ajv or compiles a schema (about 90 ms here); and built-ins are taken from process.getBuiltinModule instead of ES module imports, whose facades read every export (node:http's lazy WebSocket getters loaded undici: 18-33 ms).`,
    'Removing express (not re-measured in each run: measured once, both bundled) saved 15 MB of RSS, 2.7 MB of heap and 170 ms or more of start-up on this machine; it also could not serve h2 requests.',
    `Flood: before these changes (issue 13's measurement) 32 x 1,010 KiB CREATE took RSS from 129 to 604 MB and /healthz 10.9 s. Now: peak ${num('webhook.floodPeakRssMB')} MB, slowest /healthz ${num('webhook.floodHealthzMs')} ms (median ${num('webhook.floodHealthzP50Ms')} ms), ordinary reviews p99 ${num('webhook.floodOrdinaryReviewP99Ms')} ms during it. What did it: per-review bounds (more than 1,000 ports or 256 KiB of annotations: allowed unchanged with a warning, no decide), the hint patch comparing only our own keys, at most 4 bodies over 64 KiB in flight (429 beyond, before the body is read), and those answered on a worker thread with its own 64 MB heap, so the event loop only moves bytes.`,
    'The machine is shared with other work (see the load average in webhook.context): throughput and latency move with it; ratios are within the same run.',
  ];
}

const CONCURRENCY = 32;
const REQUESTS = 10_000;
const ROUNDS = 4;
const WARMUP = 4_000;
const RSS_REVIEWS = 100_000;
const STEP_REVIEWS = 50_000;
const COLD_STARTS = 10;
const FLOOD_SECONDS = 15;
const REPO = fileURLToPath(new URL('../../', import.meta.url));
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

/** Resident memory of a process in MB: total (VmRSS), peak (VmHWM) and its own anonymous part (RssAnon). */
function memoryMB(pid: number): { rss: number; hwm: number; anon: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mb = (field: string) =>
    Math.round((Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1]) / 1024) * 10) / 10;
  return { rss: mb('VmRSS'), hwm: mb('VmHWM'), anon: mb('RssAnon') };
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
    await buildBundle(WEBHOOK);
    const production = productionEntry();
    note(`production command: node ${production.map((a) => a.replace(REPO, '')).join(' ')}`);
    const bundleOnly = [WEBHOOK.main];
    const semiSpaceOnly = [...production.filter((a) => a.startsWith('--max-semi-space-size')), WEBHOOK.main];
    const withoutNoMaglev = production.filter((a) => a !== '--no-maglev');

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
    const spawnOne = async (entry: string[], extraEnv: Record<string, string | undefined> = {}) => {
      const w = await spawnWebhook(webhookArgs, { ...env, ...extraEnv }, 20_000, entry);
      children.push(w.child);
      return w;
    };
    note(`request ${body.length} bytes, answer ${readFileSync(files.response).length} bytes`);

    // Throughput and latency: baseline and webhook alternate twice, after a warm-up of each.
    const baseline = await startBaseline(files.cert, files.key, files.response);
    children.push(baseline.child);
    const webhook = await spawnOne(production);
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
    for (let i = 0; i < ROUNDS; i++) {
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

    // Memory: a fresh webhook, reviews at concurrency 32, RSS at half-way and at the end. The
    // production command for 100,000; each earlier step for 50,000 (RSS is flat from there on).
    const memoryRun = async (entry: string[], reviews: number) => {
      const fresh = await spawnOne(entry);
      const pid = fresh.child.pid!;
      const start = memoryMB(pid);
      await target(fresh.url, reviews / 2);
      const half = memoryMB(pid);
      await target(fresh.url, reviews / 2);
      const end = memoryMB(pid);
      await fresh.stop();
      note(
        `memory (MB) ${entry.join(' ').replace(REPO, '')}: start ${JSON.stringify(start)}, end ${JSON.stringify(end)}`,
      );
      return { start, half, end };
    };
    const memory = await memoryRun(production, RSS_REVIEWS);
    const steps: Steps = {};
    for (const [name, entry] of [
      ['TypeScript sources (type stripping)', [MAIN]],
      ['bundle', bundleOnly],
      ['bundle, --max-semi-space-size=2', semiSpaceOnly],
      ['bundle, --max-semi-space-size=2 --no-concurrent-recompilation', withoutNoMaglev],
    ] as const) {
      const m = await memoryRun([...entry], STEP_REVIEWS);
      steps[name] = { startMB: m.start.rss, endMB: m.end.rss, anonMB: m.end.anon };
    }

    // Cold start: spawn -> first answered review. One unmeasured start fills Node's compile cache.
    const startOnce = async (entry: string[], extraEnv: Record<string, string | undefined> = {}) => {
      const t0 = performance.now();
      let w: SpawnedWebhook | undefined;
      try {
        w = await spawnOne(entry, extraEnv);
        const answer = await postReview(w.url, fixture.review);
        if (answer.status !== 200) throw new Error(`cold start answered ${answer.status}`);
        return performance.now() - t0;
      } finally {
        await w?.stop();
      }
    };
    // The floor on this machine right now: a bare node:https server, spawn to first answer.
    const baselineStart = async () => {
      const t0 = performance.now();
      const b = await startBaseline(files.cert, files.key, files.response);
      children.push(b.child);
      const answer = await postReview(b.url, fixture.review);
      if (answer.status !== 200) throw new Error(`baseline answered ${answer.status}`);
      const ms = performance.now() - t0;
      await stop(b.child);
      return ms;
    };
    // Interleaved, so that the machine's load moves all four alike; one unmeasured start of each first.
    const starts = {
      production: () => startOnce(production),
      noCache: () => startOnce(production, { NODE_DISABLE_COMPILE_CACHE: '1' }),
      sources: () => startOnce([MAIN]),
      baseline: baselineStart,
    };
    const times: Record<keyof typeof starts, number[]> = {
      production: [],
      noCache: [],
      sources: [],
      baseline: [],
    };
    for (const start of Object.values(starts)) await start();
    for (let i = 0; i < COLD_STARTS; i++) {
      for (const [name, start] of Object.entries(starts))
        times[name as keyof typeof starts].push(await start());
    }
    const { production: cold, noCache: coldNoCache, sources: coldSource, baseline: coldBaseline } = times;
    note(
      `cold starts (ms): ${cold.map(Math.round).join(' ')}; without compile cache: ${coldNoCache.map(Math.round).join(' ')}; TypeScript sources: ${coldSource.map(Math.round).join(' ')}; bare node:https: ${coldBaseline.map(Math.round).join(' ')}`,
    );

    // The flood: a fresh production webhook, its peak RSS and its /healthz meanwhile.
    const flooded = await spawnOne(production);
    const beforeFlood = memoryMB(flooded.child.pid!);
    const floodResult = await flood({
      url: flooded.url,
      ordinary: body,
      clients: CONCURRENCY,
      seconds: FLOOD_SECONDS,
    });
    const afterFlood = memoryMB(flooded.child.pid!);
    await flooded.stop();
    note(
      `flood: ${JSON.stringify(floodResult)}; memory before ${JSON.stringify(beforeFlood)}, after ${JSON.stringify(afterFlood)}`,
    );

    const round = (x: number, digits = 3) => Number(x.toFixed(digits));
    return {
      'webhook.throughputRatio': round(webhookRate / baselineRate),
      'webhook.reviewsPerSecond': Math.round(webhookRate),
      'webhook.baselinePerSecond': Math.round(baselineRate),
      'webhook.p50Ms': round(percentile(webhookLatencies, 50)),
      'webhook.p99Ms': round(percentile(webhookLatencies, 99)),
      'webhook.baselineP99Ms': round(percentile(baselineLatencies, 99)),
      'webhook.p99VsBaseline': round(percentile(webhookLatencies, 99) / percentile(baselineLatencies, 99)),
      'webhook.loadErrors': errors,
      'webhook.coldStartMs': Math.round(median(cold)),
      'webhook.coldStartNoCompileCacheMs': Math.round(median(coldNoCache)),
      'webhook.coldStartSourcesMs': Math.round(median(coldSource)),
      'webhook.baselineColdStartMs': Math.round(median(coldBaseline)),
      'webhook.coldStartVsBaseline': round(median(cold) / median(coldBaseline)),
      'webhook.serverCpuMicrosPerReview': Math.round(cpuPer('webhook')),
      'webhook.baselineCpuMicrosPerAnswer': Math.round(cpuPer('baseline')),
      'webhook.rssMBAtStart': memory.start.rss,
      'webhook.rssMBAt50k': memory.half.rss,
      'webhook.rssMB': memory.end.rss,
      'webhook.rssAnonMB': memory.end.anon,
      'webhook.rssMBSteps': steps,
      'webhook.floodPeakRssMB': afterFlood.hwm,
      'webhook.floodRssMBBefore': beforeFlood.rss,
      'webhook.floodHealthzMs': floodResult.healthz.maxMs,
      'webhook.floodHealthzP50Ms': floodResult.healthz.p50Ms,
      'webhook.floodOrdinaryReviewP99Ms': floodResult.ordinary.p99Ms,
      'webhook.flood': floodResult,
      'webhook.command': `node ${production.map((a) => a.replace(REPO, '')).join(' ')}`,
      'webhook.load': `${REQUESTS} requests x${ROUNDS} alternating rounds each (after ${WARMUP} warm-up), concurrency ${CONCURRENCY}, HTTPS keep-alive, ${body.length}-byte request`,
    };
  } finally {
    for (const child of children) await stop(child);
    rmSync(dir, { recursive: true, force: true });
  }
}
