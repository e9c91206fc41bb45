import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput, scenarioNames } from '../../../test/fixtures/services/load.ts';
import { canUseNetns } from '../../../test/lib/netns.ts';
import { diff, isEmpty } from './diff.ts';
import {
  changeToCommands,
  changeToInput,
  changeToText,
  formatRuleset,
  parseFlowtable,
  parseRule,
  parseTable,
  ruleExpr,
  rulesetToCommands,
} from './nft-json.ts';
import { desiredRuleset, type Ruleset } from './ruleset.ts';

const T = { family: 'inet', table: 'slipstream' };

/** The kernel-facing part of a ruleset (bookkeeping dropped), for deep equality. */
function kernelView(r: Ruleset) {
  return { ...r, services: new Map(), owners: new Map() };
}

describe('changeToCommands', () => {
  it('serializes a whole ruleset as libnftables JSON', () => {
    const desired = desiredRuleset(scenarioInput(loadScenario('sctp')));
    expect(rulesetToCommands(desired)).toEqual({
      nftables: [
        { add: { table: { family: 'inet', name: 'slipstream' } } },
        { add: { flowtable: { ...T, name: 'ft', hook: 'ingress', prio: 0, dev: ['eth0'] } } },
        {
          add: {
            map: { ...T, name: 'svc4', type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'verdict' },
          },
        },
        {
          add: {
            map: { ...T, name: 'svc6', type: ['ipv6_addr', 'inet_proto', 'inet_service'], map: 'verdict' },
          },
        },
        { add: { chain: { ...T, name: 'threshold-20' } } },
        {
          add: {
            chain: { ...T, name: 'forward', type: 'filter', hook: 'forward', prio: 10, policy: 'accept' },
          },
        },
        {
          add: {
            element: {
              ...T,
              name: 'svc4',
              elem: [[{ concat: ['10.96.1.1', 'tcp', 5432] }, { jump: { target: 'threshold-20' } }]],
            },
          },
        },
        {
          add: {
            rule: {
              ...T,
              chain: 'threshold-20',
              expr: [
                { match: { op: '>', left: { ct: { key: 'packets' } }, right: 20 } },
                { counter: null },
                { flow: { op: 'add', flowtable: '@ft' } },
              ],
            },
          },
        },
        ...(['ip', 'ip6'] as const).flatMap((family) =>
          (['tcp', 'udp'] as const).map((protocol) => ({
            add: {
              rule: {
                ...T,
                chain: 'forward',
                expr: [
                  { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: protocol } },
                  {
                    vmap: {
                      key: {
                        concat: [
                          { ct: { key: `${family} daddr`, dir: 'original' } },
                          { ct: { key: 'protocol' } },
                          { ct: { key: 'proto-dst', dir: 'original' } },
                        ],
                      },
                      data: family === 'ip' ? '@svc4' : '@svc6',
                    },
                  },
                ],
              },
            },
          })),
        ),
      ],
    });
  });

  it('serializes deletes by key, and degraded threshold rules without flow add', () => {
    const input = scenarioInput(loadScenario('thresholds-shared'), false);
    const before = desiredRuleset(input);
    const after = desiredRuleset({ ...input, services: [...input.services].slice(1) });
    expect(changeToCommands(diff(before, after))).toEqual({
      nftables: [
        {
          delete: {
            element: { ...T, name: 'svc4', elem: [{ concat: ['10.96.2.1', 'tcp', 5432] }] },
          },
        },
      ],
    });
    expect(ruleExpr({ kind: 'threshold', threshold: 7, offload: false }, null)).toEqual([
      { match: { op: '>', left: { ct: { key: 'packets' } }, right: 7 } },
      { counter: null },
    ]);
  });

  it('puts nothing from annotations into the commands', () => {
    const text = JSON.stringify(
      rulesetToCommands(desiredRuleset(scenarioInput(loadScenario('invalid-hints')))),
    );
    expect(text).not.toContain('drop table');
    expect(text).not.toContain('9999');
    expect(text).not.toContain('webhook says so');
    const ip = JSON.stringify(
      rulesetToCommands(desiredRuleset(scenarioInput(loadScenario('invalid-clusterip')))),
    );
    expect(ip).not.toContain('flush');
    expect(ip).not.toContain('%');
  });
});

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
    expect(r.flowtable).toEqual({ name: 'ft', devices: ['eth0'] });
    expect(r.chains.get('threshold-20')?.rules).toEqual([
      { kind: 'threshold', threshold: 20, offload: true },
    ]);
    expect(r.thresholds).toEqual([20]);
    expect(parseFlowtable(listing)).toEqual(['eth0']);
  });

  it('reports what it does not recognize', () => {
    const r = parseTable({
      nftables: [
        { table: { family: 'inet', name: 'slipstream' } },
        { set: { ...T, name: 'intruders', type: 'ipv4_addr' } },
        { map: { ...T, name: 'svc4', type: 'ipv4_addr', map: 'verdict' } },
        { flowtable: { ...T, name: 'ft', hook: 'ingress', prio: -100 } },
        { chain: { ...T, name: 'forward', type: 'filter', hook: 'forward', prio: 10, policy: 'accept' } },
        { rule: { ...T, chain: 'forward', expr: [{ accept: null }] } },
        { table: { family: 'ip', name: 'other' } },
        { chain: { family: 'ip', table: 'other', name: 'x' } },
      ],
    })!;
    expect(r.foreign).toEqual(['set intruders', 'map svc4', 'flowtable ft']);
    expect(r.chains.get('forward')?.rules).toEqual([{ kind: 'foreign', text: '[{"accept":null}]' }]);
    expect(r.chains.has('x')).toBe(false);
  });

  it('recognizes exactly the rules it writes', () => {
    for (const rule of [
      { kind: 'dispatch', family: 'ip6', protocol: 'udp' },
      { kind: 'threshold', threshold: 0, offload: false },
      { kind: 'threshold', threshold: 1_000_000, offload: true },
    ] as const) {
      expect(parseRule(ruleExpr(rule, 'ft'), 'ft')).toEqual(rule);
    }
    const dispatch = ruleExpr({ kind: 'dispatch', family: 'ip', protocol: 'tcp' }, null) as {
      vmap: { data: string };
    }[];
    dispatch[1]!.vmap.data = '@svc6';
    expect(parseRule(dispatch, null).kind).toBe('foreign');
    expect(parseRule(ruleExpr({ kind: 'threshold', threshold: 5, offload: true }, 'ft'), null).kind).toBe(
      'foreign',
    );
  });
});

describe('formatRuleset', () => {
  it('renders nft text', () => {
    const text = formatRuleset(desiredRuleset(scenarioInput(loadScenario('sctp'))));
    expect(text).toBe(
      [
        'table inet slipstream {',
        '\tflowtable ft {',
        '\t\thook ingress priority filter',
        '\t\tdevices = { eth0 }',
        '\t}',
        '',
        '\tmap svc4 {',
        '\t\ttype ipv4_addr . inet_proto . inet_service : verdict',
        '\t\telements = { 10.96.1.1 . tcp . 5432 : jump threshold-20 }',
        '\t}',
        '',
        '\tmap svc6 {',
        '\t\ttype ipv6_addr . inet_proto . inet_service : verdict',
        '\t}',
        '',
        '\tchain forward {',
        '\t\ttype filter hook forward priority filter + 10; policy accept;',
        '\t\tmeta l4proto tcp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4',
        '\t\tmeta l4proto udp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4',
        '\t\tmeta l4proto tcp ct original ip6 daddr . ct protocol . ct original proto-dst vmap @svc6',
        '\t\tmeta l4proto udp ct original ip6 daddr . ct protocol . ct original proto-dst vmap @svc6',
        '\t}',
        '',
        '\tchain threshold-20 {',
        '\t\tct packets > 20 counter flow add @ft',
        '\t}',
        '}',
      ].join('\n'),
    );
  });
});

// --- Round trip through the real kernel, in a private network namespace --------------------

describe.skipIf(!canUseNetns())('round trip through nft in a private network namespace', () => {
  const ns = `slipstream-nftjson-${randomBytes(4).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'slipstream-nftjson-'));
  const nft = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args]).toString();
  const load = (commands: object) => {
    const file = join(dir, 'commands.json');
    writeFileSync(file, JSON.stringify(commands));
    nft('-j', '-f', file);
  };
  const list = () => parseTable(JSON.parse(nft('-j', 'list', 'table', 'inet', 'slipstream')));

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
    rmSync(dir, { recursive: true, force: true });
  });

  it.each(scenarioNames())('%s: serialize, load, list, parse gives the same ruleset', (name) => {
    // This kernel has no flowtables: the degraded ruleset is what can be loaded here.
    const desired = desiredRuleset(scenarioInput(loadScenario(name), false));
    nft('flush', 'ruleset');
    load(rulesetToCommands(desired));
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
      load(changeToCommands(diff(current, step)));
      const back = list();
      expect(kernelView(back!)).toEqual(kernelView(step));
      current = step;
    }
  });

  it('rebuilds a table holding a foreign set in one transaction', () => {
    const desired = desiredRuleset(scenarioInput(loadScenario('dual-stack'), false));
    nft('flush', 'ruleset');
    load(rulesetToCommands(desired));
    nft('add', 'set', 'inet', 'slipstream', 'intruders', '{ type ipv4_addr; }');
    const back = list()!;
    expect(back.foreign).toEqual(['set intruders']);
    load(changeToCommands(diff(back, desired)));
    expect(kernelView(list()!)).toEqual(kernelView(desired));
  });
});

describe('changeToText (large element batches)', () => {
  const degraded = (name: string) => desiredRuleset(scenarioInput(loadScenario(name), false));

  it('renders a whole degraded ruleset as one nft text buffer', () => {
    const text = changeToText(diff(null, degraded('dual-stack')));
    expect(text?.split('\n')).toEqual([
      'add table inet slipstream',
      'add map inet slipstream svc4 { type ipv4_addr . inet_proto . inet_service : verdict; }',
      'add map inet slipstream svc6 { type ipv6_addr . inet_proto . inet_service : verdict; }',
      'add chain inet slipstream threshold-20',
      'add chain inet slipstream forward { type filter hook forward priority 10; policy accept; }',
      'add element inet slipstream svc4 { 10.96.0.10 . udp . 443 : jump threshold-20, 10.96.0.10 . tcp . 5432 : jump threshold-20 }',
      'add element inet slipstream svc6 { fd00:10:96::a . udp . 443 : jump threshold-20, fd00:10:96::a . tcp . 5432 : jump threshold-20 }',
      'add rule inet slipstream threshold-20 ct packets > 20 counter',
      'add rule inet slipstream forward meta l4proto tcp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4',
      'add rule inet slipstream forward meta l4proto udp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4',
      'add rule inet slipstream forward meta l4proto tcp ct original ip6 daddr . ct protocol . ct original proto-dst vmap @svc6',
      'add rule inet slipstream forward meta l4proto udp ct original ip6 daddr . ct protocol . ct original proto-dst vmap @svc6',
      '',
    ]);
  });

  it('refuses (null: JSON is used) any value that is not in its strict form', () => {
    const change = diff(null, degraded('dual-stack'));
    const withElement = (patch: Record<string, unknown>) => ({
      ...change,
      ops: change.ops.map((op) =>
        op.op === 'add-elements' && op.family === 'ip'
          ? { ...op, elements: op.elements.map((e, i) => (i === 0 ? { ...e, ...patch } : e)) }
          : op,
      ),
    });
    expect(changeToText(change)).not.toBeNull();
    for (const patch of [
      { address: '10.0.0.1 } ; flush ruleset ; add element inet slipstream svc4 { 10.0.0.2' },
      { address: '10.0.0.1;' },
      { address: 'fd00::1' }, // an IPv6 address in the IPv4 map
      { family: 'ip6' },
      { port: 70000 },
      { port: 80.5 },
      { port: '80' },
      { protocol: -1 },
      { threshold: null },
      { threshold: 1.5 },
    ]) {
      expect(changeToText(withElement(patch) as typeof change), JSON.stringify(patch)).toBeNull();
    }
    const badChain = {
      ...change,
      ops: [...change.ops, { op: 'delete-chain' as const, chain: 'x; flush ruleset' }],
    };
    expect(changeToText(badChain)).toBeNull();
    // Flowtables and `flow add` (not verifiable on a kernel without flowtables) stay JSON.
    expect(changeToText(diff(null, desiredRuleset(scenarioInput(loadScenario('dual-stack')))))).toBeNull();
  });

  it('is used by changeToInput only for large element batches', () => {
    const small = diff(null, degraded('dual-stack'));
    expect(changeToInput(small)).toEqual(changeToCommands(small));
    const large = { ...small, summary: { ...small.summary, elementsAdded: 5000 } };
    expect(typeof changeToInput(large)).toBe('string');
    const flowtable = diff(null, desiredRuleset(scenarioInput(loadScenario('dual-stack'))));
    const largeFlowtable = { ...flowtable, summary: { ...flowtable.summary, elementsAdded: 5000 } };
    expect(changeToInput(largeFlowtable)).toEqual(changeToCommands(flowtable));
  });
});
