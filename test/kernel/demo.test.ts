/**
 * `npm run demo` where the host kernel has no flowtables: the demo's core (scenarios/demo.sh) in one VM boot,
 * through the same function the demo calls (demo.ts). Asserts on what it shows: status rows with the Service
 * port offloaded, the measured flows (offloaded with offload on, not without), the bytes it reports, and that
 * an interrupted demo leaves no VM and no lab directory behind. Throughput under TCG is noisy: it is checked to
 * be measured, never compared.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { DEMO_TIMEOUT_MS, runDemoInVm } from './demo.ts';
import {
  bulkConnection,
  connectionsTo,
  parseConntrack,
  parseStatusTable,
  type StatusRow,
} from './evidence.ts';
import { REPO_ROOT, type VmResult } from './lab.ts';

const SVC = '10.96.20.20';
const PORT = 5201;

interface DemoJson {
  offMbps: number;
  onMbps: number;
  bytesFrom: string;
  readings: { atMs: number; offloaded: string; bytes: number }[];
}

function iperfRow(rows: StatusRow[]): StatusRow | undefined {
  return rows.find((r) => r.SERVICE === 'media/iperf3' && r.PORT?.startsWith(`${PORT}/TCP`));
}

describe('npm run demo in the VM (one boot)', () => {
  let r: VmResult;
  const lines: string[] = [];
  let why: string;

  beforeAll(async () => {
    r = await runDemoInVm({ onLine: (line) => lines.push(line) });
    why = `demo rc=${r.rc}; evidence in ${r.labDir}; output:\n${lines.join('\n')}`;
    const timeline = await r.readText('timeline.txt').catch(() => '(none)');
    console.info(
      `[vmlab] demo: boot ${r.timings.bootMs} ms, scenario ${r.timings.scenarioMs} ms; timeline:\n${timeline}`,
    );
  }, DEMO_TIMEOUT_MS + 60_000);

  // A failure keeps the evidence (the VM's lab directory) for inspection.
  let failed = false;
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') failed = true;
  });
  afterAll(async () => {
    if (r && (failed || r.rc !== 0)) console.info(`[vmlab] demo evidence kept in ${r.labDir}`);
    else await r?.cleanup();
  });

  test('it succeeds, stays short and ends with one line saying what was shown', () => {
    expect(r.rc, why).toBe(0);
    expect(lines.length, why).toBeLessThanOrEqual(20);
    expect(lines.at(-1), why).toMatch(
      /^Shown: the real daemon offloaded a long flow to the ClusterIP of media\/iperf3 \(status: OFFLOADED [1-9]/,
    );
  });

  test('both status readings show media/iperf3 5201/TCP in the kernel with OFFLOADED >= 1, on a node with flowtables', async () => {
    for (const n of [1, 2]) {
      const text = await r.readText(`status-${n}.txt`);
      expect(text, `status-${n}.txt`).toMatch(/^node: flowtable offload available$/m);
      const row = iperfRow(parseStatusTable(text));
      expect(row, `the media/iperf3 row in status-${n}.txt:\n${text}`).toMatchObject({
        DECISION: 'offload',
        THRESHOLD: '20',
        'IN KERNEL': 'yes',
      });
      expect(Number(row!.OFFLOADED), `OFFLOADED in status-${n}.txt`).toBeGreaterThanOrEqual(1);
      // What status counts is there: conntrack, read right after, holds that connection [OFFLOAD].
      const ct = parseConntrack(await r.readText(`ct-${n}.txt`));
      expect(
        connectionsTo(ct, 'tcp', SVC, PORT).some((c) => c.offload),
        `ct-${n}.txt`,
      ).toBe(true);
    }
    // The demo printed those rows as status printed them.
    const printed = lines.filter((l) => l.trimStart().startsWith('media/iperf3 '));
    expect(printed.length, why).toBe(2);
    const first = (await r.readText('status-1.txt')).split('\n').find((l) => l.startsWith('media/iperf3 '));
    expect(printed[0]!.trim()).toBe(first!.trim());
  });

  test('the flow measured with offload was offloaded; the one without was not', async () => {
    // Taken while each measured flow ran; earlier flows linger in TIME_WAIT (and an offloaded flow's
    // counters stop at offload), so the open connections are the ones that count.
    const open = async (name: string) =>
      connectionsTo(parseConntrack(await r.readText(name)), 'tcp', SVC, PORT).filter(
        (c) => c.state !== 'TIME_WAIT' && c.state !== 'CLOSE',
      );
    const on = await open('ct-on.txt');
    expect(
      on.some((c) => c.offload),
      `ct-on.txt:\n${on.map((c) => c.line).join('\n')}`,
    ).toBe(true);
    const off = bulkConnection(await open('ct-off.txt'), 'tcp', SVC, PORT);
    expect(off?.offload, `ct-off.txt: ${off?.line}`).toBe(false);
    // Without offload every packet takes the slow path, so conntrack counted the whole flow.
    expect(off!.packets, off!.line).toBeGreaterThan(1000);
    const demo = await r.readJson<DemoJson>('demo.json');
    expect(demo.onMbps).toBeGreaterThan(0);
    expect(demo.offMbps).toBeGreaterThan(0);
    // The last line shows them, rounded.
    const shown = /\((\d+) vs (\d+) Mbit\/s\)/.exec(lines.at(-1) ?? '');
    expect(shown, lines.at(-1)).not.toBeNull();
    expect(Math.abs(Number(shown![1]) - demo.onMbps)).toBeLessThanOrEqual(0.5);
    expect(Math.abs(Number(shown![2]) - demo.offMbps)).toBeLessThanOrEqual(0.5);
  });

  test('the bytes it shows are those of the offloaded connection', async () => {
    const demo = await r.readJson<DemoJson>('demo.json');
    expect(demo.bytesFrom).toBe('conntrack');
    for (const [i, reading] of demo.readings.entries()) {
      const ct = connectionsTo(parseConntrack(await r.readText(`ct-${i + 1}.txt`)), 'tcp', SVC, PORT);
      const offloaded = ct.filter((c) => c.offload);
      expect(reading.bytes).toBe(Math.max(...offloaded.map((c) => c.bytes)));
      expect(reading.bytes, 'more than the first 20 packets').toBeGreaterThan(20 * 40);
    }
  });

  // The flowtable's `counter` flag keeps conntrack counting an offloaded connection.
  test('the bytes of the offloaded connection grow between the two readings', async () => {
    const demo = await r.readJson<DemoJson>('demo.json');
    const [a, b] = demo.readings;
    expect(b!.bytes, JSON.stringify(demo.readings)).toBeGreaterThan(a!.bytes);
  });
});

/** Processes whose parent is `pid`, with their command lines. */
function children(pid: number): { pid: number; cmdline: string }[] {
  const out: { pid: number; cmdline: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== pid) continue;
      out.push({
        pid: Number(entry),
        cmdline: readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' '),
      });
    } catch {}
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

describe('an interrupted demo', () => {
  let child: ChildProcess | undefined;
  afterAll(() => {
    child?.kill('SIGKILL');
  });

  test('SIGINT stops the VM and removes its lab directory', async () => {
    child = spawn(process.execPath, ['test/kernel/demo.ts'], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    // Wait until the VM runs the scenario (its first line), then interrupt.
    let qemu: { pid: number; cmdline: string } | undefined;
    const deadline = Date.now() + 120_000;
    while (!(qemu && out.includes('\nnode: '))) {
      expect(Date.now() < deadline, `the demo did not start its VM:\n${out}`).toBe(true);
      qemu ??= children(child.pid!).find((c) => c.cmdline.includes('qemu-system'));
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const labDir = /LAB=(\S+)/.exec(qemu.cmdline)?.[1];
    expect(labDir && existsSync(labDir), `the lab directory in ${qemu.cmdline}`).toBe(true);
    child.kill('SIGINT');
    expect(await exited, out).toBe(130);
    expect(alive(qemu.pid), `qemu ${qemu.pid} still runs`).toBe(false);
    expect(existsSync(labDir!), `${labDir} is left behind`).toBe(false);
  }, 180_000);
});
