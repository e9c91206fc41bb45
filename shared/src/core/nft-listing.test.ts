import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput, scenarioNames } from '../../../test/fixtures/services/load.ts';
import { isEmpty } from './change.ts';
import { desiredRuleset } from './desired-ruleset.ts';
import { diff } from './diff.ts';
import { parseFlowtable, parseRule, parseTable } from './nft-listing.ts';
import { changeText, rulesetText } from './nft-text.ts';
import type { Ruleset } from './ruleset.ts';

const T = { family: 'inet', table: 'slipstream' };

/** The kernel-facing part of a ruleset (bookkeeping and handles dropped), for deep equality. */
function kernelView(r: Ruleset) {
  const chains = new Map([...r.chains].map(([name, c]) => [name, { name, base: c.base, rules: c.rules }]));
  // The JSON listing does not show flowtable flags; the kernel edge asks for them separately.
  const flowtable = r.flowtable ? { ...r.flowtable, counter: null } : null;
  return { ...r, chains, flowtable, services: new Map(), owners: new Map() };
}

describe('parseTable', () => {
  it('returns null when the listing has no slipstream table', () => {
    expect(parseTable({ nftables: [{ metainfo: {} }] })).toBeNull();
    expect(parseTable(null)).toBeNull();
  });

  it('reads a flowtable (one device is listed as a string) and threshold rules that offload', () => {
    const listing = {
      nftables: [
        { metainfo: { version: '1.0.6' } },
        { table: { family: 'inet', name: 'slipstream', handle: 1 } },
        { flowtable: { ...T, name: 'ft', handle: 2, hook: 'ingress', prio: 0, dev: 'eth0' } },
        { chain: { ...T, name: 'threshold-20', handle: 3 } },
        {
          rule: {
            ...T,
            chain: 'threshold-20',
            handle: 4,
            expr: [
              { match: { op: '>', left: { ct: { key: 'packets' } }, right: 20 } },
              { counter: { packets: 12, bytes: 3400 } },
              { flow: { op: 'add', flowtable: '@ft' } },
            ],
          },
        },
      ],
    };
    const r = parseTable(listing)!;
    expect(r.flowtable).toEqual({ name: 'ft', devices: ['eth0'], counter: null });
    expect(r.chains.get('threshold-20')).toEqual({
      name: 'threshold-20',
      base: null,
      rules: [{ kind: 'threshold', threshold: 20, offload: true }],
    });
    expect(r.thresholds).toEqual([20]);
    expect(parseFlowtable(listing)).toEqual(['eth0']);
  });

  it('reports, with handles, what is not as Slipstream writes it', () => {
    const r = parseTable({
      nftables: [
        { table: { family: 'inet', name: 'slipstream' } },
        { set: { ...T, name: 'intruders', type: 'ipv4_addr', handle: 5 } },
        {
          map: {
            ...T,
            name: 'svc4',
            type: ['ipv4_addr', 'inet_proto', 'inet_service'],
            map: 'verdict',
            size: 3,
            handle: 6,
          },
        },
        { map: { ...T, name: 'svc6', type: 'ipv6_addr', map: 'verdict', handle: 7 } },
        { flowtable: { ...T, name: 'ft', hook: 'ingress', prio: -100, handle: 8 } },
        {
          chain: {
            ...T,
            name: 'forward',
            type: 'filter',
            hook: 'forward',
            prio: 10,
            policy: 'accept',
            handle: 9,
          },
        },
        { rule: { ...T, chain: 'forward', expr: [{ accept: null }] } },
        { table: { family: 'ip', name: 'other' } },
        { chain: { family: 'ip', table: 'other', name: 'x' } },
      ],
    })!;
    expect(r.foreign).toEqual([
      { kind: 'set', name: 'intruders', handle: 5, why: 'not a Slipstream set' },
      { kind: 'map', name: 'svc4', handle: 6, why: 'size 3' },
      { kind: 'map', name: 'svc6', handle: 7, why: 'type "ipv6_addr"' },
      { kind: 'flowtable', name: 'ft', handle: 8, why: 'hook "ingress" priority -100' },
    ]);
    expect(r.maps).toEqual([]);
    expect(r.chains.get('forward')?.rules).toEqual([{ kind: 'foreign', text: '[{"accept":null}]' }]);
    expect(r.chains.has('x')).toBe(false);
  });

  it('recognizes exactly the rules it writes', () => {
    const dispatch = [
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
      {
        vmap: {
          key: {
            concat: [
              { ct: { key: 'ip daddr', dir: 'original' } },
              { ct: { key: 'protocol' } },
              { ct: { key: 'proto-dst', dir: 'original' } },
            ],
          },
          data: '@svc4',
        },
      },
    ];
    expect(parseRule(dispatch, null)).toEqual({ kind: 'dispatch', family: 'ip', protocol: 'tcp' });
    (dispatch[1] as { vmap: { data: string } }).vmap.data = '@svc6';
    expect(parseRule(dispatch, null).kind).toBe('foreign');
    const offload = [
      { match: { op: '>', left: { ct: { key: 'packets' } }, right: 5 } },
      { counter: null },
      { flow: { op: 'add', flowtable: '@ft' } },
    ];
    expect(parseRule(offload, 'ft')).toEqual({ kind: 'threshold', threshold: 5, offload: true });
    expect(parseRule(offload, null).kind).toBe('foreign');
  });
});

// --- The writer's text, loaded by nft and listed back, in a private network namespace -----------

function canUseNetns(): boolean {
  try {
    execFileSync('nft', ['--version'], { stdio: 'ignore' });
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}

describe.skipIf(!canUseNetns())('round trip through nft in a private network namespace', () => {
  const ns = `slipstream-listing-${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'slipstream-listing-'));
  const nft = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args]).toString();
  const load = (text: string) => {
    const file = join(dir, 'commands.nft');
    writeFileSync(file, text);
    nft('-f', file);
  };
  const list = () => parseTable(JSON.parse(nft('-j', 'list', 'table', 'inet', 'slipstream')));

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(scenarioNames())('%s: write, load, list, parse gives the same ruleset', (name) => {
    // This kernel has no flowtables: the degraded ruleset is what can be loaded here.
    const desired = desiredRuleset(scenarioInput(loadScenario(name), false));
    nft('flush', 'ruleset');
    load(rulesetText(desired));
    const back = list();
    expect(back).not.toBeNull();
    expect(kernelView(back!)).toEqual(kernelView(desired));
    expect(isEmpty(diff(back, desired))).toBe(true);
  });

  it('applies minimal changes that bring the kernel to the desired state', () => {
    const input = scenarioInput(loadScenario('thresholds-shared'), false);
    const steps = [
      desiredRuleset(input),
      desiredRuleset({ ...input, services: [...input.services].slice(1) }),
      desiredRuleset({ ...input, services: [] }),
      desiredRuleset(scenarioInput(loadScenario('dual-stack'), false)),
    ];
    nft('flush', 'ruleset');
    let current: Ruleset | null = null;
    for (const step of steps) {
      load(changeText(diff(current, step)));
      expect(kernelView(list()!)).toEqual(kernelView(step));
      current = list();
    }
  });

  it('replaces what someone else put in the table, object by object, in one transaction', () => {
    const desired = desiredRuleset(scenarioInput(loadScenario('dual-stack'), false));
    nft('flush', 'ruleset');
    load(rulesetText(desired));
    nft('add', 'set', 'inet', 'slipstream', 'intruders', '{ type ipv4_addr; }');
    nft('add', 'chain', 'inet', 'slipstream', 'sneaky');
    nft('flush', 'map', 'inet', 'slipstream', 'svc4');
    nft('delete', 'rule', 'inet', 'slipstream', 'forward', 'handle', handleOfFirstRule());
    let back = list()!;
    expect(back.foreign.map((f) => `${f.kind} ${f.name}`)).toEqual(['set intruders']);
    load(changeText(diff(back, desired)));
    expect(kernelView(list()!)).toEqual(kernelView(desired));

    // A map re-created with another size: replaced, with its elements and the rules that use it.
    nft('flush', 'chain', 'inet', 'slipstream', 'forward');
    nft('delete', 'map', 'inet', 'slipstream', 'svc4');
    nft(
      'add',
      'map',
      'inet',
      'slipstream',
      'svc4',
      '{ type ipv4_addr . inet_proto . inet_service : verdict; size 3; }',
    );
    back = list()!;
    expect(back.foreign).toEqual([expect.objectContaining({ kind: 'map', name: 'svc4', why: 'size 3' })]);
    load(changeText(diff(back, desired)));
    expect(kernelView(list()!)).toEqual(kernelView(desired));
  });

  it('replaces a node address set of another type, with the nodePort rules that use it', () => {
    const desired = desiredRuleset({ ...scenarioInput(loadScenario('vips'), false) });
    nft('flush', 'ruleset');
    load(rulesetText(desired));
    nft('flush', 'chain', 'inet', 'slipstream', 'forward');
    nft('delete', 'set', 'inet', 'slipstream', 'node4');
    nft('add', 'set', 'inet', 'slipstream', 'node4', '{ type ipv4_addr; flags interval; }');
    const back = list()!;
    expect(back.foreign).toEqual([
      expect.objectContaining({ kind: 'set', name: 'node4', why: 'flags ["interval"]' }),
    ]);
    load(changeText(diff(back, desired)));
    expect(kernelView(list()!)).toEqual(kernelView(desired));
  });

  function handleOfFirstRule(): string {
    const doc = JSON.parse(nft('-j', '-a', 'list', 'chain', 'inet', 'slipstream', 'forward')) as {
      nftables: { rule?: { handle: number } }[];
    };
    return String(doc.nftables.find((i) => i.rule)!.rule!.handle);
  }
});
