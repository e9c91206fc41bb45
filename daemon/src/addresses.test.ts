import { execFileSync } from 'node:child_process';
import { silentLogger } from '@slipstream/shared/adapters/log';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns, netnsName } from '../../test/lib/netns.ts';
import { until } from '../../test/lib/process.ts';
import { AddressWatcher, listAddresses, parseAddresses } from './addresses.ts';

describe('parseAddresses', () => {
  it('keeps the global addresses of every link, DOWN ones too, canonical, and drops loopback and link-local ones', () => {
    const output = JSON.stringify([
      { ifname: 'lo', flags: ['LOOPBACK', 'UP'], addr_info: [{ local: '127.0.0.1', scope: 'host' }] },
      {
        ifname: 'eth0',
        flags: ['BROADCAST', 'UP'],
        addr_info: [
          { local: '192.168.50.10', scope: 'global' },
          { local: 'FD00:50:0:0::10', scope: 'global' },
          { local: 'fe80::1', scope: 'link' },
          { local: '169.254.3.4', scope: 'global' },
        ],
      },
      { ifname: 'eth1', flags: ['BROADCAST'], addr_info: [{ local: '10.9.9.9', scope: 'global' }] },
      { ifname: 'weird', flags: ['UP'], addr_info: [{ local: 'not-an-address' }, 'x'] },
    ]);
    expect(parseAddresses(output)).toEqual(['10.9.9.9', '192.168.50.10', 'fd00:50::10']);
    expect(parseAddresses('not json')).toEqual([]);
  });
});

describe.skipIf(!canUseNetns())("this node's addresses in a private network namespace", () => {
  const ns = netnsName('addresses');
  const ip = (...args: string[]) => execFileSync('ip', ['-n', ns, ...args]);
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    ip('link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb');
    ip('addr', 'add', '10.77.0.1/24', 'dev', 'va');
    ip('link', 'set', 'va', 'up');
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  it('lists them, and follows an address added and removed', async () => {
    expect(await listAddresses(ns)).toEqual(['10.77.0.1']);
    const seen: string[][] = [];
    const watcher = new AddressWatcher({
      netns: ns,
      logger: silentLogger,
      onChange: (a) => seen.push(a),
      pollMs: 0,
    });
    try {
      expect(await watcher.start()).toEqual(['10.77.0.1']);
      ip('addr', 'add', '10.77.1.1/24', 'dev', 'va');
      await until('the new address', () => seen.some((a) => a.includes('10.77.1.1')));
      ip('addr', 'del', '10.77.0.1/24', 'dev', 'va');
      await until('the address gone', () => seen.at(-1)?.join(' ') === '10.77.1.1');
      // A link going DOWN keeps its IPv4 addresses local: nothing changes.
      ip('link', 'set', 'va', 'down');
      expect(await listAddresses(ns)).toEqual(['10.77.1.1']);
    } finally {
      watcher.stop();
    }
  });
});
