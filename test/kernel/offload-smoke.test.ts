import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type Lab, prepareLab, runInVm, VmLabError, type VmResult } from './lab.ts';

const SVC_IP4 = '10.96.0.10';
const SVC_IP6 = 'fd00:96::10';

interface CtEntry {
  line: string;
  /** Original-direction destination (the ClusterIP for Service traffic). */
  dst: string;
  dport: number;
  /** Original-direction counters (for an offloaded flow they lag: the flowtable syncs them periodically). */
  packets: number;
  bytes: number;
  offload: boolean;
}

/** Parses `conntrack -L` output; the first dst=/dport=/packets= of a line belong to the original direction. */
function parseConntrack(text: string): CtEntry[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('tcp '))
    .map((line) => ({
      line,
      dst: /\bdst=(\S+)/.exec(line)?.[1] ?? '',
      dport: Number(/\bdport=(\d+)/.exec(line)?.[1] ?? Number.NaN),
      packets: Number(/\bpackets=(\d+)/.exec(line)?.[1] ?? Number.NaN),
      bytes: Number(/\bbytes=(\d+)/.exec(line)?.[1] ?? Number.NaN),
      offload: line.includes('[OFFLOAD]'),
    }));
}

interface NftJson {
  nftables: Array<{
    rule?: { comment?: string; expr: Array<{ counter?: { packets: number; bytes: number } }> };
  }>;
}

function counterPackets(json: NftJson, comment: string): number {
  const rule = json.nftables.find((o) => o.rule?.comment === comment)?.rule;
  const counter = rule?.expr.find((e) => e.counter)?.counter;
  if (!counter) throw new Error(`no counter rule with comment ${comment} in the forward chain JSON`);
  return counter.packets;
}

interface IperfJson {
  error?: string;
  end: { sum_received: { bytes: number; bits_per_second: number } };
}

/** Processes whose command line mentions `needle` (to prove no qemu survives a run). */
async function processesMentioning(needle: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(needle)) found.push(`${pid}: ${cmd.replaceAll('\0', ' ')}`);
  }
  return found;
}

function report(name: string, r: VmResult): void {
  const t = r.timings;
  console.info(`[vmlab] ${name}: boot ${t.bootMs} ms, scenario ${t.scenarioMs} ms, total ${t.totalMs} ms`);
}

function consoleOf(r: VmResult): string {
  return `scenario rc=${r.rc}; console:\n${r.console}`;
}

describe('kernel VM lab', () => {
  let lab: Lab;
  const runs: VmResult[] = [];

  beforeAll(async () => {
    lab = await prepareLab();
    console.info(
      `[vmlab] kernel ${lab.kver} (${lab.kernelKind}), cache ${lab.cacheDir}` +
        (lab.built ? `, built in ${lab.buildMs} ms` : ', cached'),
    );
  });

  afterAll(async () => {
    for (const r of runs) await r.cleanup();
  });

  test('offload smoke: a ClusterIP flow is offloaded to the flowtable (IPv4 and IPv6)', async () => {
    const r = await runInVm({ scenario: 'bash test/kernel/scenarios/smoke-offload.sh', timeoutMs: 180_000 });
    runs.push(r);
    report('smoke-offload', r);
    expect(r.rc, consoleOf(r)).toBe(0);

    const env = await r.readJson<{ kernel: string }>('env.json');
    expect(env.kernel).toBe(lab.kver);

    const forward = await r.readJson<NftJson>('forward-counter.json');
    for (const [fam, vip] of [
      ['v4', SVC_IP4],
      ['v6', SVC_IP6],
    ] as const) {
      const iperf = await r.readJson<IperfJson>(`iperf-${fam}.json`);
      expect(iperf.error, `iperf3 ${fam}`).toBeUndefined();
      const received = iperf.end.sum_received.bytes;
      console.info(
        `[vmlab] ${fam}: ${(received / 1e6).toFixed(0)} MB at ${(iperf.end.sum_received.bits_per_second / 1e6).toFixed(0)} Mbit/s`,
      );
      expect(received, `${fam} bytes received`).toBeGreaterThan(100e6);

      // conntrack taken while the transfer ran: the iperf3 data connection (the flow to the ClusterIP
      // port 5201 with the most bytes) is in the flowtable; the iperf3 control connection (~15 packets,
      // under the 20-packet threshold) is not.
      const snap = await r.readJson<{ iperf_running: boolean }>(`snapshot-${fam}.json`);
      expect(snap.iperf_running, `${fam} conntrack snapshot taken during the transfer`).toBe(true);
      const ct = await r.readText(`conntrack-${fam}.txt`);
      const toSvc = parseConntrack(ct).filter((e) => e.dst === vip && e.dport === 5201);
      expect(toSvc.length, `${fam} conntrack entries to ${vip}:5201 in\n${ct}`).toBeGreaterThanOrEqual(2);
      const data = toSvc.reduce((a, b) => (b.bytes > a.bytes ? b : a));
      expect(data.offload, `${fam} data flow should be [OFFLOAD]: ${data.line}`).toBe(true);
      for (const e of toSvc.filter((x) => x !== data)) expect(e.offload, e.line).toBe(false);

      // The forward chain only saw the packets before offload (a few dozen), not the ~100k of the transfer.
      const slowPath = counterPackets(forward, `slow-path-${fam}`);
      console.info(`[vmlab] ${fam}: forward chain saw ${slowPath} packets`);
      expect(slowPath).toBeLessThan(1000);
    }

    // Negative control: a short, idle connection to a port outside the offload set stays on the slow path.
    const idle = parseConntrack(await r.readText('conntrack-v4.txt')).filter(
      (e) => e.dst === SVC_IP4 && e.dport === 8080,
    );
    expect(idle.length).toBe(1);
    expect(idle[0]!.offload, idle[0]!.line).toBe(false);
  });

  test('scenario exit code, cwd, $LAB and Node 24 with .ts imports inside the VM', async () => {
    const probe =
      "import('./test/kernel/lab.ts').then((m) => console.log(JSON.stringify({ node: process.version, " +
      'cwd: process.cwd(), lab: process.env.LAB, uid: process.getuid(), runInVm: typeof m.runInVm })))';
    const r = await runInVm({
      scenario: `node_modules/.bin/node -e "${probe}" > "$LAB/probe.json" && echo "$GREETING" > "$LAB/env.txt"; exit 7`,
      env: { GREETING: "it's me" },
      timeoutMs: 120_000,
    });
    runs.push(r);
    report('probe', r);
    expect(r.rc, consoleOf(r)).toBe(7);
    const probeOut = await r.readJson<Record<string, unknown>>('probe.json');
    expect(probeOut).toEqual({
      node: expect.stringMatching(/^v24\./),
      cwd: path.resolve(import.meta.dirname, '../..'),
      lab: r.labDir,
      uid: 0,
      runInVm: 'function',
    });
    expect(await r.readText('env.txt')).toBe("it's me\n");
    expect(r.console).toMatch(/^VMLAB: END rc=7\b/m);
  });

  test('a scenario cwd under the host /tmp stays visible (read-only) in the VM', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'slipstream-vmlab-cwd-'));
    try {
      await writeFile(path.join(dir, 'hello.sh'), 'echo "hello from $(pwd)" > "$LAB/hello.txt"\n');
      const r = await runInVm({
        scenario: 'sh hello.sh && ! touch x 2>/dev/null',
        cwd: dir,
        timeoutMs: 60_000,
      });
      runs.push(r);
      report('cwd-under-tmp', r);
      expect(r.rc, consoleOf(r)).toBe(0);
      expect(await r.readText('hello.txt')).toBe(`hello from ${dir}\n`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('rejects with the reason when the kernel path does not exist', async () => {
    const err = await runInVm({
      scenario: 'true',
      timeoutMs: 60_000,
      kernel: '/nonexistent/vmlinuz-bogus',
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmLabError);
    expect((err as Error).message).toMatch(/kernel image \/nonexistent\/vmlinuz-bogus does not exist/);
  });

  test('rejects with the reason when the kernel file is not a bootable kernel', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'slipstream-vmlab-bogus-'));
    try {
      const bogus = path.join(dir, `vmlinuz-${lab.kver}`);
      await writeFile(bogus, 'this is not a kernel\n'.repeat(1000));
      const err = await runInVm({
        scenario: 'true',
        timeoutMs: 60_000,
        kernel: bogus,
        cacheRoot: path.join(dir, 'cache'),
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(VmLabError);
      const e = err as VmLabError;
      expect(e.message).toMatch(/^VM cannot start: qemu exited \(code 1\) before the scenario started/);
      expect(e.message).toMatch(/qemu stderr:\n.*\S/);
      if (e.labDir) await rm(e.labDir, { recursive: true, force: true });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('kills the VM and rejects when the scenario outlives the timeout', async () => {
    const t0 = performance.now();
    const err = await runInVm({ scenario: 'echo sleeping; sleep 600', timeoutMs: 15_000 }).catch(
      (e: unknown) => e,
    );
    const elapsed = performance.now() - t0;
    expect(err).toBeInstanceOf(VmLabError);
    const e = err as VmLabError;
    // Boot normally takes 2.5-4 s, but a loaded host can stretch it; the kill must work in either phase.
    expect(e.message).toMatch(
      /VM timed out after 15000 ms \((scenario was running|still booting)\); qemu killed/,
    );
    if (e.message.includes('scenario was running')) expect(e.console).toContain('sleeping');
    expect(elapsed).toBeLessThan(15_000 + 5_000);
    expect(e.labDir).toBeDefined();
    expect(await processesMentioning(e.labDir!)).toEqual([]);
    await rm(e.labDir!, { recursive: true, force: true });
  });
});
