import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns, netnsName } from '../../test/lib/netns.ts';
import { hasCommand, NODE, sleep } from '../../test/lib/process.ts';
import {
  ConntrackError,
  flowKey,
  type OffloadReading,
  parseConntrackLine,
  readOffloaded,
  sampleOffloaded,
} from './conntrack.ts';

const TCP_OFFLOADED =
  'tcp      6 src=10.0.1.2 dst=10.96.0.10 sport=46864 dport=5201 packets=25 bytes=2000 src=10.0.2.2 dst=10.0.1.2 sport=5201 dport=46864 packets=30 bytes=40000 [OFFLOAD] mark=0 use=2';
const UDP_PLAIN =
  'udp      17 29 src=127.0.0.1 dst=127.0.0.1 sport=34443 dport=5000 src=127.0.0.1 dst=127.0.0.1 sport=5000 dport=34443 mark=0 use=1';

describe('parseConntrackLine', () => {
  it('keys an entry by its original destination and sums both directions’ bytes', () => {
    expect(parseConntrackLine(TCP_OFFLOADED)).toEqual({
      key: flowKey('10.96.0.10', 6, 5201),
      bytes: 42000,
      offloaded: true,
    });
  });

  it('reads entries without accounting or offload, and refuses what is not an entry', () => {
    expect(parseConntrackLine(UDP_PLAIN)).toEqual({
      key: flowKey('127.0.0.1', 17, 5000),
      bytes: 0,
      offloaded: false,
    });
    expect(
      parseConntrackLine('conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.'),
    ).toBeNull();
    expect(parseConntrackLine('')).toBeNull();
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
      expect([...answered.flows]).toEqual([[flowKey('127.0.0.1', 17, 5000), { connections: 2, bytes: 0 }]]);
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
