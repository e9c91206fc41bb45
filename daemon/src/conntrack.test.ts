import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns, netnsName } from '../../test/lib/netns.ts';
import { hasCommand, NODE, sleep } from '../../test/lib/process.ts';
import {
  ConntrackError,
  countEntry,
  flowKey,
  type OffloadedFlows,
  type OffloadReading,
  parseConntrackLine,
  parseOffloaded,
  readOffloaded,
  SharedRead,
  sampleOffloaded,
} from './conntrack.ts';

const TCP_OFFLOADED =
  'tcp      6 src=10.0.1.2 dst=10.96.0.10 sport=46864 dport=5201 packets=25 bytes=2000 src=10.0.2.2 dst=10.0.1.2 sport=5201 dport=46864 packets=30 bytes=40000 [OFFLOAD] mark=0 use=2';
const UDP_PLAIN =
  'udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=34443 dport=5000 src=127.0.0.1 dst=127.0.0.1 sport=5000 dport=34443 mark=0 use=1';

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

describe('parseConntrackLine', () => {
  it('keys an entry by its original destination and sums both directions’ bytes', () => {
    expect(parseConntrackLine(TCP_OFFLOADED)).toEqual({
      key: flowKey('10.96.0.10', 6, 5201),
      packets: 55,
      bytes: 42000,
      offloaded: true,
    });
  });

  it('reads entries without accounting or offload, and refuses what is not an entry', () => {
    expect(parseConntrackLine(UDP_PLAIN)).toEqual({
      key: flowKey('127.0.0.1', 17, 5000),
      packets: 0,
      bytes: 0,
      offloaded: false,
    });
    expect(
      parseConntrackLine('conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.'),
    ).toBeNull();
    expect(parseConntrackLine('')).toBeNull();
  });
});

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
    for (let i = 0; i < 200_000; i++) {
      const entry = parseConntrackLine(i % 2 ? VM_OFFLOADED : VM_EVICTED);
      if (entry?.offloaded) countEntry(flows, entry);
    }
    const ms = performance.now() - started;
    expect(flows.get(flowKey('10.96.0.10', 6, 5432))?.connections).toBe(100_000);
    console.info(`[conntrack] 200,000 lines parsed in ${ms.toFixed(0)} ms`);
  });
});

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

describe.skipIf(!canUseNetns() || !hasCommand('conntrack', ['--version']))(
  'readOffloaded: the real conntrack tool in a private network namespace',
  () => {
    const ns = netnsName('conntrack');

    beforeAll(() => {
      execFileSync('ip', ['netns', 'add', ns]);
      execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      // Conntrack tracks a namespace's traffic once a rule there uses it.
      execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
        input: 'table inet t { chain out { type filter hook output priority 0; ct state new accept; }; }\n',
      });
      // Two answered UDP exchanges (SEEN_REPLY) and one unanswered.
      const script = `
        const dgram = require('node:dgram');
        const server = dgram.createSocket('udp4');
        server.on('message', (m, r) => server.send('y', r.port, r.address));
        server.bind(5000, '127.0.0.1', async () => {
          for (let i = 0; i < 2; i++) {
            const c = dgram.createSocket('udp4');
            await new Promise((ok) => { c.once('message', ok); c.send('x', 5000, '127.0.0.1'); });
            c.close();
          }
          const u = dgram.createSocket('udp4');
          u.send('x', 5001, '127.0.0.1', () => { u.close(); server.close(); });
        });`;
      execFileSync('ip', ['netns', 'exec', ns, NODE, '-e', script], { timeout: 10_000 });
    });

    afterAll(() => {
      execFileSync('ip', ['netns', 'delete', ns]);
    });

    it('lists only entries of the asked status (OFFLOAD by default), line by line', async () => {
      expect((await readOffloaded({ netns: ns })).flows.size).toBe(0);
      const answered = await readOffloaded({ netns: ns, status: 'SEEN_REPLY' });
      expect([...answered.flows]).toEqual([
        [flowKey('127.0.0.1', 17, 5000), { connections: 2, packets: 0, bytes: 0 }],
      ]);
      expect(answered.truncated).toBe(false);
    });

    it('stops at its entry bound and says the counts are a lower bound', async () => {
      const cut = await readOffloaded({ netns: ns, status: 'SEEN_REPLY', maxEntries: 1 });
      expect(cut.truncated).toBe(true);
      expect(cut.flows.get(flowKey('127.0.0.1', 17, 5000))?.connections).toBe(1);
    });

    it('fails with a reason when conntrack cannot be read', async () => {
      const error = await readOffloaded({ netns: `${ns}-absent` }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ConntrackError);
      expect((error as ConntrackError).reason).toBe('failed');
    });
  },
);

describe('sampleOffloaded', () => {
  it('samples at once and then periodically; an idle kernel gets an empty reading without conntrack', async () => {
    const readings: OffloadReading[] = [];
    const stop = sampleOffloaded({
      periodMs: 20,
      idle: () => true,
      onReading: (r) => readings.push(r),
      onFailure: (e) => {
        throw e;
      },
    });
    await sleep(70);
    stop();
    const n = readings.length;
    expect(n).toBeGreaterThanOrEqual(2);
    expect(readings.every((r) => r.flows.size === 0 && r.durationMs === 0)).toBe(true);
    await sleep(50);
    expect(readings.length).toBe(n);
  });

  it('reports a failure with its reason and keeps sampling', async () => {
    const failures: string[] = [];
    const stop = sampleOffloaded({
      periodMs: 20,
      netns: 'slipstream-no-such-namespace',
      onReading: () => {},
      onFailure: (e) => failures.push(e.reason),
    });
    for (let i = 0; i < 100 && failures.length < 2; i++) await sleep(20);
    stop();
    expect(failures.slice(0, 2)).toEqual(['failed', 'failed']);
  });
});
