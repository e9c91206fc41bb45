// The Reconciler against the real kernel of this machine (no flowtable support: degraded
// mode), in a private network namespace, through nftables-napi. Tampering and read-back go
// through the nft CLI, an observer independent of the daemon's own kernel edge.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { USER_KEYS } from '@slipstream/shared/core/contract';
import { desiredRuleset } from '@slipstream/shared/core/desired-ruleset';
import { parseTable } from '@slipstream/shared/core/nft-listing';
import type { Ruleset } from '@slipstream/shared/core/ruleset';
import type { Service } from '@slipstream/shared/core/service';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput } from '../../test/fixtures/services/load.ts';
import { canUseNetns } from '../../test/lib/netns.ts';
import { DeviceSelector } from './devices.ts';
import { NapiKernel, type NftRunner } from './kernel.ts';
import { CliRunner } from './kernel-cli.ts';
import { LinkWatcher } from './links.ts';
import { Reconciler, type SyncResult } from './reconciler.ts';

const policy = loadDefaultPolicy();
const view = (r: Ruleset | null | undefined) => (r ? { ...r, services: new Map(), owners: new Map() } : r);

async function runnerFor(ns: string): Promise<NftRunner> {
  try {
    const napi = await import('nftables-napi');
    return new napi.NftContext({ netns: `/run/netns/${ns}` });
  } catch {
    return new CliRunner(ns);
  }
}

describe.skipIf(!canUseNetns())('Reconciler on the real kernel (degraded: no flowtable)', () => {
  const ns = `slipstream-reconciler-${randomBytes(4).toString('hex')}`;
  const nft = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args]).toString();
  const ip = (...args: string[]) => execFileSync('ip', ['-n', ns, ...args]);
  const kernelTable = () => {
    try {
      return parseTable(JSON.parse(nft('-j', 'list', 'table', 'inet', 'slipstream')));
    } catch {
      return null;
    }
  };
  type Elem = [{ concat: (string | number)[] }, { jump: { target: string } }];
  const elementLines = () => {
    const doc = JSON.parse(nft('-j', 'list', 'table', 'inet', 'slipstream')) as {
      nftables: { map?: { name: string; elem?: Elem[] } }[];
    };
    return doc.nftables
      .flatMap((i) =>
        (i.map?.elem ?? []).map((e) => `${i.map?.name} ${e[0].concat.join(' ')} -> ${e[1].jump.target}`),
      )
      .sort();
  };
  const cleanup: (() => void | Promise<void>)[] = [];

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
  });
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  async function reconciler(scenario: string, runner?: NftRunner) {
    const s = loadScenario(scenario);
    const kernel = new NapiKernel(runner ?? (await runnerFor(ns)));
    const r = new Reconciler({
      kernel,
      policy,
      minSyncIntervalMs: 10,
      resyncIntervalMs: 0,
      retryInitialMs: 10,
      logger: silentLogger,
    });
    r.update({ services: s.services, namespaces: s.namespaces.values(), devices: [] });
    cleanup.push(async () => {
      await r.stop();
      kernel.close();
    });
    return { r, kernel, s };
  }

  it('programs the elements, readable with nft -j list table inet slipstream', async () => {
    nft('flush', 'ruleset');
    const { r, s } = await reconciler('dual-stack');
    const result = await r.start();
    expect(result).toMatchObject({ result: 'ok', degraded: true, writes: 1, elementsAdded: 4 });
    expect(result.degradedReason).toMatch(/flowtable/);
    expect(elementLines()).toEqual([
      'svc4 10.96.0.10 tcp 5432 -> threshold-20',
      'svc4 10.96.0.10 udp 443 -> threshold-20',
      'svc6 fd00:10:96::a tcp 5432 -> threshold-20',
      'svc6 fd00:10:96::a udp 443 -> threshold-20',
    ]);
    expect(view(kernelTable())).toEqual(view(desiredRuleset(scenarioInput(s, false))));
    expect(nft('list', 'chain', 'inet', 'slipstream', 'threshold-20')).toContain('ct packets > 20 counter');
    // A ct packets expression turns conntrack accounting on in the namespace.
    expect(
      execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-n', 'net.netfilter.nf_conntrack_acct'])
        .toString()
        .trim(),
    ).toBe('1');
  });

  it('adopts the table after a restart with zero writes', async () => {
    nft('flush', 'ruleset');
    const first = await reconciler('thresholds-shared');
    await first.r.start();
    await first.r.stop();
    const second = await reconciler('thresholds-shared');
    const result = await second.r.start();
    expect(result).toMatchObject({ result: 'noop', readBack: true, writes: 0 });
    expect(second.kernel.writes).toBe(0);
  });

  it('repairs drift at a resync: a deleted element, an altered verdict, an altered chain, a deleted table', async () => {
    nft('flush', 'ruleset');
    const { r, s } = await reconciler('dual-stack');
    await r.start();
    const want = view(desiredRuleset(scenarioInput(s, false)));

    nft('delete', 'element', 'inet', 'slipstream', 'svc4', '{ 10.96.0.10 . tcp . 5432 }');
    let result = await r.sync('resync');
    expect(result).toMatchObject({ result: 'ok', drift: true, elementsAdded: 1, elementsRemoved: 0 });
    expect(view(kernelTable())).toEqual(want);

    nft('add', 'chain', 'inet', 'slipstream', 'elsewhere');
    nft('delete', 'element', 'inet', 'slipstream', 'svc6', '{ fd00:10:96::a . udp . 443 }');
    nft('add', 'element', 'inet', 'slipstream', 'svc6', '{ fd00:10:96::a . udp . 443 : jump elsewhere }');
    nft('add', 'rule', 'inet', 'slipstream', 'forward', 'accept');
    result = await r.sync('resync');
    expect(result).toMatchObject({ result: 'ok', drift: true, elementsAdded: 1, elementsRemoved: 1 });
    expect(view(kernelTable())).toEqual(want);

    nft('delete', 'table', 'inet', 'slipstream');
    result = await r.sync('resync');
    expect(result).toMatchObject({ result: 'ok', drift: true, writes: 1 });
    expect(view(kernelTable())).toEqual(want);

    expect(await r.sync('resync')).toMatchObject({ result: 'noop', drift: false, writes: 0 });
  });

  it('records a refused transaction, loses nothing, and the next sync succeeds', async () => {
    nft('flush', 'ruleset');
    const real = await runnerFor(ns);
    let poison = 0;
    // Appends a rule jumping to a chain that does not exist: the kernel refuses the whole batch.
    const runner: NftRunner = {
      run: (commands, options) => {
        const isWrite =
          // Every transaction on the table (dry runs too), not the capability probe's own table.
          typeof commands === 'string' && /^(add|delete|flush) .*inet slipstream( |$)/m.test(commands);
        if (isWrite && poison > 0) {
          poison--;
          return real.run(`${commands}add rule inet slipstream forward jump nowhere\n`, options);
        }
        return real.run(commands, options);
      },
      close: () => real.close(),
    };
    const { r, s } = await reconciler('thresholds-shared', runner);
    await r.start();
    const before = kernelTable();

    poison = 3; // the sync, its immediate retry, and the isolation's check of the structure alone
    r.setService({ ...s.services[0]!, name: 'pg-c', clusterIPs: ['10.96.2.9'] });
    const recovered = r.nextSync((x: SyncResult) => x.result === 'ok');
    const failed = await r.sync('service');
    expect(failed).toMatchObject({ result: 'error', retried: true, writes: 0, errorClass: 'no-such-object' });
    expect(failed.error).toMatch(/Error:/);
    expect(r.lastError?.message).toBe(failed.error);
    expect(view(kernelTable())).toEqual(view(before));

    expect(await recovered).toMatchObject({ result: 'ok', writes: 1, elementsAdded: 1 });
    expect(elementLines()).toContain('svc4 10.96.2.9 tcp 5432 -> threshold-20');
  });

  it('never fails a sync while veth pairs come and go', async () => {
    nft('flush', 'ruleset');
    const { r } = await reconciler('sctp');
    const results: SyncResult[] = [];
    r.onSync((x) => results.push(x));
    const selector = new DeviceSelector();
    const watcher = new LinkWatcher({
      netns: ns,
      logger: silentLogger,
      onChange: (links) => {
        r.update({ devices: selector.select(links).hooked });
        r.request('link');
      },
    });
    cleanup.push(() => watcher.stop());
    r.update({ devices: selector.select(await watcher.start()).hooked });
    await r.start();
    for (let i = 0; i < 5; i++) {
      ip('link', 'add', `ca${i}`, 'type', 'veth', 'peer', 'name', `cb${i}`);
      ip('link', 'set', `ca${i}`, 'up');
      await r.sync('link');
      ip('link', 'delete', `ca${i}`);
    }
    await watcher.refresh();
    await r.sync('link');
    expect(results.length).toBeGreaterThan(0);
    expect(results.filter((x) => x.result === 'error')).toEqual([]);
    expect(results.every((x) => x.degraded)).toBe(true);
  });
  it('sends every change as nft text, one transaction each, read back equal to the desired table', async () => {
    nft('flush', 'ruleset');
    const inner = await runnerFor(ns);
    // Which form each element write took (probes and listings are not recorded).
    const inputs: string[] = [];
    const spy: NftRunner = {
      run: (commands, options) => {
        if (typeof commands === 'string') {
          if (commands.includes(' element ')) inputs.push('text');
        } else if (JSON.stringify(commands).includes('"element"')) inputs.push('json');
        return inner.run(commands, options);
      },
      close: () => inner.close(),
    };
    const kernel = new NapiKernel(spy);
    const r = new Reconciler({
      kernel,
      policy,
      minSyncIntervalMs: 0,
      resyncIntervalMs: 0,
      logger: silentLogger,
    });
    cleanup.push(async () => {
      await r.stop();
      kernel.close();
    });
    const svc = (i: number, threshold?: string): Service => ({
      namespace: 'bulk',
      name: `s${i}`,
      annotations: threshold ? { [USER_KEYS.packetThreshold]: threshold } : {},
      type: 'ClusterIP',
      clusterIPs: [`10.97.${i >> 8}.${i & 255}`, `fd00:97::${i.toString(16)}`],
      ports: [
        { port: 5432, protocol: 'TCP' },
        { port: 8080, protocol: 'TCP', name: 'http' },
      ],
    });
    const namespaces = [{ name: 'bulk', labels: {} }];
    const all = Array.from({ length: 400 }, (_, i) => svc(i, i % 3 === 0 ? '33' : undefined));
    r.update({ services: all, namespaces, devices: [] });
    const first = await r.start();
    expect(first).toMatchObject({ result: 'ok', writes: 1, elementsAdded: 1600 });
    const inputInput = {
      services: all,
      namespaces: new Map(namespaces.map((n) => [n.name, n])),
      devices: [],
      capabilities: { flowtable: false },
      policy,
    };
    expect(view(kernelTable())).toEqual(view(desiredRuleset(inputInput)));
    // Most Services go (a large delete batch, as text), the threshold-33 chain with its last element.
    const rest = all.filter((_, i) => i % 3 !== 0).slice(0, 20);
    r.update({ services: rest });
    const second = await r.sync('service');
    expect(second).toMatchObject({ result: 'ok', writes: 1, readBack: false, elementsRemoved: 1520 });
    expect(view(kernelTable())).toEqual(view(desiredRuleset({ ...inputInput, services: rest })));
    expect(kernelTable()?.chains.has('threshold-33')).toBe(false);
    // A small change goes as text too (one writer).
    r.update({ services: [...rest, svc(999)] });
    expect(await r.sync('service')).toMatchObject({ result: 'ok', writes: 1, elementsAdded: 4 });
    expect(view(kernelTable())).toEqual(
      view(desiredRuleset({ ...inputInput, services: [...rest, svc(999)] })),
    );
    expect(inputs).toEqual(['text', 'text', 'text']);
  });
});
