import { describe, expect, it } from 'vitest';
import { DeviceSelector, parseDevicePatterns } from './devices.ts';
import type { LinkInfo } from './links.ts';

const link = (name: string, index: number, up = true, loopback = false): LinkInfo => ({
  name,
  index,
  up,
  loopback,
});

describe('parseDevicePatterns', () => {
  it('reads names, * globs and /regular expressions/', () => {
    const [exact, glob, re] = parseDevicePatterns(' eth0 , cali*, /^veth[0-9a-f]+$/ ');
    expect([exact!.text, glob!.text, re!.text]).toEqual(['eth0', 'cali*', '/^veth[0-9a-f]+$/']);
    expect(['eth0', 'eth01', 'xeth0'].map((n) => exact!.test(n))).toEqual([true, false, false]);
    expect(['cali', 'cali12ab', 'xcali'].map((n) => glob!.test(n))).toEqual([true, true, false]);
    expect(['veth9f', 'veth', 'vethZ'].map((n) => re!.test(n))).toEqual([true, false, false]);
    // A dot in a name is a dot, not "any character".
    expect(parseDevicePatterns('a.b')[0]!.test('axb')).toBe(false);
  });

  it('an empty value means no patterns; bad entries are refused with the reason', () => {
    expect(parseDevicePatterns('')).toEqual([]);
    expect(parseDevicePatterns('  ')).toEqual([]);
    expect(() => parseDevicePatterns('eth0,,eth1')).toThrow('entry 2 of 3 is empty');
    expect(() => parseDevicePatterns('/([/')).toThrow('entry 1 of 1 (/([/) is not a regular expression');
    expect(() => parseDevicePatterns('^veth.*')).not.toThrow();
    expect(() => parseDevicePatterns('veth/0')).toThrow('between two slashes');
    expect(() => parseDevicePatterns('a"b')).toThrow('cannot be an interface name');
    expect(() => parseDevicePatterns('a-very-long-interface-name')).toThrow('cannot be an interface name');
  });
});

describe('DeviceSelector', () => {
  it('by default hooks every UP link but loopback, and says why the others are left out', () => {
    const s = new DeviceSelector();
    const choice = s.select([
      link('lo', 1, true, true),
      link('eth0', 2),
      link('eno2', 3, false),
      link('bad name', 4),
      link('veth1', 5),
    ]);
    expect(choice.hooked).toEqual(['eth0', 'veth1']);
    expect(choice.excluded).toEqual([
      { name: 'bad name', reason: 'its name cannot be written as nft text' },
      { name: 'eno2', reason: 'DOWN: hooked once it comes UP' },
      { name: 'lo', reason: 'loopback: forwarded traffic never enters through it' },
    ]);
  });

  it('keeps a link that goes DOWN hooked, but not a link re-created under its name (another ifindex)', () => {
    const s = new DeviceSelector();
    expect(s.select([link('eth0', 2), link('vb', 7)]).hooked).toEqual(['eth0', 'vb']);
    expect(s.select([link('eth0', 2), link('vb', 7, false)]).hooked).toEqual(['eth0', 'vb']);
    expect(s.select([link('eth0', 2), link('vb', 7)]).hooked).toEqual(['eth0', 'vb']);
    // Deleted and created again, DOWN: a new link.
    expect(s.select([link('eth0', 2), link('vb', 9, false)]).hooked).toEqual(['eth0']);
    expect(s.select([link('eth0', 2), link('vb', 9)]).hooked).toEqual(['eth0', 'vb']);
    // Once gone, its ifindex is forgotten.
    s.select([link('eth0', 2)]);
    expect(s.select([link('eth0', 2), link('vb', 9, false)]).hooked).toEqual(['eth0']);
  });

  it('adopts the links the kernel hooked before the process started, DOWN ones included', () => {
    const links = [link('eth0', 2), link('vb', 7, false), link('vc', 8, false)];
    const s = new DeviceSelector();
    s.adopt(['eth0', 'vb'], links);
    expect(s.select(links).hooked).toEqual(['eth0', 'vb']);
  });

  it('applies include, then exclude patterns', () => {
    const s = new DeviceSelector({
      include: parseDevicePatterns('eth*,/^cali/'),
      exclude: parseDevicePatterns('cali-skip,eth9'),
    });
    const choice = s.select([
      link('eth0', 2),
      link('eth9', 3),
      link('cali1', 4),
      link('cali-skip', 5),
      link('docker0', 6),
    ]);
    expect(choice.hooked).toEqual(['cali1', 'eth0']);
    expect(choice.excluded).toEqual([
      { name: 'cali-skip', reason: 'matched by --flowtable-exclude cali-skip' },
      { name: 'docker0', reason: 'not matched by --flowtable-include eth*,/^cali/' },
      { name: 'eth9', reason: 'matched by --flowtable-exclude eth9' },
    ]);
  });
});
