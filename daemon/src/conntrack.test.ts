// Offloaded connections from conntrack: the streaming line parser (on lines as conntrack-tools 1.4.7
// prints them, the first ones captured in the kernel VM lab), the reader against the real conntrack
// in a private network namespace, and the shared read.

import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns, netnsName } from '../../test/lib/netns.ts';
import { hasCommand } from '../../test/lib/process.ts';
import {
  addOffloadedLine,
  flowKey,
  type OffloadedFlows,
  parseOffloaded,
  readOffloaded,
  SharedRead,
} from './conntrack.ts';

// Captured in the VM (Debian 6.1, flowtable with the counter flag): an offloaded entry has no timeout or state.
const VM_OFFLOADED =
  'tcp      6 src=10.0.1.2 dst=10.96.0.10 sport=39426 dport=5432 packets=1067 bytes=8253241 src=10.0.2.2 dst=10.0.1.2 sport=5401 dport=39426 packets=913 bytes=47600 [OFFLOAD] mark=0 use=2';
const VM_OFFLOADED6 =
  'tcp      6 src=fd00:0:1::2 dst=fd00:96::10 sport=39242 dport=5432 packets=14853 bytes=116191225 src=fd00:0:2::2 dst=fd00:0:1::2 sport=5404 dport=39242 packets=10913 bytes=787592 [OFFLOAD] mark=0 use=2';
const VM_EVICTED =
  'tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=10.96.0.11 sport=55526 dport=5432 packets=14880 bytes=115024733 src=10.0.2.2 dst=10.0.1.2 sport=5402 dport=55526 packets=10914 bytes=569684 [ASSURED] mark=0 use=1';
// Other shapes: with timeout and state, hardware offload, UDP, no accounting.
const TCP_HW =
  'tcp      6 431999 ESTABLISHED src=10.0.1.3 dst=10.96.0.10 sport=39012 dport=5432 packets=731 bytes=1053002 src=10.0.2.2 dst=10.0.1.3 sport=5401 dport=39012 packets=402 bytes=21004 [HW_OFFLOAD] mark=0 use=2';
const UDP_OFFLOADED =
  'udp      17 119 src=10.0.1.2 dst=10.96.20.20 sport=51234 dport=5201 packets=90412 bytes=130796576 src=10.0.2.3 dst=10.0.1.2 sport=5201 dport=51234 packets=3 bytes=168 [OFFLOAD] mark=0 use=2';
const NO_ACCT =
  'tcp      6 src=10.0.1.4 dst=10.96.0.12 sport=40000 dport=80 src=10.0.2.2 dst=10.0.1.4 sport=80 dport=40000 [OFFLOAD] mark=0 use=2';
const UDP_UNREPLIED =
  'udp      17 29 src=10.0.1.2 dst=10.96.0.10 sport=53012 dport=53 packets=1 bytes=72 [UNREPLIED] src=10.0.2.9 dst=10.0.1.2 sport=53 dport=53012 packets=0 bytes=0 mark=0 use=1';

describe('parseOffloaded', () => {
  it('counts offloaded entries, their packets and bytes (both directions), by original destination', () => {
    const flows = parseOffloaded(
      [VM_OFFLOADED, VM_OFFLOADED6, VM_EVICTED, TCP_HW, UDP_OFFLOADED, NO_ACCT, UDP_UNREPLIED, ''].join('\n'),
    );
    expect(Object.fromEntries(flows)).toEqual({
      [flowKey('10.96.0.10', 6, 5432)]: {
        connections: 2, // [HW_OFFLOAD] counts too
        packets: 1067 + 913 + 731 + 402,
        bytes: 8253241 + 47600 + 1053002 + 21004,
      },
      [flowKey('fd00:96::10', 6, 5432)]: {
        connections: 1,
        packets: 14853 + 10913,
        bytes: 116191225 + 787592,
      },
      [flowKey('10.96.20.20', 17, 5201)]: { connections: 1, packets: 90415, bytes: 130796744 },
      [flowKey('10.96.0.12', 6, 80)]: { connections: 1, packets: 0, bytes: 0 },
    });
  });

  it('keys by the original tuple (the ClusterIP), never by the reply tuple (the Pod)', () => {
    const flows = parseOffloaded(VM_OFFLOADED);
    expect([...flows.keys()]).toEqual([flowKey('10.96.0.10', 6, 5432)]);
  });

  it('lines that are no entries count nothing', () => {
    expect(parseOffloaded('').size).toBe(0);
    expect(
      parseOffloaded('conntrack v1.4.7 (conntrack-tools): 7 flow entries have been shown.\n[OFFLOAD]\n').size,
    ).toBe(0);
    expect(
      parseOffloaded(`\n  ${UDP_OFFLOADED}\n\n`).get(flowKey('10.96.20.20', 17, 5201))?.connections,
    ).toBe(1);
  });

  it('parses 200,000 lines (no regular expression per line: cost printed, not asserted)', () => {
    const flows: OffloadedFlows = new Map();
    const started = performance.now();
    for (let i = 0; i < 200_000; i++) addOffloadedLine(flows, i % 2 ? VM_OFFLOADED : VM_EVICTED);
    const ms = performance.now() - started;
    expect(flows.get(flowKey('10.96.0.10', 6, 5432))?.connections).toBe(100_000);
    console.info(`[conntrack] 200,000 lines parsed in ${ms.toFixed(0)} ms`);
  });
});

describe.skipIf(!canUseNetns({ nft: false }) || !hasCommand('conntrack', ['--version']))(
  'readOffloaded against the real conntrack',
  () => {
    const ns = netnsName('ct');
    beforeAll(() => execFileSync('ip', ['netns', 'add', ns]));
    afterAll(() => execFileSync('ip', ['netns', 'delete', ns]));

    it('reads both families of a namespace (nothing offloaded on this kernel: empty, not unknown)', async () => {
      expect(await readOffloaded(ns)).toEqual(new Map());
    });

    it('a namespace that cannot be entered: unknown (null), with the reason', async () => {
      const reasons: string[] = [];
      expect(await readOffloaded(netnsName('absent'), (r) => reasons.push(r))).toBeNull();
      expect(reasons.join('\n')).toMatch(/Cannot open network namespace/);
    });
  },
);

describe('SharedRead', () => {
  it('concurrent callers share one read; the next call after it reads again', async () => {
    let reads = 0;
    let release: (() => void) | undefined;
    const shared = new SharedRead(async () => {
      reads++;
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      return reads;
    });
    const a = shared.read();
    const b = shared.read();
    release!();
    expect(await Promise.all([a, b])).toEqual([1, 1]);
    const c = shared.read();
    release!();
    expect(await c).toBe(2);
  });
});
