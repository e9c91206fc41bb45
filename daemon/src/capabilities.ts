// What the kernel can do, asked without changing anything: dry-run (check mode) transactions that
// create a scratch table with a flowtable and a `flow add` rule, then the same flowtable with the
// `counter` flag. libnftables' check mode still sends the batch to the kernel (without the
// commit), so the kernel itself answers; on a kernel without nf_flow_table (like this project's CI
// host) the flowtable fails with "No such file or directory" and Slipstream runs degraded: maps,
// chains and counters only. A kernel without the counter flag (before 5.7) offloads, but
// conntrack's counters of offloaded connections stop: degraded for counting, said so.
//
// Conntrack accounting: `ct packets` needs it. Slipstream does not write the
// net.netfilter.nf_conntrack_acct sysctl: loading a rule with a `ct packets` expression turns
// accounting on in that network namespace (nft_ct_get_init calls nf_ct_set_acct), and the
// threshold chains always hold one. Only connections created after that carry counters, so
// connections older than the first threshold chain are never offloaded (they stay correct, on
// the normal path).

import { type Capabilities, TABLE_FAMILY } from '@slipstream/shared/core/ruleset';
import { errorClassOf, errorText, type NftRunner } from './kernel.ts';

export const PROBE_TABLE = 'slipstream-probe';

/** A dry-run transaction that needs flowtables and `flow add` (and the counter flag, when asked). */
export function flowtableProbe(counter: boolean): string {
  const t = `${TABLE_FAMILY} ${PROBE_TABLE}`;
  return [
    `add table ${t}`,
    `add flowtable ${t} ft { hook ingress priority 0;${counter ? ' counter;' : ''} }`,
    `add chain ${t} c`,
    `add rule ${t} c ct packets > 1 counter flow add @ft`,
    '',
  ].join('\n');
}

/** Probes flowtable support; rejects only when nf_tables cannot be used at all (permission). */
export async function probeCapabilities(runner: Pick<NftRunner, 'run'>): Promise<Capabilities> {
  try {
    await runner.run(flowtableProbe(false), { check: true });
  } catch (error) {
    if (errorClassOf(error) === 'permission') throw error;
    return { flowtable: false, reason: `flowtable probe failed: ${errorText(error)}` };
  }
  try {
    await runner.run(flowtableProbe(true), { check: true });
    return { flowtable: true, flowtableCounter: true };
  } catch (error) {
    if (errorClassOf(error) === 'permission') throw error;
    return {
      flowtable: true,
      flowtableCounter: false,
      reason: `flowtable counter flag probe failed (conntrack stops counting offloaded connections): ${errorText(error)}`,
    };
  }
}
