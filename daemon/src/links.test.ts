import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '@slipstream/shared/adapters/log';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns } from '../../test/lib/netns.ts';
import { flowtableDevices, LinkWatcher, listLinks, parseLinks } from './links.ts';

const SAMPLE = JSON.stringify([
  {
    ifindex: 1,
    ifname: 'lo',
    flags: ['LOOPBACK', 'UP', 'LOWER_UP'],
    operstate: 'UNKNOWN',
    link_type: 'loopback',
  },
  {
    ifindex: 2,
    ifname: 'eth0',
    flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
    operstate: 'UP',
    link_type: 'ether',
  },
  {
    ifindex: 3,
    ifname: 'veth1',
    flags: ['BROADCAST', 'MULTICAST', 'UP'],
    operstate: 'LOWERLAYERDOWN',
    link_type: 'ether',
  },
  { ifindex: 4, ifname: 'veth2', flags: ['BROADCAST', 'MULTICAST'], operstate: 'DOWN', link_type: 'ether' },
  {
    ifindex: 5,
    ifname: 'wg0',
    flags: ['POINTOPOINT', 'NOARP', 'UP', 'LOWER_UP'],
    operstate: 'UNKNOWN',
    link_type: 'none',
  },
  { ifname: 42 },
  'junk',
]);

describe('parseLinks / flowtableDevices', () => {
  it('keeps UP non-loopback links, carrier or not', () => {
    const links = parseLinks(SAMPLE);
    expect(links.map((l) => l.name)).toEqual(['lo', 'eth0', 'veth1', 'veth2', 'wg0']);
    expect(flowtableDevices(links)).toEqual(['eth0', 'veth1', 'wg0']);
  });

  it('never throws on output it does not understand', () => {
    expect(parseLinks('not json')).toEqual([]);
    expect(parseLinks('{}')).toEqual([]);
  });
});

describe.skipIf(!canUseNetns({ nft: false }))('LinkWatcher in a private network namespace', () => {
  const ns = `slipstream-links-${randomBytes(4).toString('hex')}`;
  const ip = (...args: string[]) => execFileSync('ip', ['-n', ns, ...args]);
  let watcher: LinkWatcher | null = null;

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
  });
  afterEach(() => {
    watcher?.stop();
    watcher = null;
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  it('lists the links of the namespace', async () => {
    const links = await listLinks(ns);
    expect(links.map((l) => l.name)).toContain('lo');
    expect(flowtableDevices(links)).toEqual([]);
  });

  it('notices links coming UP and going away through ip monitor (no polling)', async () => {
    const changes: string[][] = [];
    let notify: (() => void) | null = null;
    watcher = new LinkWatcher({
      netns: ns,
      pollMs: 0,
      logger: silentLogger,
      onChange: (devices) => {
        changes.push(devices);
        notify?.();
      },
    });
    const next = (predicate: (d: string[]) => boolean) =>
      new Promise<void>((resolve) => {
        notify = () => {
          if (predicate(changes[changes.length - 1]!)) resolve();
        };
      });
    expect(await watcher.start()).toEqual([]);

    const up = next((d) => d.includes('sa') && d.includes('sb'));
    ip('link', 'add', 'sa', 'type', 'veth', 'peer', 'name', 'sb');
    ip('link', 'set', 'sa', 'up');
    ip('link', 'set', 'sb', 'up');
    await up;
    expect(watcher.devices).toEqual(['sa', 'sb']);

    const down = next((d) => !d.includes('sb'));
    ip('link', 'set', 'sb', 'down');
    await down;
    expect(watcher.devices).toEqual(['sa']);

    const gone = next((d) => d.length === 0);
    ip('link', 'delete', 'sa');
    await gone;
    expect(watcher.devices).toEqual([]);
  });
});
