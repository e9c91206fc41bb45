// The data plane with and without Slipstream, in the kernel VM lab (test/kernel/lab.ts: Debian's kernel
// under qemu TCG, `-cpu qemu64 -smp 2`), in one VM boot running test/kernel/scenarios/bench-dataplane.sh:
// client pod -- router (the VM's root netns) -- server pod, a kube-proxy stand-in DNAT-ing ClusterIPs to
// the server, and a firewall table whose forward chain holds R rules that never match (a stand-in for
// NetworkPolicy/firewall rules). "on" is the table the real daemon programmed in that VM (saved once with
// `nft list table`, reloaded with `nft -f` between repetitions); "off" is no slipstream table (and conntrack
// accounting off, as on a node that never loaded Slipstream). On and off alternate, their order flipping
// every repetition; every figure is a median over the repetitions, spreads are the min/max of the
// per-repetition ratios (on and off of the same repetition).
//
//   dataplane.forwardPacketsRatio  packets the forward hook saw (observer counter after Slipstream's chain)
//                                  during one SECS-second iperf3 flow to the ClusterIP, on / off, at 500
//                                  rules. Deterministic (~40 packets on: handshake, control connection
//                                  and the 20 before the threshold)
//   dataplane.longFlowRatio        iperf3 throughput to the ClusterIP, on / off, at 500 rules
//   dataplane.longFlowRatioByRules the same at 0, 500 and 2,000 rules (the curve)
//   dataplane.offloadVsPodIpRatio  offloaded ClusterIP / straight to the pod IP (no DNAT, not offloaded,
//                                  rules on), at 0, 500 and 2,000 rules
//   dataplane.shortFlowRatio       connections/s of short connections (~10 packets, below the threshold,
//                                  so never offloaded) to a hinted ClusterIP, on / off, at 500 rules
//
// Under TCG the absolute numbers say nothing about hardware (a forwarded packet costs what emulating the
// kernel's instructions costs); the ratios are the result. `npm run bench -- dataplane`, or
// `node test/bench/dataplane.bench.ts` alone (prints the figures). Env: SLIPSTREAM_BENCH_DATAPLANE_REPS
// (default 5), _SECS (5), _RULES ("0 500 2000"), _SHORT_COUNT (600); SLIPSTREAM_VM_KEEP=1 keeps the raw files.

import { fileURLToPath } from 'node:url';
import { prepareLab, runInVm, type VmResult } from '../kernel/lab.ts';
import type { Figures, Goal } from './run.ts';

export const goals: Record<string, Goal> = {
  'dataplane.forwardPacketsRatio': {
    max: 0.01,
    note: 'forward-hook packets during a 5 s iperf3 flow to a ClusterIP, offload on / off (500 firewall rules); deterministic',
  },
  'dataplane.longFlowRatio': {
    min: 1.16,
    note: 'iperf3 throughput to a ClusterIP, offload on / off, with 500 non-matching rules in another table’s forward chain; median of interleaved repetitions, under TCG',
  },
  'dataplane.shortFlowRatio': {
    min: 0.98,
    note: 'short connections/s (fewer packets than the threshold) to a hinted ClusterIP, Slipstream’s rules loaded / no slipstream table, 500 rules; median of interleaved repetitions, under TCG',
  },
};

const SHORT_RULES = 500;

function env(name: string, fallback: string): string {
  return process.env[`SLIPSTREAM_BENCH_DATAPLANE_${name}`] ?? fallback;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function round(value: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(values: number[], digits = 3): Spread {
  return {
    median: round(median(values), digits),
    min: round(Math.min(...values), digits),
    max: round(Math.max(...values), digits),
    n: values.length,
  };
}

/** Median of `on` / median of `off`, with the spread of the per-repetition ratios. */
export function ratio(on: number[], off: number[]): { ratio: number; perRepetition: Spread } {
  const paired = on.map((v, i) => v / off[i]!).filter((x) => Number.isFinite(x));
  return { ratio: round(median(on) / median(off), 4), perRepetition: spread(paired) };
}

interface IperfJson {
  error?: string;
  end?: { sum_received?: { bits_per_second: number; bytes: number } };
}

async function mbps(r: VmResult, name: string): Promise<number> {
  let j: IperfJson;
  try {
    j = await r.readJson<IperfJson>(`${name}.json`);
  } catch (error) {
    throw new Error(`${name}.json: ${(error as Error).message} (lab ${r.labDir})`);
  }
  const bps = j.end?.sum_received?.bits_per_second;
  if (j.error || bps === undefined) throw new Error(`${name}: iperf3 failed: ${j.error ?? 'no result'}`);
  return bps / 1e6;
}

async function observerDelta(r: VmResult, name: string): Promise<number> {
  const [before, after] = (await r.readText(`${name}.txt`)).trim().split(/\s+/).map(Number);
  if (!Number.isFinite(before) || !Number.isFinite(after)) throw new Error(`${name}.txt: no counter values`);
  return after! - before!;
}

export async function run(): Promise<Figures> {
  const reps = Number(env('REPS', '5'));
  const secs = Number(env('SECS', '5'));
  const rules = env('RULES', '0 500 2000').trim().split(/\s+/).map(Number);
  const shortCount = Number(env('SHORT_COUNT', '600'));
  if (!rules.includes(SHORT_RULES)) throw new Error(`RULES must include ${SHORT_RULES}`);
  const lab = await prepareLab();
  const t0 = performance.now();
  const r = await runInVm({
    scenario: 'bash test/kernel/scenarios/bench-dataplane.sh',
    timeoutMs: 30 * 60_000,
    env: {
      REPS: String(reps),
      SECS: String(secs),
      RULES: rules.join(' '),
      SHORT_RULES: String(SHORT_RULES),
      SHORT_COUNT: String(shortCount),
      SHORT_CONC: '4',
    },
  });
  try {
    if (r.rc !== 0) {
      throw new Error(
        `bench scenario failed (rc=${r.rc}); console:\n${r.console.split('\n').slice(-40).join('\n')}`,
      );
    }
    const vmEnv = await r.readJson<{ kernel: string; nproc: number }>('env.json');
    const reps1 = Array.from({ length: reps }, (_, i) => i + 1);

    const byRules: Record<string, unknown> = {};
    const vsPod: Record<string, unknown> = {};
    const throughput: Record<string, unknown> = {};
    let longAt500: ReturnType<typeof ratio> | undefined;
    let podAt500: ReturnType<typeof ratio> | undefined;
    for (const n of rules) {
      const on = await Promise.all(reps1.map((i) => mbps(r, `long-${n}-on-${i}`)));
      const off = await Promise.all(reps1.map((i) => mbps(r, `long-${n}-off-${i}`)));
      const pod = await Promise.all(reps1.map((i) => mbps(r, `pod-${n}-on-${i}`)));
      const q = ratio(on, off);
      const p = ratio(on, pod);
      byRules[String(n)] = q;
      vsPod[String(n)] = p;
      throughput[String(n)] = {
        clusterIpOn: spread(on, 0),
        clusterIpOff: spread(off, 0),
        podIp: spread(pod, 0),
      };
      if (n === SHORT_RULES) {
        longAt500 = q;
        podAt500 = p;
      }
    }

    const fwdOn = await Promise.all(reps1.map((i) => observerDelta(r, `observer-${SHORT_RULES}-on-${i}`)));
    const fwdOff = await Promise.all(reps1.map((i) => observerDelta(r, `observer-${SHORT_RULES}-off-${i}`)));
    const fwd = ratio(fwdOn, fwdOff);

    const short = async (mode: string, i: number) => {
      const j = await r.readJson<{ connections: number; failed: number; perSecond: number }>(
        `short-${mode}-${i}.json`,
      );
      if (j.failed > 0)
        throw new Error(`short-${mode}-${i}: ${j.failed} of ${j.connections} connections failed`);
      return j.perSecond;
    };
    const shortOn = await Promise.all(reps1.map((i) => short('on', i)));
    const shortOff = await Promise.all(reps1.map((i) => short('off', i)));
    const shortRatio = ratio(shortOn, shortOff);
    // Evidence that the short connections stayed below the threshold: nothing crossed it.
    const crossed = await Promise.all(
      reps1.map(async (i) => Number((await r.readText(`short-on-${i}.txt`)).trim() || 'NaN')),
    );
    if (crossed.some((c) => c !== 0)) {
      throw new Error(
        `short connections crossed the threshold (threshold-20 counter per repetition: ${crossed})`,
      );
    }

    return {
      'dataplane.forwardPacketsRatio': round(fwd.ratio, 5),
      'dataplane.forwardPackets': { on: spread(fwdOn, 0), off: spread(fwdOff, 0) },
      'dataplane.longFlowRatio': longAt500!.ratio,
      'dataplane.longFlowRatioSpread': longAt500!.perRepetition,
      'dataplane.longFlowRatioByRules': byRules,
      'dataplane.offloadVsPodIpRatio': podAt500!.ratio,
      'dataplane.offloadVsPodIpByRules': vsPod,
      'dataplane.offloadBeatsPodIp': rules
        .map((n) => {
          const q = (vsPod[String(n)] as ReturnType<typeof ratio>).ratio;
          return `${n} rules: ${q > 1 ? 'yes' : 'no'} (x${q})`;
        })
        .join('; '),
      'dataplane.longFlowMbps': throughput,
      'dataplane.shortFlowRatio': shortRatio.ratio,
      'dataplane.shortFlowRatioSpread': shortRatio.perRepetition,
      'dataplane.shortFlowPerSecond': { on: spread(shortOn, 1), off: spread(shortOff, 1) },
      'dataplane.setup':
        `kernel ${vmEnv.kernel} under qemu TCG emulation (-accel tcg -cpu qemu64 -smp ${vmEnv.nproc}, ${lab.kernelKind}); ` +
        `absolute numbers are not comparable to hardware, the ratios are the result. ${reps} interleaved on/off ` +
        `repetitions (order flipped each time), iperf3 ${secs} s per long flow, ${shortCount} short connections ` +
        `(4 at a time) per short-flow run; on = the table the real daemon programmed in the VM, saved and reloaded ` +
        `with nft -f; off = no slipstream table, conntrack accounting off; firewall = R non-matching ` +
        `"ip saddr 192.0.2.X tcp dport Y drop" rules in another table's forward chain (rules: ${rules.join(', ')})`,
      'dataplane.vmSeconds': Math.round((performance.now() - t0) / 1000),
    };
  } finally {
    await r.cleanup();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(JSON.stringify(await run(), null, 2));
}
