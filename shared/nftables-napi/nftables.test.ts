// Runs against the real kernel, inside private network namespaces this file creates and removes.
// Nothing here modifies the host's ruleset.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  classifyNftError,
  involvesFlowtable,
  NftContext,
  NftError,
  type NftErrorClass,
  parseNftOutput,
} from './index.ts';

const suffix = randomBytes(4).toString('hex');
const NS = `slipstream-napi-test-${suffix}`;
const NS2 = `slipstream-napi-test-${suffix}b`;
const nsPath = (ns: string): string => `/run/netns/${ns}`;
const createdNamespaces: string[] = [];

let ctx: NftContext;

function addNamespace(ns: string): void {
  execFileSync('ip', ['netns', 'add', ns]);
  if (!createdNamespaces.includes(ns)) createdNamespaces.push(ns);
}

function tableNames(json: string): string[] {
  const doc = JSON.parse(json) as { nftables: Array<{ table?: { family: string; name: string } }> };
  return doc.nftables.flatMap((item) => (item.table ? [`${item.table.family} ${item.table.name}`] : []));
}

/** Tables in a namespace, as the nft CLI (not this addon) sees them. */
function nsTables(ns: string): string[] {
  return tableNames(
    execFileSync('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'tables'], { encoding: 'utf8' }),
  );
}

/** Tables in the host's namespace (read only). */
function hostTables(): string[] {
  return tableNames(execFileSync('nft', ['-j', 'list', 'tables'], { encoding: 'utf8' }));
}

type Item = Record<string, Record<string, unknown>>;
function items(doc: unknown, kind: string): Record<string, unknown>[] {
  expect(doc).toMatchObject({ nftables: expect.any(Array) });
  return (doc as { nftables: Item[] }).nftables.flatMap((item) => (item[kind] ? [item[kind]] : []));
}

async function rejection(promise: Promise<unknown>, errorClass: NftErrorClass): Promise<NftError> {
  let caught: unknown;
  try {
    await promise;
  } catch (err) {
    caught = err;
  }
  expect(caught, 'the run should have been rejected').toBeInstanceOf(NftError);
  const err = caught as NftError;
  expect(err.errorClass, err.nftMessage).toBe(errorClass);
  return err;
}

beforeAll(() => {
  addNamespace(NS);
  ctx = new NftContext({ netns: nsPath(NS) });
});

afterAll(() => {
  ctx?.close();
  for (const ns of createdNamespaces) spawnSync('ip', ['netns', 'del', ns]);
});

describe('tables, sets and maps', () => {
  it('adds a table, a set and a map with elements from nft text and lists them back as JSON', async () => {
    const added = await ctx.run(`
      add table inet txt
      add set inet txt addrs { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.2 } }
      add map inet txt ports { type ipv4_addr : inet_service; elements = { 10.0.0.1 : 80, 10.0.0.2 : 443 } }
    `);
    expect(added).toBeNull();
    expect(nsTables(NS)).toContain('inet txt');

    const listed = await ctx.run('list table inet txt');
    expect(items(listed, 'metainfo')[0]).toMatchObject({ json_schema_version: 1 });
    expect(items(listed, 'table')).toEqual([expect.objectContaining({ family: 'inet', name: 'txt' })]);
    const [set] = items(listed, 'set');
    expect(set).toMatchObject({ name: 'addrs', table: 'txt', type: 'ipv4_addr' });
    expect(set?.['elem']).toEqual(['10.0.0.1', '10.0.0.2']);
    const [map] = items(listed, 'map');
    expect(map).toMatchObject({ name: 'ports', type: 'ipv4_addr', map: 'inet_service' });
    expect(map?.['elem']).toEqual([
      ['10.0.0.1', 80],
      ['10.0.0.2', 443],
    ]);
  });

  it('adds the same from a libnftables JSON object and lists them back with a JSON command', async () => {
    const added = await ctx.run({
      nftables: [
        { add: { table: { family: 'inet', name: 'js' } } },
        { add: { set: { family: 'inet', table: 'js', name: 'addrs', type: 'ipv4_addr' } } },
        {
          add: {
            map: { family: 'inet', table: 'js', name: 'ports', type: 'ipv4_addr', map: 'inet_service' },
          },
        },
        { add: { element: { family: 'inet', table: 'js', name: 'addrs', elem: ['10.1.0.1', '10.1.0.2'] } } },
        { add: { element: { family: 'inet', table: 'js', name: 'ports', elem: [['10.1.0.1', 8080]] } } },
      ],
    });
    expect(added).toBeNull();

    const set = await ctx.run({
      nftables: [{ list: { set: { family: 'inet', table: 'js', name: 'addrs' } } }],
    });
    expect(items(set, 'set')).toEqual([
      expect.objectContaining({ name: 'addrs', elem: ['10.1.0.1', '10.1.0.2'] }),
    ]);
    const map = await ctx.run('list map inet js ports');
    expect(items(map, 'map')).toEqual([
      expect.objectContaining({ name: 'ports', elem: [['10.1.0.1', 8080]] }),
    ]);
    // The CLI agrees: the elements are in the kernel.
    const cli = execFileSync('ip', ['netns', 'exec', NS, 'nft', 'list', 'set', 'inet', 'js', 'addrs'], {
      encoding: 'utf8',
    });
    expect(cli).toMatch(/10\.1\.0\.1, 10\.1\.0\.2/);
  });

  it('merges the documents of several listing commands in one run into one', async () => {
    await ctx.run('add table inet multi; add set inet multi s { type ipv4_addr; }');
    const out = await ctx.run('list table inet multi; list tables');
    expect(items(out, 'metainfo')).toHaveLength(1);
    expect(items(out, 'set')).toEqual([expect.objectContaining({ name: 's', table: 'multi' })]);
    const tables = items(out, 'table').map((t) => `${t['family']} ${t['name']}`);
    expect(tables.filter((t) => t === 'inet multi')).toHaveLength(2);
  });
});

describe('errors', () => {
  it('classifies a syntax error as invalid', async () => {
    const err = await rejection(ctx.run('add tabel inet nope'), 'invalid');
    expect(err.nftMessage).toMatch(/syntax error/);
    expect(err.message).toMatch(/syntax error/);
    await rejection(ctx.run({ nftables: [{ add: { tabel: { family: 'inet', name: 'nope' } } }] }), 'invalid');
  });

  it('classifies deleting a missing table as no-such-object', async () => {
    const err = await rejection(ctx.run('delete table inet nosuchtable'), 'no-such-object');
    expect(err.nftMessage).toMatch(/No such file or directory/);
    await rejection(
      ctx.run({ nftables: [{ delete: { table: { family: 'inet', name: 'nosuchtable' } } }] }),
      'no-such-object',
    );
  });

  it('reports a flowtable on a kernel without flowtable support as not-supported', async () => {
    await ctx.run('add table inet ft; add chain inet ft c1 { type filter hook forward priority 0; }');
    const add = ctx.run('add flowtable inet ft f { hook ingress priority 0; devices = { lo }; }');
    if ((await ctx.flowtablesSupported()) === true) {
      // A kernel with flowtables accepts it.
      await expect(add).resolves.toBeNull();
      return;
    }
    const err = await rejection(add, 'not-supported');
    // libnftables' own text is kept: the kernel says ENOENT.
    expect(err.nftMessage).toMatch(/Could not process rule: No such file or directory/);
    await rejection(ctx.run('add rule inet ft c1 flow add @f'), 'not-supported');
    await rejection(
      ctx.run({
        nftables: [
          { add: { flowtable: { family: 'inet', table: 'ft', name: 'f', hook: 'ingress', prio: 0 } } },
        ],
      }),
      'not-supported',
    );
    // Nothing to do with support: the table is missing (found by libnftables before the kernel).
    await rejection(
      ctx.run('add flowtable inet nosuchtable f { hook ingress priority 0; }'),
      'no-such-object',
    );
  });

  it('classifies exists, busy and not-supported from the kernel', async () => {
    await ctx.run(
      'add table inet errs; add chain inet errs a; add chain inet errs b; add rule inet errs a jump b',
    );
    await rejection(ctx.run('create table inet errs'), 'exists');
    await rejection(ctx.run('delete chain inet errs b'), 'busy');
    await rejection(ctx.run('add chain inet errs n { type nat hook forward priority 0; }'), 'not-supported');
  });

  it('classifies a missing capability as permission (child process without CAP_NET_ADMIN)', () => {
    const indexUrl = new URL('./index.ts', import.meta.url).href;
    const script = `
      import { NftContext } from ${JSON.stringify(indexUrl)};
      const ctx = new NftContext({ netns: ${JSON.stringify(nsPath(NS))} });
      try { await ctx.run('add table inet perm'); console.log('committed'); }
      catch (err) { console.log(JSON.stringify({ errorClass: err.errorClass, nftMessage: err.nftMessage })); }
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
    const result = JSON.parse(child.stdout.trim()) as { errorClass: string; nftMessage: string };
    expect(result.errorClass).toBe('permission');
    expect(result.nftMessage).toMatch(/Operation not permitted/);
    expect(nsTables(NS)).not.toContain('inet perm');
  });

  it('rejects with no-such-object for a namespace path that does not exist', async () => {
    const gone = new NftContext({ netns: nsPath(`${NS}-never-created`) });
    const err = await rejection(gone.run('list tables'), 'no-such-object');
    expect(err.message).toMatch(/network namespace/);
    gone.close();
  });

  it('classifies error texts', () => {
    const cases: Array<[string, NftErrorClass]> = [
      ['Error: syntax error, unexpected newline\nadd tabel x\n           ^\n', 'invalid'],
      ['Error: Could not process rule: No such file or directory\ndelete table ip x\n', 'no-such-object'],
      ['Error: No such file or directory; did you mean table ‘t’ in family ip?\n', 'no-such-object'],
      ['Error: Could not process rule: Operation not supported\n', 'not-supported'],
      ['Error: Could not process rule: File exists\n', 'exists'],
      ['Error: Could not process rule: Device or resource busy\n', 'busy'],
      ['netlink: Error: cache initialization failed: Operation not permitted\n', 'permission'],
      ['Error: Could not process rule: Invalid argument\n', 'invalid'],
      ['internal:0:0-0: Error: Unknown object passed to add command.\n', 'invalid'],
      ['Error: datatype mismatch, expected IPv4 address\n', 'invalid'],
      ['Error: Could not process rule: Cannot allocate memory\n', 'unknown'],
      ['something else entirely', 'unknown'],
    ];
    for (const [text, expected] of cases) expect(classifyNftError(text), text).toBe(expected);
    // The first error decides.
    expect(
      classifyNftError('Error: Could not process rule: File exists\nError: ... No such file or directory'),
    ).toBe('exists');
  });

  it('tells flowtable failures from others by the text under the carets', () => {
    const ft =
      'Error: Could not process rule: No such file or directory\nadd table inet p; add flowtable inet p f\n';
    expect(involvesFlowtable(`${ft}                   ^^^^^^^^^^^^^^^^^^^^^\n`, '')).toBe(true);
    expect(involvesFlowtable(`${ft}               ^\n`, '')).toBe(false);
    expect(
      involvesFlowtable('internal:0:0-0: Error: Could not process rule: x\n', '{"add":{"flowtable":{}}}'),
    ).toBe(true);
    expect(
      involvesFlowtable('internal:0:0-0: Error: Could not process rule: x\n', '{"add":{"table":{}}}'),
    ).toBe(false);
  });
});

describe('check mode', () => {
  it('validates without committing, against the kernel, for that run only', async () => {
    expect(
      await ctx.run('add table inet dry; add set inet dry s { type ipv4_addr; }', { check: true }),
    ).toBeNull();
    expect(nsTables(NS)).not.toContain('inet dry');
    expect(items(await ctx.run('list tables'), 'table').map((t) => t['name'])).not.toContain('dry');

    // The kernel still sees the batch (it is aborted, not committed): kernel errors surface.
    await ctx.run('add table inet drykernel');
    await rejection(ctx.run('create table inet drykernel', { check: true }), 'exists');
    await rejection(ctx.run('add tabel inet dry', { check: true }), 'invalid');

    // The next run without check commits again.
    await ctx.run('add table inet dry');
    expect(nsTables(NS)).toContain('inet dry');
  });
});

describe('release', () => {
  it('frees the context after that run (its socket with it) and opens a new one for the next', async () => {
    const own = new NftContext({ netns: nsPath(NS) });
    try {
      await own.run(
        'add table inet released; add set inet released s { type ipv4_addr; elements = { 10.0.0.1 } }',
      );
      const port = own.portId;
      expect(port).not.toBe(0);
      await own.run('list tables');
      expect(own.portId).toBe(port); // kept without release

      const listed = await own.run('list set inet released s', { release: true });
      expect(items(listed, 'set')[0]).toMatchObject({ name: 's', elem: ['10.0.0.1'] });
      expect(own.portId).toBe(0); // the libnftables context and its netlink socket are gone

      await own.run('add element inet released s { 10.0.0.2 }');
      expect(own.portId).not.toBe(0);
      expect(items(await own.run('list set inet released s'), 'set')[0]?.elem).toEqual([
        '10.0.0.1',
        '10.0.0.2',
      ]);
    } finally {
      own.close();
    }
  });
});

describe('transactions', () => {
  it('commits nothing when one command of a text run fails in the kernel', async () => {
    await rejection(
      ctx.run(`
        add table inet atomic
        add set inet atomic s { type ipv4_addr; elements = { 10.9.0.1 } }
        delete table inet doesnotexist
        add map inet atomic m { type ipv4_addr : inet_service; }
      `),
      'no-such-object',
    );
    expect(nsTables(NS)).not.toContain('inet atomic');
  });

  it('commits nothing when one command of a JSON run fails in the kernel', async () => {
    await ctx.run('add table inet atomicjs; add set inet atomicjs s { type ipv4_addr; }');
    await rejection(
      ctx.run({
        nftables: [
          { add: { element: { family: 'inet', table: 'atomicjs', name: 's', elem: ['10.9.1.1'] } } },
          { add: { table: { family: 'inet', name: 'atomicjs2' } } },
          { create: { table: { family: 'inet', name: 'atomicjs' } } },
        ],
      }),
      'exists',
    );
    expect(nsTables(NS)).not.toContain('inet atomicjs2');
    expect(items(await ctx.run('list set inet atomicjs s'), 'set')[0]?.['elem']).toBeUndefined();
  });
});

describe('concurrency and threads', () => {
  it('serializes many parallel runs on one context, all succeeding in order', async () => {
    await ctx.run('add table inet conc; add set inet conc s { type ipv4_addr; }');
    const n = 40;
    const finished: number[] = [];
    const runs = Array.from({ length: n }, (_, i) =>
      ctx.run(`add element inet conc s { 10.3.0.${i + 1} }`).then((out) => {
        finished.push(i);
        return out;
      }),
    );
    expect(await Promise.all(runs)).toEqual(Array(n).fill(null));
    expect(finished).toEqual(Array.from({ length: n }, (_, i) => i));
    const elems = items(await ctx.run('list set inet conc s'), 'set')[0]?.['elem'];
    expect(elems).toHaveLength(n);
  });

  it('the native layer itself refuses a second concurrent run on one context', async () => {
    const native = createRequire(import.meta.url)('./build/Release/nftables_napi.node') as {
      NftContextNative: new (
        netns?: string,
      ) => { run(cmd: string, check: boolean): Promise<{ rc: number }>; close(): void };
    };
    const raw = new native.NftContextNative(nsPath(NS));
    const first = raw.run('list tables', false);
    expect(() => raw.run('list tables', false)).toThrow(/busy/);
    expect((await first).rc).toBe(0);
    raw.close();
    expect(() => raw.run('list tables', false)).toThrow(/closed/);
  });

  it('runs inside the namespace only, and returns pooled worker threads to the host namespace', async () => {
    await ctx.run('add table inet nsonly');
    expect(nsTables(NS)).toContain('inet nsonly');
    expect(hostTables()).not.toContain('inet nsonly');

    // Interleave many namespace and host runs over the libuv pool: a thread left in the
    // namespace would show `nsonly` in a host listing.
    const host = new NftContext();
    const listings = await Promise.all(
      Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? ctx : host).run('list tables')),
    );
    listings.forEach((doc, i) => {
      const names = items(doc, 'table').map((t) => `${t['family']} ${t['name']}`);
      if (i % 2 === 0) expect(names).toContain('inet nsonly');
      else expect(names).not.toContain('inet nsonly');
    });
    host.close();
  });

  it('follows a namespace that was deleted and re-created under the same path', async () => {
    addNamespace(NS2);
    const ctx2 = new NftContext({ netns: nsPath(NS2) });
    await ctx2.run('add table inet old');
    expect(nsTables(NS2)).toContain('inet old');
    execFileSync('ip', ['netns', 'del', NS2]);
    execFileSync('ip', ['netns', 'add', NS2]);
    expect(items(await ctx2.run('list tables'), 'table')).toEqual([]);
    await ctx2.run('add table inet new');
    expect(nsTables(NS2)).toEqual(['inet new']);
    ctx2.close();
  });

  it('close() lets accepted runs finish and rejects later ones', async () => {
    const c = new NftContext({ netns: nsPath(NS) });
    const accepted = c.run('add table inet closing');
    c.close();
    await expect(accepted).resolves.toBeNull();
    await expect(c.run('list tables')).rejects.toThrow(/closed/);
    expect(nsTables(NS)).toContain('inet closing');
  });
});

describe('output parsing', () => {
  it('returns null for no output, raw text for non-JSON output', () => {
    expect(parseNftOutput('')).toBeNull();
    expect(parseNftOutput('\n')).toBeNull();
    expect(parseNftOutput('not json')).toBe('not json');
    expect(
      parseNftOutput('{"nftables":[{"metainfo":{}},{"table":{}}]}\n{"nftables":[{"metainfo":{}}]}'),
    ).toEqual({
      nftables: [{ metainfo: {} }, { table: {} }],
    });
  });
});
