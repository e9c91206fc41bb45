// The nf_tables event monitor against the real kernel, inside private network namespaces this file
// creates and removes.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type MonitorEvent, NftContext, NftMonitor } from './index.ts';

const NS = `slipstream-monitor-test-${randomBytes(4).toString('hex')}`;
const nsPath = `/run/netns/${NS}`;
const nft = (cmd: string) => execFileSync('ip', ['netns', 'exec', NS, 'nft', cmd]);

function collector() {
  const events: MonitorEvent[] = [];
  const until = async (pred: (e: MonitorEvent) => boolean, ms = 3000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = events.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no such event; got ${JSON.stringify(events)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return { events, until };
}

beforeAll(() => {
  execFileSync('ip', ['netns', 'add', NS]);
});
afterAll(() => {
  spawnSync('ip', ['netns', 'del', NS]);
});

describe('NftMonitor', () => {
  it('reports each transaction on the watched table once, with who committed it, and nothing else', async () => {
    const { events, until } = collector();
    const m = new NftMonitor({ netns: nsPath, family: 'inet', table: 'watched' }, (e) => events.push(e));
    nft(
      'add table inet watched; add map inet watched m { type ipv4_addr : verdict; }; add chain inet watched c',
    );
    nft('add element inet watched m { 10.0.0.1 : jump c, 10.0.0.2 : jump c }');
    nft('add table inet other; add chain inet other x');
    nft('flush map inet watched m');
    const flush = await until(
      (e) => e.type === 'batch' && e.changes.some((c) => c.op === 'delete' && c.kind === 'element'),
    );
    expect(flush).toMatchObject({
      type: 'batch',
      process: 'nft',
      changes: [{ op: 'delete', kind: 'element', name: 'm', count: 2 }],
    });
    const batches = events.filter((e) => e.type === 'batch');
    expect(batches).toHaveLength(3);
    expect(batches[1]).toMatchObject({ changes: [{ op: 'add', kind: 'element', name: 'm', count: 2 }] });
    // Generations grow by one per commit, the unwatched table's included.
    const gens = batches.map((b) => (b.type === 'batch' ? b.generation : 0));
    expect(gens[2]! - gens[1]!).toBe(2);
    m.close();
  });

  it("tells this process's own commits from anyone else's by the committing socket's port id", async () => {
    const { events, until } = collector();
    const m = new NftMonitor({ netns: nsPath, family: 'inet', table: 'mine' }, (e) => events.push(e));
    const ctx = new NftContext({ netns: nsPath });
    await ctx.run('add table inet mine');
    nft('add chain inet mine theirs');
    await until((e) => e.type === 'batch' && e.changes.some((c) => c.kind === 'chain'));
    const [own, foreign] = events.filter((e) => e.type === 'batch');
    expect(ctx.portId).toBeGreaterThan(0);
    expect(own).toMatchObject({ portId: ctx.portId });
    expect(foreign).toMatchObject({ process: 'nft' });
    expect((foreign as { portId: number }).portId).not.toBe(ctx.portId);
    ctx.close();
    m.close();
  });

  it('answers the generation id, which every commit changes', async () => {
    const m = new NftMonitor({ netns: nsPath, family: 'inet', table: 'x' }, () => {});
    const before = await m.generation();
    nft('add table inet gen1');
    nft('add table inet gen2');
    expect(await m.generation()).toBe(before + 2);
    m.close();
  });

  it('reports a missing flowtable as null (this kernel has no flowtables at all)', async () => {
    const m = new NftMonitor({ netns: nsPath, family: 'inet', table: 'x' }, () => {});
    nft('add table inet noft');
    expect(await m.flowtable('noft', 'ft')).toBeNull();
    m.close();
  });

  it('reports an overrun when events are lost, so the caller knows to read the table back', async () => {
    const events: MonitorEvent[] = [];
    const m = new NftMonitor({ netns: nsPath, family: 'inet', table: 'big', receiveBufferBytes: 4096 }, (e) =>
      events.push(e),
    );
    const elements = Array.from({ length: 5000 }, (_, i) => `10.1.${i >> 8}.${i & 255}`).join(', ');
    nft(`add table inet big; add set inet big s { type ipv4_addr; }; add element inet big s { ${elements} }`);
    const deadline = Date.now() + 3000;
    while (!events.some((e) => e.type === 'overrun') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(events.some((e) => e.type === 'overrun')).toBe(true);
    m.close();
  });

  it('refuses a namespace that is not there, naming it', () => {
    expect(
      () =>
        new NftMonitor({ netns: '/run/netns/slipstream-none-such', family: 'inet', table: 'x' }, () => {}),
    ).toThrow(/slipstream-none-such/);
  });
});

describe('NftContext stray messages', () => {
  it('captures what libnftables prints to stderr instead of letting it reach the process stderr', () => {
    // Without CAP_NET_ADMIN libnftables prints "... (you must be root)" straight to the C stderr.
    const indexUrl = new URL('./index.ts', import.meta.url).href;
    const script = `
      import { NftContext } from ${JSON.stringify(indexUrl)};
      const strays = [];
      const ctx = new NftContext({ netns: ${JSON.stringify(nsPath)}, onStray: (t) => strays.push(t) });
      let errorClass;
      try { await ctx.run('list ruleset'); } catch (err) { errorClass = err.errorClass; }
      console.log(JSON.stringify({ strays, errorClass }));
    `;
    const child = spawnSync(
      'setpriv',
      [
        '--inh-caps=-net_admin',
        '--bounding-set=-net_admin',
        process.execPath,
        '--input-type=module',
        '-e',
        script,
      ],
      { encoding: 'utf8' },
    );
    expect(child.status, child.stderr).toBe(0);
    const out = JSON.parse(child.stdout.trim()) as { strays: string[]; errorClass: string };
    expect(out.errorClass).toBe('permission');
    expect(out.strays.join('\n')).toMatch(/you must be root/);
    expect(child.stderr).not.toMatch(/you must be root/);
  });
});
