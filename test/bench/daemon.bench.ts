// The daemon against the real kernel of this machine, in a private network namespace
// (`slipstream-bench-<random>`, deleted at the end, also on failure). This kernel has no flowtable
// support, so the daemon runs degraded: maps, chains and counters, no `flow add`.
//
//   daemon.addP99Ms      10,000 Services x 2 ports in the kernel; one Service added at a time, fed as
//                        daemon.ts feeds the Reconciler (informer snapshot + update + request('service'))
//                        through the real Reconciler and NapiKernel (nftables-napi), min sync interval 0
//                        (kube-proxy-style coalescing at 1 s would only measure the interval), until
//                        BOTH its elements are in the kernel, as seen by a separate process asking the
//                        kernel for each key (netlink GETSETELEM; nft 1.0.6 `get element` dumps the whole
//                        set first: ~150 ms at 20,000 elements); p99 of 200 adds (after 10 warm-up)
//   daemon.idleWrites    kernel writes of 3 resyncs with nothing changed (kernel.writes delta), checked
//                        by `nft monitor` (no new generation) and `nft -j list table` equality
//   daemon.resyncRatio   Reconciler.start() on an empty table with 50,000 Services x 2 ports (100,000
//                        elements), until committed, divided by `ip netns exec NS nft -f FILE` of the
//                        same table (listed back from the kernel); 3 of each, interleaved, medians
//   daemon.rssMB100k     VmRSS of the real daemon process (`node daemon/src/main.ts --services DIR
//                        --netns NS`) with 100,000 Services of 1 port (100,000 elements), at /readyz;
//                        plus a diagnostic run (MALLOC_ARENA_MAX=1, V8 heap figures from inside)
//   daemon.rssMBByServices  the same VmRSS at /readyz with 10, 1,000, 10,000 and 100,000 Services (the
//                        curve; the smaller runs skip the steady-state resyncs)
//
// `npm run bench -- daemon`, or `node test/bench/daemon.bench.ts` alone (prints the figures).
// SLIPSTREAM_BENCH_DAEMON_PHASES=add,resync,rss runs some phases only. Needs root, nft, ip, python3.

import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, get } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import type { Policy } from '@slipstream/shared/core/policy';
import type { Service } from '@slipstream/shared/core/service';
import { NftContext } from 'nftables-napi';
import { NapiKernel } from '../../daemon/src/kernel.ts';
import { Reconciler, type SyncResult } from '../../daemon/src/reconciler.ts';
import { elementKeys, namespaces, services, writeManifests } from './daemon-fixtures.ts';
import {
  createNetns,
  ElementProbe,
  median,
  type Netns,
  type RunRecord,
  round,
  spread,
  stopChild,
  TimingRunner,
} from './daemon-lab.ts';
import type { Figures, Goal } from './run.ts';

export const goals: Record<string, Goal> = {
  'daemon.addP99Ms': {
    max: 20,
    note: 'Service add -> both its elements readable in the kernel (independent per-key lookup), 10,000 Services x 2 ports present, min sync interval 0, p99 of 200 sequential adds (kube-proxy nftables mode: ~141 ms)',
  },
  'daemon.resyncRatio': {
    max: 1.3,
    note: 'first sync of 100,000 elements from an empty table (Reconciler.start) / nft -f of the same table; medians of 3 interleaved (issue goal: <= 1.3)',
  },
  'daemon.rssMB100k': {
    max: 300,
    note: 'VmRSS of the daemon process at /readyz with 100,000 Services (1 port each)',
  },
  'daemon.idleWrites': { max: 1, note: 'kernel transactions in 3 resyncs with no change (goal: 0)' },
};

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MAIN = join(ROOT, 'daemon/src/main.ts');

const ADD_BASE = 10_000;
const ADDS = 200;
const ADD_WARMUP = 10;
const RESYNCS = 3;
const RESYNC_SERVICES = 50_000;
const RESYNC_REPS = 3;
const RSS_SERVICES = 100_000;
/** Service counts of the RSS curve (RSS_SERVICES is its last point). */
const RSS_CURVE = [10, 1000, 10_000];
const RSS_PER_FILE = 1000;
const READY_TIMEOUT_MS = 240_000;
/** The RSS runs also wait for this many periodic resyncs (--resync-period) and read RSS again. */
const RSS_RESYNCS = 3;
const RSS_RESYNC_PERIOD = '8s';
/** Pause between two element lookups of the probe (each takes ~0.05 ms): the error is below ~0.6 ms. */
const POLL_MS = 0.5;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function note(text: string): void {
  process.stderr.write(`  daemon: ${text}\n`);
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`daemon bench: ${what}`);
}

function sha(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Elements in an `nft list table` text listing (one `: jump threshold-N` per element). */
function countElements(listing: string): number {
  return listing.match(/: jump threshold-/g)?.length ?? 0;
}

function deleteTable(ns: Netns): void {
  try {
    ns.nft(['delete', 'table', 'inet', 'slipstream']);
  } catch {
    // not there
  }
}

function newReconciler(ns: Netns, policy: Policy, minSyncIntervalMs: number) {
  const runner = new TimingRunner(new NftContext({ netns: ns.path }));
  const kernel = new NapiKernel(runner);
  const reconciler = new Reconciler({
    kernel,
    policy,
    minSyncIntervalMs,
    resyncIntervalMs: 0,
    logger: silentLogger,
  });
  return { runner, kernel, reconciler };
}

function recordMs(r: RunRecord | undefined): { serializeMs: number; libnftablesMs: number } {
  return r
    ? { serializeMs: round(r.serialized - r.start), libnftablesMs: round(r.end - r.serialized) }
    : { serializeMs: Number.NaN, libnftablesMs: Number.NaN };
}

// --- add latency and idle writes ----------------------------------------------------------

async function addPhase(ns: Netns, policy: Policy): Promise<Figures> {
  deleteTable(ns);
  const { runner, kernel, reconciler } = newReconciler(ns, policy, 0);
  const probe = new ElementProbe(ns, POLL_MS);
  try {
    // The informer's store; snapshot() lists it into a new array after every change (kubernetes.ts).
    const store = new Map<string, Service>();
    for (const s of services(0, ADD_BASE, 2)) store.set(`${s.namespace}/${s.name}`, s);
    reconciler.update({ services: [...store.values()], namespaces: namespaces(), devices: [] });
    const t0 = performance.now();
    const first = await reconciler.start();
    const initialSyncMs = performance.now() - t0;
    check(first.result === 'ok' && first.elements === 2 * ADD_BASE, `initial sync: ${JSON.stringify(first)}`);
    const baseListing = ns.nft(['list', 'table', 'inet', 'slipstream']);
    check(countElements(baseListing) === 2 * ADD_BASE, 'the kernel does not hold the initial elements');
    // Controls for the probe: an element that is there, one that is not.
    const present = await probe.lookup('svc4', elementKeys(services(0, 1, 2)[0]!));
    const absent = await probe.lookup('svc4', elementKeys(services(ADD_BASE, 1, 2)[0]!));
    check(present?.join() === 'threshold-20,threshold-20' && absent === null, 'the element probe is wrong');

    const latencies: number[] = [];
    const toCommit: number[] = [];
    const commit: number[] = [];
    const detect: number[] = [];
    for (let k = 0; k < ADD_WARMUP + ADDS; k++) {
      const s = services(ADD_BASE + k, 1, 2)[0]!;
      const keys = elementKeys(s);
      const synced = reconciler.nextSync();
      const writesBefore = runner.records.length;

      const start = performance.now();
      const startNs = process.hrtime.bigint();
      const found = probe.waitFor('svc4', keys);
      store.set(`${s.namespace}/${s.name}`, s);
      reconciler.update({ services: [...store.values()] });
      reconciler.request('service');
      const seen = await found;
      check(seen !== null, `add ${k}: the elements did not appear in the kernel`);
      const readable = start + Number(seen!.foundNs - startNs) / 1e6;
      check(
        seen!.chains.every((c) => c === `threshold-${s.ports[0]!.port === 5432 ? 20 : 100}`),
        `add ${k}: verdicts ${seen!.chains.join(',')}`,
      );

      const result: SyncResult = await synced;
      check(
        result.result === 'ok' && result.elementsAdded === 2 && result.writes === 1,
        `add ${k}: ${JSON.stringify(result)}`,
      );
      const write = runner.records.slice(writesBefore).find((r) => r.kind === 'write');
      if (k < ADD_WARMUP) continue;
      latencies.push(readable - start);
      if (write) {
        toCommit.push(write.start - start);
        commit.push(write.end - write.start);
        detect.push(readable - write.end);
      }
    }
    const addP99Ms = round(spread(latencies).p99);
    note(`add: p50 ${spread(latencies).p50} ms, p99 ${addP99Ms} ms over ${ADDS} adds`);

    // --- idle: three resyncs with nothing changed -------------------------------------------
    const monitor = ns.spawn('nft', ['monitor']);
    let monitorText = '';
    monitor.stdout!.setEncoding('utf8').on('data', (d: string) => {
      monitorText += d;
    });
    const generations = () => monitorText.match(/^# new generation/gm)?.length ?? 0;
    // Positive control: a write of ours must show up in the monitor before the resyncs count.
    const controlDeadline = Date.now() + 10_000;
    while (generations() === 0) {
      check(Date.now() < controlDeadline, 'nft monitor saw no generation for the control write');
      ns.nft(['add', 'table', 'inet', 'slipstream-bench-control']);
      ns.nft(['delete', 'table', 'inet', 'slipstream-bench-control']);
      await sleep(100);
    }
    const gensBefore = generations();
    const listingBefore = ns.nft(['-j', 'list', 'table', 'inet', 'slipstream']);
    const writesBefore = kernel.writes;
    const resyncMs: number[] = [];
    const resyncs: SyncResult[] = [];
    for (let i = 0; i < RESYNCS; i++) {
      const t = performance.now();
      resyncs.push(await reconciler.sync('resync'));
      resyncMs.push(performance.now() - t);
    }
    const idleWrites = kernel.writes - writesBefore;
    await sleep(500);
    const newGenerations = generations() - gensBefore;
    const listingAfter = ns.nft(['-j', 'list', 'table', 'inet', 'slipstream']);
    await stopChild(monitor);
    const listingUnchanged = sha(listingBefore) === sha(listingAfter);
    check(
      resyncs.every((r) => r.readBack && !r.drift),
      `resyncs did not read back, or saw drift: ${JSON.stringify(resyncs)}`,
    );
    // A zero that the kernel contradicts would be a wrong figure: fail rather than report it.
    check(
      idleWrites > 0 || (newGenerations === 0 && listingUnchanged),
      `kernel.writes says 0 but the kernel changed (${newGenerations} generations, listing changed: ${!listingUnchanged})`,
    );
    note(`idle: ${idleWrites} writes, ${newGenerations} new generations in 3 resyncs`);

    return {
      'daemon.addP99Ms': addP99Ms,
      'daemon.addP50Ms': round(spread(latencies).p50),
      'daemon.idleWrites': idleWrites,
      add: {
        servicesPresent: ADD_BASE,
        elementsPresent: 2 * ADD_BASE,
        elementsAfter: 2 * (ADD_BASE + ADD_WARMUP + ADDS),
        adds: ADDS,
        warmupAdds: ADD_WARMUP,
        minSyncIntervalMs: 0,
        readableCheck:
          'both elements looked up in the kernel (netlink NFT_MSG_GETSETELEM per key, no dump) by a separate process polling every 0.5 ms; time stamped there (CLOCK_MONOTONIC)',
        initialSyncMs: round(initialSyncMs),
        latencyMs: spread(latencies),
        // every add, in the order measured (the distribution chart plots them)
        latencySamplesMs: latencies.map((v) => round(v, 2)),
        // event -> the kernel edge's run() is called: snapshot, desiredRuleset, diff, changeToCommands
        eventToApplyMs: spread(toCommit),
        // run() call -> resolved: JSON.stringify, libnftables, kernel commit, back on the event loop
        applyRunMs: spread(commit),
        // run() resolved -> seen by the probe (negative: the kernel had it before Node saw the promise)
        applyResolvedToSeenMs: spread(detect),
      },
      idle: {
        resyncs: RESYNCS,
        writes: idleWrites,
        newKernelGenerations: newGenerations,
        listingUnchanged,
        listingSha: sha(listingAfter),
        results: resyncs.map((r) => r.result),
        readBackMs: spread(resyncMs),
      },
    };
  } finally {
    await reconciler.stop();
    kernel.close();
    await probe.close();
  }
}

// --- full sync from empty vs nft -f ---------------------------------------------------------

async function resyncPhase(ns: Netns, policy: Policy, dir: string): Promise<Figures> {
  const list = services(0, RESYNC_SERVICES, 2);
  const nss = namespaces();
  const file = join(dir, 'slipstream-100k.nft');
  let listing: string | undefined;
  const daemonMs: number[] = [];
  const nftMs: number[] = [];
  const breakdowns: Record<string, number>[] = [];

  const daemonRun = async () => {
    deleteTable(ns);
    const { runner, kernel, reconciler } = newReconciler(ns, policy, 1000);
    try {
      reconciler.update({ services: list, namespaces: nss, devices: [] });
      const t0 = performance.now();
      const result = await reconciler.start();
      const t1 = performance.now();
      check(
        result.result === 'ok' && result.elementsAdded === 2 * RESYNC_SERVICES && result.writes === 1,
        `full sync: ${JSON.stringify(result)}`,
      );
      daemonMs.push(t1 - t0);
      const probe = runner.records.find((r) => r.kind === 'probe');
      const read = runner.records.find((r) => r.kind === 'read');
      const write = runner.records.find((r) => r.kind === 'write');
      check(probe !== undefined && read !== undefined && write !== undefined, 'missing kernel runs');
      breakdowns.push({
        totalMs: round(t1 - t0),
        probeMs: round(probe!.end - probe!.start),
        readTableMs: round(read!.end - read!.start),
        computeDiffCommandsMs: round(write!.start - read!.end),
        ...recordMs(write),
        afterCommitMs: round(t1 - write!.end),
        commandBytes: write!.bytes,
      });
    } finally {
      await reconciler.stop();
      kernel.close();
    }
    if (listing === undefined) {
      listing = ns.nft(['list', 'table', 'inet', 'slipstream']);
      check(countElements(listing) === 2 * RESYNC_SERVICES, 'the kernel does not hold 100,000 elements');
      writeFileSync(file, listing);
    }
  };
  const nftRun = () => {
    deleteTable(ns);
    const r = ns.timedNft(['-f', file]);
    check(r.status === 0, `nft -f failed: ${r.stderr.slice(0, 500)}`);
    nftMs.push(r.ms);
  };

  for (let rep = 0; rep < RESYNC_REPS; rep++) {
    // Alternate the order (the listing file comes from the first daemon run).
    if (rep % 2 === 0) {
      await daemonRun();
      nftRun();
    } else {
      nftRun();
      await daemonRun();
    }
    note(`resync rep ${rep + 1}: daemon ${round(daemonMs.at(-1)!)} ms, nft -f ${round(nftMs.at(-1)!)} ms`);
  }
  // The table nft -f loaded is the one the daemon wrote.
  const reloaded = ns.nft(['list', 'table', 'inet', 'slipstream']);
  check(sha(reloaded) === sha(listing!), 'nft -f did not load the same table');
  const spawnMs: number[] = [];
  for (let i = 0; i < 3; i++) spawnMs.push(ns.timedNft(['--version']).ms);
  deleteTable(ns);

  const ratio = median(daemonMs) / median(nftMs);
  return {
    'daemon.resyncRatio': round(ratio, 3),
    'daemon.resyncMs': round(median(daemonMs)),
    'daemon.resyncNftFileMs': round(median(nftMs)),
    resync: {
      services: RESYNC_SERVICES,
      elements: 2 * RESYNC_SERVICES,
      reps: RESYNC_REPS,
      daemonMs: daemonMs.map((v) => round(v)),
      nftFileMs: nftMs.map((v) => round(v)),
      nftFileBytes: listing!.length,
      nftSpawnOverheadMs: round(median(spawnMs)),
      daemonBreakdown: breakdowns,
    },
  };
}

// --- RSS of the daemon process with 100,000 Services ----------------------------------------

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function httpStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = get(url, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.setTimeout(2000, () => req.destroy());
    req.once('error', () => resolve(0));
  });
}

function httpJson(url: string): Promise<unknown> {
  return new Promise((resolve) => {
    const req = get(url, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => {
        try {
          resolve(JSON.parse(body));
        } catch {
          resolve(null);
        }
      });
    });
    req.setTimeout(2000, () => req.destroy());
    req.once('error', () => resolve(null));
  });
}

function procStatus(pid: number): { rssMB: number; hwmMB: number; anonMB: number; fileMB: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const mb = (field: string) => round(Number(new RegExp(`${field}:\\s+(\\d+)`).exec(text)?.[1]) / 1024, 1);
  return { rssMB: mb('VmRSS'), hwmMB: mb('VmHWM'), anonMB: mb('RssAnon'), fileMB: mb('RssFile') };
}

interface DaemonRun {
  readyMs: number;
  atReady: ReturnType<typeof procStatus>;
  after2s: ReturnType<typeof procStatus>;
  /** After RSS_RESYNCS periodic resyncs (each reads the 100,000 elements back). */
  afterResyncs: ReturnType<typeof procStatus> & { resyncs: number };
  elements: number;
  heap?: Record<string, number>;
  heapAfterResyncs?: Record<string, number>;
}

/** Starts the real daemon on the manifests, waits for /readyz, reads its memory, stops it. */
async function daemonProcess(
  ns: Netns,
  manifests: string,
  options: { env?: NodeJS.ProcessEnv; preload?: string; services?: number; resyncs?: number } = {},
): Promise<DaemonRun> {
  const services = options.services ?? RSS_SERVICES;
  const resyncs = options.resyncs ?? RSS_RESYNCS;
  deleteTable(ns);
  const port = await freePort();
  const args = [
    ...(options.preload ? ['--import', options.preload] : []),
    MAIN,
    '--services',
    manifests,
    '--netns',
    ns.name,
    '--health-listen',
    `127.0.0.1:${port}`,
    '--resync-period',
    RSS_RESYNC_PERIOD,
  ];
  const t0 = performance.now();
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, OTEL_TRACES_EXPORTER: 'none', ...options.env },
  });
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    log = (log + d).slice(-20_000);
  });
  try {
    let readyMs = 0;
    for (;;) {
      check(child.exitCode === null, `the daemon exited (${child.exitCode}): ${log.slice(-2000)}`);
      check(
        performance.now() - t0 < READY_TIMEOUT_MS,
        `the daemon was not ready in time: ${log.slice(-2000)}`,
      );
      if ((await httpStatus(`http://127.0.0.1:${port}/readyz`)) === 200) {
        readyMs = performance.now() - t0;
        break;
      }
      await sleep(50);
    }
    const atReady = procStatus(child.pid!);
    const heapReport = async (): Promise<Record<string, number> | undefined> => {
      if (!options.preload) return undefined;
      const before = log.split('slipstream-bench-memory ').length;
      child.kill('SIGUSR2');
      const deadline = Date.now() + 5000;
      while (log.split('slipstream-bench-memory ').length === before && Date.now() < deadline)
        await sleep(20);
      const m = [...log.matchAll(/slipstream-bench-memory (\{[^\n]*\})\n/g)].at(-1);
      if (!m) return undefined;
      const usage = JSON.parse(m[1]!) as Record<string, number>;
      return Object.fromEntries(Object.entries(usage).map(([k, v]) => [`${k}MB`, round(v / 2 ** 20, 1)]));
    };
    const heap = await heapReport();
    await sleep(2000);
    const after2s = procStatus(child.pid!);
    const elements = countElements(ns.nft(['list', 'table', 'inet', 'slipstream']));
    check(elements === services, `the kernel holds ${elements} elements, not ${services}`);

    // Steady state: the periodic resyncs read the whole table back (libnftables JSON output).
    const seen = new Set<string>();
    const deadline = performance.now() + resyncs * 60_000;
    while (seen.size < resyncs && performance.now() < deadline) {
      const health = (await httpJson(`http://127.0.0.1:${port}/healthz`)) as {
        lastSync?: { trigger?: string; readBack?: boolean };
        lastSuccessAt?: string;
      } | null;
      if (health?.lastSync?.trigger === 'resync' && health.lastSync.readBack && health.lastSuccessAt) {
        seen.add(health.lastSuccessAt);
      }
      await sleep(250);
    }
    const afterResyncs = { ...procStatus(child.pid!), resyncs: seen.size };
    const heapAfterResyncs = await heapReport();
    const code = await stopChild(child);
    check(code === 0, `the daemon exited with ${code}: ${log.slice(-2000)}`);
    return {
      readyMs,
      atReady,
      after2s,
      afterResyncs,
      elements,
      ...(heap ? { heap } : {}),
      ...(heapAfterResyncs ? { heapAfterResyncs } : {}),
    };
  } finally {
    await stopChild(child);
  }
}

async function rssPhase(ns: Netns, dir: string): Promise<Figures> {
  const curve: Record<string, number> = {};
  for (const n of RSS_CURVE) {
    const small = join(dir, `manifests-${n}`);
    writeManifests(small, n, RSS_PER_FILE, 1);
    const run = await daemonProcess(ns, small, { services: n, resyncs: 0 });
    curve[String(n)] = run.atReady.rssMB;
    note(`rss: ${run.atReady.rssMB} MB at ready with ${n} Services`);
  }
  const manifests = join(dir, 'manifests');
  const bytes = writeManifests(manifests, RSS_SERVICES, RSS_PER_FILE, 1);
  const plain = await daemonProcess(ns, manifests);
  note(
    `rss: ${plain.atReady.rssMB} MB at ready (${round(plain.readyMs / 1000, 1)} s), ${plain.afterResyncs.rssMB} MB after ${plain.afterResyncs.resyncs} resyncs`,
  );
  // Diagnostic run: one glibc malloc arena (native memory freed by libnftables on a libuv thread
  // is then reused, not kept per thread), and the V8 heap figures from inside the process.
  const diag = await daemonProcess(ns, manifests, {
    env: { MALLOC_ARENA_MAX: '1' },
    preload: fileURLToPath(new URL('./daemon-memreport.ts', import.meta.url)),
  });
  note(
    `rss with MALLOC_ARENA_MAX=1: ${diag.atReady.rssMB} MB at ready, ${diag.afterResyncs.rssMB} MB after resyncs; heap ${JSON.stringify(diag.heap)}`,
  );
  deleteTable(ns);
  return {
    'daemon.rssMB100k': plain.atReady.rssMB,
    'daemon.rssMBByServices': { ...curve, [String(RSS_SERVICES)]: plain.atReady.rssMB },
    'daemon.startup100kMs': Math.round(plain.readyMs),
    rss: {
      services: RSS_SERVICES,
      portsPerService: 1,
      elements: plain.elements,
      manifestFiles: Math.ceil(RSS_SERVICES / RSS_PER_FILE) + 1,
      manifestMB: round(bytes / 2 ** 20, 1),
      command: `node daemon/src/main.ts --services DIR --netns NS --health-listen 127.0.0.1:PORT --resync-period ${RSS_RESYNC_PERIOD}`,
      env: `OTEL_TRACES_EXPORTER=none; --resync-period ${RSS_RESYNC_PERIOD}; default --min-sync-period (1s)`,
      readyMs: Math.round(plain.readyMs),
      atReady: plain.atReady,
      after2s: plain.after2s,
      afterResyncs: plain.afterResyncs,
      diagnostic: {
        what: 'same run with MALLOC_ARENA_MAX=1 and a SIGUSR2 memoryUsage() reporter preloaded',
        readyMs: Math.round(diag.readyMs),
        atReady: diag.atReady,
        afterResyncs: diag.afterResyncs,
        heapAtReady: diag.heap ?? 'not reported',
        heapAfterResyncs: diag.heapAfterResyncs ?? 'not reported',
      },
    },
  };
}

// --- the module ---------------------------------------------------------------------------

export async function run(): Promise<Figures> {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) throw new Error(`daemon bench needs Node 24 (this is ${process.version})`);
  const phases = new Set(
    (process.env.SLIPSTREAM_BENCH_DAEMON_PHASES ?? 'add,resync,rss').split(',').map((p) => p.trim()),
  );
  const policy = loadDefaultPolicy();
  const ns = createNetns();
  const dir = mkdtempSync(join(tmpdir(), 'slipstream-bench-daemon-'));
  const started = performance.now();
  const loadAtStart = loadavg().map((v) => round(v));
  note(`namespace ${ns.name}`);
  const figures: Figures = {};
  const details: Record<string, unknown> = {};
  const phaseSeconds: Record<string, number> = {};
  const keep = (out: Figures) => {
    for (const [k, v] of Object.entries(out)) {
      if (k.startsWith('daemon.')) figures[k] = v;
      else details[k] = v;
    }
  };
  try {
    for (const [name, phase] of [
      ['add', () => addPhase(ns, policy)],
      ['resync', () => resyncPhase(ns, policy, dir)],
      ['rss', () => rssPhase(ns, dir)],
    ] as const) {
      if (!phases.has(name)) continue;
      const t = performance.now();
      keep(await phase());
      phaseSeconds[name] = round((performance.now() - t) / 1000, 1);
    }
  } finally {
    await ns.remove();
    rmSync(dir, { recursive: true, force: true });
  }
  const loadNow = loadavg();
  figures['daemon.context'] = {
    node: process.version,
    kernel: release(),
    nft: nftVersion(),
    cpus: cpus().length,
    loadAverage: { start: loadAtStart, end: loadNow.map((v) => round(v)) },
    mode: 'degraded (no flowtable support): maps, chains, counters; no flow add',
    netns: 'private slipstream-bench-<random>, created and deleted by the bench',
    elements: {
      add: `${2 * ADD_BASE} present (${ADD_BASE} Services x 2 ports), +2 per add`,
      resync: `${2 * RESYNC_SERVICES} (${RESYNC_SERVICES} Services x 2 ports)`,
      rss: `${RSS_SERVICES} (${RSS_SERVICES} Services x 1 port)`,
    },
    minSyncIntervalMs: { add: 0, resync: 'n/a (Reconciler.start syncs at once)', rss: 1000 },
    seconds: round((performance.now() - started) / 1000, 1),
    phaseSeconds,
  };
  // Distributions and breakdowns. (run.ts replaces `daemon.context` with its own; this key stays.)
  figures['daemon.details'] = details;
  return figures;
}

function nftVersion(): string {
  try {
    return execFileSync('nft', ['--version']).toString().trim();
  } catch {
    return 'unknown';
  }
}

// `node test/bench/daemon.bench.ts`: run this module alone and print its figures.
if (import.meta.url === `file://${process.argv[1]}`) {
  const figures = await run();
  process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);
}
