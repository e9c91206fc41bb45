// The kernel view against a real kernel: a private network namespace made here, programmed with
// the nft CLI, read back through nftJson/kernelState.

import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns, kernelState, netnsExists, netnsName, nftJson } from './netns.ts';

describe('netnsName', () => {
  it('makes fresh names under the slipstream- prefix', () => {
    const a = netnsName('lib');
    expect(a).toMatch(/^slipstream-lib-[0-9a-f]{8}$/);
    expect(netnsName('lib')).not.toBe(a);
  });
});

describe.skipIf(!canUseNetns())('the kernel view in a private network namespace', () => {
  const ns = netnsName('netns-lib');
  const nft = (text: string) =>
    execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
      input: text,
      stdio: ['pipe', 'ignore', 'pipe'],
    });

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  it('no table: null', () => {
    expect(netnsExists(ns)).toBe(true);
    expect(netnsExists(netnsName('missing'))).toBe(false);
    expect(nftJson(ns)).toBeNull();
    expect(kernelState(ns)).toBeNull();
  });

  it('reads the map elements (jump and goto) and the chains of table inet slipstream', () => {
    nft(`table inet slipstream {
      chain threshold-20 { }
      chain threshold-100 { }
      map svc4 { type ipv4_addr . inet_proto . inet_service : verdict;
        elements = { 10.96.0.5 . tcp . 5432 : jump threshold-20, 10.96.0.6 . udp . 53 : goto threshold-100 } }
    }`);
    expect(JSON.parse(nftJson(ns)!).nftables.length).toBeGreaterThan(1);
    expect(kernelState(ns)).toEqual({
      elements: ['svc4 10.96.0.5 tcp 5432 -> threshold-20', 'svc4 10.96.0.6 udp 53 -> threshold-100'],
      chains: ['threshold-100', 'threshold-20'],
    });
  });
});
