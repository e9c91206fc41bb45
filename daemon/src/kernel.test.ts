import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { desiredRuleset } from '@slipstream/shared/core/desired-ruleset';
import { diff } from '@slipstream/shared/core/diff';
import { parseTable } from '@slipstream/shared/core/nft-listing';
import type { Ruleset } from '@slipstream/shared/core/ruleset';
import { NftContext } from 'nftables-napi';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadScenario, scenarioInput } from '../../test/fixtures/services/load.ts';
import { canUseNetns } from '../../test/lib/netns.ts';
import { elementBatch } from './element-batch.ts';
import { type KernelEvent, NapiKernel, type NftRunner } from './kernel.ts';
import { CliRunner } from './kernel-cli.ts';
import { MemoryKernel } from './memory-kernel.ts';

const view = (r: Ruleset | null) => (r ? { ...r, services: new Map(), owners: new Map() } : r);
const desired = (name: string, flowtable = true, devices?: string[]) => {
  const input = scenarioInput(loadScenario(name), flowtable);
  return desiredRuleset(devices ? { ...input, devices } : input);
};

describe('MemoryKernel', () => {
  it('applies a Change and reads back the same ruleset', async () => {
    const k = new MemoryKernel();
    const want = desired('dual-stack');
    await k.apply(diff(null, want));
    expect(view(await k.readTable())).toEqual(view(want));
    expect(k.writes).toBe(1);
    expect(k.dump()).toContain('10.96.0.10 . tcp . 5432 : jump threshold-20');
  });

  it('refuses a whole transaction atomically, like the kernel', async () => {
    const k = new MemoryKernel();
    const want = desired('thresholds-shared');
    await k.apply(diff(null, want));
    const before = await k.readTable();
    // Believing an element that is not there: the delete fails, and nothing else is applied.
    const wrongBelief = structuredClone(want);
    wrongBelief.elements.set('ip 10.9.9.9 6 1', {
      family: 'ip',
      address: '10.9.9.9',
      protocol: 6,
      port: 1,
      threshold: 20,
    });
    const change = diff(wrongBelief, desired('dual-stack'));
    await expect(k.apply(change)).rejects.toMatchObject({ errorClass: 'no-such-object' });
    expect(view(await k.readTable())).toEqual(view(before));
    expect(k.writes).toBe(1);
  });

  it('enforces busy chains, verdict changes in place, missing devices and missing flowtable support', async () => {
    const k = new MemoryKernel({ links: ['eth0'] });
    await expect(k.apply(diff(null, desired('sctp', true, ['eth0', 'gone0'])))).rejects.toMatchObject({
      errorClass: 'no-such-object',
    });
    const want = desired('sctp', true, ['eth0']);
    await k.apply(diff(null, want));
    await expect(
      k.apply({ ops: [{ op: 'delete-chain', chain: 'threshold-20' }], summary: diff(want, want).summary }),
    ).rejects.toMatchObject({ errorClass: 'busy' });
    const e = [...want.elements.values()][0]!;
    await expect(
      k.apply({
        ops: [
          { op: 'add-chain', chain: 'threshold-5', base: null },
          { op: 'add-elements', family: 'ip', elements: [{ ...e, threshold: 5 }] },
        ],
        summary: diff(want, want).summary,
      }),
    ).rejects.toMatchObject({ errorClass: 'exists' });
    const degradedKernel = new MemoryKernel({ flowtable: false });
    await expect(degradedKernel.apply(diff(null, want))).rejects.toMatchObject({
      errorClass: 'not-supported',
    });
    expect(await degradedKernel.probe()).toMatchObject({ flowtable: false });
  });

  it('unhooks a deleted link from the flowtable, as the kernel does', async () => {
    const k = new MemoryKernel({ links: ['eth0', 'veth1'] });
    await k.apply(diff(null, desired('sctp', true, ['eth0', 'veth1'])));
    k.setLinks(['eth0']);
    expect(await k.readFlowtableDevices()).toEqual(['eth0']);
  });
});

// --- The real kernel edge, in a private network namespace -------------------------------------

/** nftables-napi when it loads (the daemon's edge), else the nft CLI behind the same interface. */
async function openKernel(ns: string): Promise<{ kernel: NapiKernel; runner: string }> {
  try {
    return { kernel: await NapiKernel.open({ netns: ns }), runner: 'nftables-napi' };
  } catch {
    return { kernel: new NapiKernel(new CliRunner(ns) satisfies NftRunner), runner: 'nft CLI' };
  }
}

describe.skipIf(!canUseNetns())('NapiKernel in a private network namespace', () => {
  const ns = `slipstream-kernel-${randomBytes(4).toString('hex')}`;
  let kernel: NapiKernel;
  const nftList = () =>
    parseTable(
      JSON.parse(execFileSync('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'ruleset']).toString()),
    );

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    kernel = (await openKernel(ns)).kernel;
  });
  afterAll(() => {
    kernel?.close();
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  it('runs on nftables-napi', async () => {
    expect((await openKernel(ns)).runner).toBe('nftables-napi');
  });

  it('probes: this kernel has no flowtable support', async () => {
    const caps = await kernel.probe();
    expect(caps.flowtable).toBe(false);
    expect(caps.reason).toMatch(/flowtable probe failed/);
    // The probe ran in check mode: nothing was left behind.
    expect(execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables']).toString()).toBe('');
  });

  it('reads no table as null, applies a ruleset in one write and reads it back', async () => {
    expect(await kernel.readTable()).toBeNull();
    expect(await kernel.readFlowtableDevices()).toBeNull();
    const want = desired('dual-stack', false);
    const writes = kernel.writes;
    await kernel.apply(diff(null, want));
    expect(kernel.writes).toBe(writes + 1);
    expect(view(await kernel.readTable())).toEqual(view(want));
    expect(view(nftList())).toEqual(view(want));
    // An empty change is not a transaction.
    await kernel.apply(diff(want, want));
    expect(kernel.writes).toBe(writes + 1);
  });

  it('rejects a refused transaction with the kernel error class, committing nothing', async () => {
    const before = await kernel.readTable();
    const wrong = structuredClone(before!);
    wrong.elements.set('ip 10.9.9.9 6 1', {
      family: 'ip',
      address: '10.9.9.9',
      protocol: 6,
      port: 1,
      threshold: 20,
    });
    const writes = kernel.writes;
    await expect(kernel.apply(diff(wrong, desired('sctp', false)))).rejects.toMatchObject({
      errorClass: 'no-such-object',
    });
    expect(kernel.writes).toBe(writes);
    expect(view(await kernel.readTable())).toEqual(view(before));
  });

  it('commits an element-only change as a netlink batch, not through libnftables, and knows it as its own', async () => {
    const events: KernelEvent[] = [];
    const unwatch = kernel.watch((e) => events.push(e));
    try {
      const base = desired('vips', false);
      await kernel.apply(diff(await kernel.readTable(), base));
      const next = structuredClone(base);
      const threshold = base.thresholds[0]!;
      const gone = [...next.elements.keys()].find((k) => k.startsWith('ip '))!;
      next.elements.delete(gone);
      const added = [
        { family: 'ip', address: '10.123.0.1', protocol: 6, port: 443, threshold },
        { family: 'ip6', address: 'fd00::12:3400', protocol: 17, port: 53, threshold },
        { family: 'ip6', address: '::ffff:192.0.2.9', protocol: 6, port: 8443, threshold },
        { family: 'np', address: '', protocol: 6, port: 31999, threshold },
      ] as const;
      for (const e of added) next.elements.set(`${e.family} ${e.address} ${e.protocol} ${e.port}`, { ...e });
      next.nodeAddresses.ip = [...next.nodeAddresses.ip, '192.0.2.77'].sort();
      next.nodeAddresses.ip6 = [...next.nodeAddresses.ip6, '2001:db8::77'].sort();
      const change = diff(base, next);
      expect(elementBatch(change)).not.toBeNull();
      const libnftables = vi.spyOn(NftContext.prototype, 'run');
      const writes = kernel.writes;
      try {
        await kernel.apply(change);
      } finally {
        libnftables.mockRestore();
      }
      expect(libnftables).not.toHaveBeenCalled();
      expect(kernel.writes).toBe(writes + 1);
      // What nft lists is the ruleset the text writer would have made.
      expect(view(nftList())).toEqual(view(next));
      // Its change events carried the batch socket's port id and the right counts: nothing foreign,
      // nothing unverified (the check gives up after 2 s).
      await new Promise((resolve) => setTimeout(resolve, 2500));
      expect(events).toEqual([]);
    } finally {
      unwatch();
    }
  });

  it('reads back on a context of its own: commits after a read-back are still its own, others are foreign', async () => {
    const events: KernelEvent[] = [];
    const unwatch = kernel.watch((e) => events.push(e));
    try {
      const before = await kernel.readTable(); // the reader's context is freed after this
      await kernel.apply(diff(before, desired('dual-stack', false)));
      await kernel.readTable();
      await kernel.apply(diff(await kernel.readTable(), desired('sctp', false)));
      execFileSync('ip', ['netns', 'exec', ns, 'nft', 'add', 'chain', 'inet', 'slipstream', 'other']);
      await vi.waitFor(() => expect(events.some((e) => e.type === 'foreign-change')).toBe(true));
      const foreign = events.filter((e) => e.type === 'foreign-change');
      expect(foreign).toHaveLength(1);
      expect(foreign[0]).toMatchObject({ process: 'nft' });
    } finally {
      unwatch();
      execFileSync('ip', ['netns', 'exec', ns, 'nft', 'delete', 'chain', 'inet', 'slipstream', 'other']);
    }
  });
});
