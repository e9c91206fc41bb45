// Diagnostic, not a benchmark (nothing asserted, nothing recorded): the daemon as the DaemonSet
// runs it, in files mode on N generated Services in a private netns, with its memory at ready
// and after R resyncs (SIGHUP), and either process.memoryUsage() or a V8 heap snapshot at each
// (--heapsnapshot-signal=SIGUSR2). Summarise a snapshot with heap-summary.mjs.
//
//   node test/bench/daemon-heap.ts [services=100000] [resyncs=0] [memory|snapshot] [out=/tmp/daemon-heap]

import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildBundle, DAEMON } from '../../scripts/build.ts';
import { writeManifests } from './daemon-fixtures.ts';
import { createNetns } from './daemon-lab.ts';
import { DaemonProcess, daemonSetShape } from './daemon-process.ts';

const services = Number(process.argv[2] ?? 100_000);
const resyncs = Number(process.argv[3] ?? 0);
const snapshots = process.argv[4] === 'snapshot';
const out = process.argv[5] ?? '/tmp/daemon-heap';
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * SIGUSR2, then the new snapshot file's path once it is complete: V8 writes it on the main
 * thread, so the daemon answering /healthz again means it is done.
 */
async function snapshot(daemon: DaemonProcess): Promise<string> {
  const before = new Set(readdirSync(out));
  daemon.child.kill('SIGUSR2');
  for (;;) {
    await sleep(500);
    const file = readdirSync(out).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (!file) continue;
    while (Object.keys(await daemon.health()).length === 0) await sleep(200);
    const size = statSync(join(out, file)).size;
    await sleep(1000);
    if (statSync(join(out, file)).size === size) return join(out, file);
  }
}

async function report(daemon: DaemonProcess, label: string): Promise<void> {
  const figures = snapshots ? { snapshot: await snapshot(daemon) } : { heap: await daemon.heap() };
  console.log(JSON.stringify({ [label]: daemon.memory(), ...figures }));
}

mkdirSync(out, { recursive: true });
const ns = createNetns();
try {
  const dir = join(out, `manifests-${services}`);
  writeManifests(dir, services, 1000, 1);
  await buildBundle(DAEMON);
  const shape = daemonSetShape();
  const nodeFlags = snapshots
    ? [...shape.nodeFlags, '--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${out}`]
    : shape.nodeFlags;
  const { daemon, readyMs } = await DaemonProcess.start({
    source: ['--services', dir],
    netns: ns.name,
    nodeFlags,
    memreport: !snapshots,
    readyTimeoutMs: 240_000,
  });
  console.log(JSON.stringify({ services, readyMs: Math.round(readyMs) }));
  await sleep(1000);
  await report(daemon, 'atReady');
  if (resyncs > 0) {
    for (let i = 0; i < resyncs; i++) await daemon.resync(240_000);
    await sleep(1000);
    await report(daemon, 'afterResyncs');
  }
  await daemon.stop();
} finally {
  await ns.remove();
}
