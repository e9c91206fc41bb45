import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '@slipstream/shared/adapters/log';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns } from '../../test/lib/netns.ts';
import { type LinkInfo, LinkWatcher, listLinks, parseLinks } from './links.ts';

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

describe('parseLinks', () => {
  it('reads name, ifindex, UP (carrier or not) and loopback of every link', () => {
    const links = parseLinks(SAMPLE);
    expect(links.map((l) => [l.name, l.index, l.up, l.loopback])).toEqual([
      ['lo', 1, true, true],
      ['eth0', 2, true, false],
      ['veth1', 3, true, false],
      ['veth2', 4, false, false],
      ['wg0', 5, true, false],
    ]);
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
    expect(links.map((l) => [l.name, l.loopback])).toContainEqual(['lo', true]);
  });

  it('notices links coming UP, going DOWN, re-created under the same name in one batch, and going away', async () => {
    const changes: LinkInfo[][] = [];
    let notify: (() => void) | null = null;
    watcher = new LinkWatcher({
      netns: ns,
      pollMs: 0,
      logger: silentLogger,
      onChange: (links) => {
        changes.push(links);
        notify?.();
      },
    });
    const next = (predicate: (links: LinkInfo[]) => boolean) =>
      new Promise<void>((resolve) => {
        notify = () => {
          if (predicate(changes[changes.length - 1]!)) resolve();
        };
      });
    const find = (links: LinkInfo[], name: string) => links.find((l) => l.name === name);
    expect((await watcher.start()).map((l) => l.name)).toEqual(['lo']);

    const up = next((l) => find(l, 'sa')?.up === true && find(l, 'sb')?.up === true);
    ip('link', 'add', 'sa', 'type', 'veth', 'peer', 'name', 'sb');
    ip('link', 'set', 'sa', 'up');
    ip('link', 'set', 'sb', 'up');
    await up;
    const before = find(watcher.links, 'sa')!.index;

    const down = next((l) => find(l, 'sb')?.up === false);
    ip('link', 'set', 'sb', 'down');
    await down;
    expect(find(watcher.links, 'sa')?.up).toBe(true);

    // What a CNI does when a pod restarts: the same name, another link, in one go.
    const recreated = next((l) => find(l, 'sa') !== undefined && find(l, 'sa')!.index !== before);
    execFileSync('ip', ['-n', ns, '-batch', '-'], {
      input: 'link del sa\nlink add sa type veth peer name sb\nlink set sa up\n',
    });
    await recreated;
    expect(find(watcher.links, 'sa')).toMatchObject({ up: true });

    const gone = next((l) => l.every((x) => x.loopback));
    ip('link', 'delete', 'sa');
    await gone;
    expect(watcher.links.map((l) => l.name)).toEqual(['lo']);
  });
});
