// What the kernel can do, asked without changing anything: a dry-run (check mode) transaction
// that creates a scratch table with a flowtable and a `flow add` rule. libnftables' check mode
// still sends the batch to the kernel (without the commit), so the kernel itself answers; on a
// kernel without nf_flow_table (like this project's CI host) the flowtable fails with
// "No such file or directory" and Slipstream runs degraded: maps, chains and counters only.
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

/** A dry-run transaction that needs flowtables and `flow add` (nothing is committed). */
export function flowtableProbeCommands(): object {
  const t = { family: TABLE_FAMILY, table: PROBE_TABLE };
  return {
    nftables: [
      { add: { table: { family: TABLE_FAMILY, name: PROBE_TABLE } } },
      { add: { flowtable: { ...t, name: 'ft', hook: 'ingress', prio: 0, dev: [] } } },
      { add: { chain: { ...t, name: 'c' } } },
      {
        add: {
          rule: {
            ...t,
            chain: 'c',
            expr: [
              { match: { op: '>', left: { ct: { key: 'packets' } }, right: 1 } },
              { counter: null },
              { flow: { op: 'add', flowtable: '@ft' } },
            ],
          },
        },
      },
    ],
  };
}

/** Probes flowtable support; rejects only when nf_tables cannot be used at all (permission). */
export async function probeCapabilities(runner: Pick<NftRunner, 'run'>): Promise<Capabilities> {
  try {
    await runner.run(flowtableProbeCommands(), { check: true });
    return { flowtable: true };
  } catch (error) {
    if (errorClassOf(error) === 'permission') throw error;
    return { flowtable: false, reason: `flowtable probe failed: ${errorText(error)}` };
  }
}
