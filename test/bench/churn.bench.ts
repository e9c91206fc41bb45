// What link churn and evictions cost an offloaded flow, per way of handling them, in the kernel VM lab
// (test/kernel/lab.ts: Debian's kernel under qemu TCG), in one VM boot running
// test/kernel/scenarios/bench-churn.sh. The raw ruleset Slipstream writes, each option applied by hand, on
// the same light long flows (iperf3 -b 4M); slow-path packets counted per connection by an observer chain
// after Slipstream's (forward hook). Figures are medians over the repetitions and flows.
//
//   churn.linkDownUpPackets           an unrelated link DOWN then UP, the flowtable untouched (the daemon's
//                                     choice: DOWN links stay hooked): the kernel's own cost
//   churn.linkDownUpInPlacePackets    the same, the link removed from the flowtable in place and added back
//   churn.linkDownUpRecreatePackets   the same, the flowtable deleted and re-created at DOWN and at UP
//   churn.recreatedLinkUnhookedPackets  a link re-created under its name, left unhooked (the kernel dropped
//                                     its hook): slow-path packets of a new offloaded flow through it, 3 s
//   churn.recreatedLinkRehookedPackets  the same, hooked again (the daemon's re-read of the kernel's list)
//   churn.evictOtherPackets           evicting a flow by re-creating the flowtable: packets another offloaded
//                                     flow loses to the slow path
//   churn.evictCommitMs               that transaction (nft -f), under TCG
//   churn.evictedSlowPackets          the evicted flow's slow-path packets in the 2 s after (it is evicted)
//   churn.evictOptions                every option: re-create (evicts), element only (stays offloaded),
//                                     conntrack -D (resets the connection)
//   churn.counterPackets              conntrack packets of an offloaded flow in 2 s, with / without the
//                                     flowtable's counter flag
//
// `npm run bench -- churn`, or `node test/bench/churn.bench.ts` alone. Env: SLIPSTREAM_BENCH_CHURN_REPS (5).

import { fileURLToPath } from 'node:url';
import { prepareLab, runInVm, type VmResult } from '../kernel/lab.ts';
import { spread } from './dataplane.bench.ts';
import type { Figures, Goal } from './run.ts';

export const goals: Record<string, Goal> = {
  'churn.linkDownUpPackets': {
    max: 4,
    note: 'slow-path packets of an offloaded flow over an unrelated link DOWN and UP with the flowtable untouched; the kernel itself flushes the route cache at each (about 1 packet per event), nothing else',
  },
  'churn.recreatedLinkRehookedPackets': {
    max: 10,
    note: 'a link re-created under its name and hooked again: slow-path packets of a new offloaded flow through it in 3 s (unhooked, every reply packet takes the slow path)',
  },
  'churn.evictOtherPackets': {
    max: 20,
    note: 'evicting one flow by re-creating the flowtable: packets another offloaded flow (4 Mbit/s) loses to the slow path before it is offloaded again',
  },
};

const numbers = (text: string) => text.trim().split(/\s+/).map(Number);

export async function run(): Promise<Figures> {
  const reps = Number(process.env.SLIPSTREAM_BENCH_CHURN_REPS ?? '5');
  const lab = await prepareLab();
  const t0 = performance.now();
  const r: VmResult = await runInVm({
    scenario: 'bash test/kernel/scenarios/bench-churn.sh',
    timeoutMs: 30 * 60_000,
    env: { REPS: String(reps) },
  });
  try {
    if (r.rc !== 0) {
      throw new Error(
        `bench scenario failed (rc=${r.rc}); console:\n${r.console.split('\n').slice(-40).join('\n')}`,
      );
    }
    const vmEnv = await r.readJson<{ kernel: string; nproc: number }>('env.json');
    const repList = Array.from({ length: reps }, (_, i) => i + 1);
    const downUp = async (mode: string) =>
      (await Promise.all(repList.map((i) => r.readText(`downup-${mode}-${i}.txt`)))).flatMap(numbers);
    const kernel = await downUp('kernel');
    const inPlace = await downUp('inplace');
    const recreate = await downUp('recreate');
    const unhooked = numbers(await r.readText('recreate-unhooked.txt'))[0]!;
    const rehooked = numbers(await r.readText('recreate-rehooked.txt'))[0]!;
    const evictions = await Promise.all(
      repList.map(async (i) => numbers(await r.readText(`evict-recreate-${i}.txt`))),
    );
    const commitMs = evictions.map((e) => e[0]!);
    const stillOffloaded = evictions.filter((e) => e[1] === 1).length;
    const others = evictions.flatMap((e) => [e[2]!, e[3]!]);
    const evictedSlow = evictions.map((e) => e[4]!);
    const [elementStill, elementSlow] = numbers(await r.readText('evict-element.txt'));
    const ctDelete = (await r.readText('evict-ctdelete.txt')).trim();
    const [withCounter, withoutCounter] = numbers(await r.readText('counters.txt'));

    const linkDownUp = {
      kernel: spread(kernel, 0),
      inPlace: spread(inPlace, 0),
      recreate: spread(recreate, 0),
    };
    return {
      'churn.linkDownUpPackets': linkDownUp.kernel.median,
      'churn.linkDownUpInPlacePackets': linkDownUp.inPlace.median,
      'churn.linkDownUpRecreatePackets': linkDownUp.recreate.median,
      'churn.linkDownUp': linkDownUp,
      'churn.recreatedLinkUnhookedPackets': unhooked,
      'churn.recreatedLinkRehookedPackets': rehooked,
      'churn.evictOtherPackets': spread(others, 0).median,
      'churn.evictOther': spread(others, 0),
      'churn.evictCommitMs': spread(commitMs, 0).median,
      'churn.evictedSlowPackets': spread(evictedSlow, 0).median,
      'churn.evictOptions':
        `re-create the flowtable: evicted ${reps - stillOffloaded} of ${reps}, the connection kept (conntrack entry, ` +
        `NAT, backend); delete the element only: ${elementStill === 1 ? 'still [OFFLOAD]' : 'evicted'} ` +
        `(${elementSlow} slow-path packets in 2 s); conntrack -D: the connection was ${ctDelete === 'reset' ? 'reset' : 'kept'}`,
      'churn.counterPackets': { withCounterFlag: withCounter!, withoutCounterFlag: withoutCounter! },
      'churn.setup':
        `kernel ${vmEnv.kernel} under qemu TCG (-smp ${vmEnv.nproc}, ${lab.kernelKind}); raw Slipstream ruleset, ` +
        `each option applied by hand; light long flows (iperf3 -b 4M -l 8K: IPv4 and IPv6), ${reps} repetitions; ` +
        'slow-path packets from an observer chain after Slipstream’s forward chain',
      'churn.vmSeconds': Math.round((performance.now() - t0) / 1000),
    };
  } finally {
    await r.cleanup();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(JSON.stringify(await run(), null, 2));
}
