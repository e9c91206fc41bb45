import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput, scenarioNames } from '../../../test/fixtures/services/load.ts';
import type { Change } from './change.ts';
import { desiredRuleset } from './desired-ruleset.ts';
import { diff } from './diff.ts';
import { changeText, opText, rulesetText, UnwritableError } from './nft-text.ts';
import { emptyRuleset } from './ruleset.ts';

const golden = (name: string) =>
  readFileSync(new URL(`../../../test/fixtures/nft/${name}.nft`, import.meta.url), 'utf8');

describe('rulesetText (golden text: what the kernel is sent to create the table)', () => {
  it.each(scenarioNames())('%s', (name) => {
    expect(rulesetText(desiredRuleset(scenarioInput(loadScenario(name))))).toBe(golden(name));
    expect(rulesetText(desiredRuleset(scenarioInput(loadScenario(name), false)))).toBe(
      golden(`${name}.degraded`),
    );
  });

  it('puts nothing from annotations into the text', () => {
    const text = rulesetText(desiredRuleset(scenarioInput(loadScenario('invalid-hints'))));
    expect(text).not.toContain('drop table');
    expect(text).not.toContain('9999');
    expect(text).not.toContain('webhook says so');
    const ip = rulesetText(desiredRuleset(scenarioInput(loadScenario('invalid-clusterip'))));
    expect(ip).not.toContain('flush');
    expect(ip).not.toContain('%');
  });
});

describe('changeText', () => {
  const dual = desiredRuleset(scenarioInput(loadScenario('dual-stack')));

  it('removes one device in place, and carries the counter flag on every flowtable add', () => {
    const fewer = { ...dual, flowtable: { ...dual.flowtable!, devices: ['eth0', 'veth9'] } };
    expect(changeText(diff(dual, fewer)).split('\n')).toEqual([
      'delete flowtable inet slipstream ft { devices = { "eth1" }; }',
      'add flowtable inet slipstream ft { hook ingress priority 0; devices = { "veth9" }; counter; }',
      '',
    ]);
  });

  it('re-creates the flowtable (eviction) in one buffer: flush its users, delete, add, rules again', () => {
    expect(changeText(diff(dual, structuredClone(dual), { recreateFlowtable: true })).split('\n')).toEqual([
      'flush chain inet slipstream threshold-20',
      'delete flowtable inet slipstream ft',
      'add flowtable inet slipstream ft { hook ingress priority 0; devices = { "eth0", "eth1" }; counter; }',
      'add rule inet slipstream threshold-20 ct packets > 20 counter flow add @ft',
      '',
    ]);
  });

  it('turns the counter flag on in place when an adopted flowtable lacks it', () => {
    const without = { ...dual, flowtable: { ...dual.flowtable!, counter: false } };
    expect(changeText(diff(without, dual))).toBe(
      'add flowtable inet slipstream ft { hook ingress priority 0; counter; }\n',
    );
  });

  it('deletes foreign objects by handle: their names never reach the text', () => {
    const current = {
      ...dual,
      foreign: [{ kind: 'set', name: 'x"; flush ruleset', handle: 12, why: 'not a Slipstream set' }],
    };
    const text = changeText(diff(current, dual));
    expect(text).toBe('delete set inet slipstream handle 12\n');
    expect(text).not.toContain('flush ruleset');
  });

  it('replaces a map of its name but another definition, with its dependants, in one buffer', () => {
    const current = {
      ...dual,
      maps: ['ip6' as const, 'np' as const],
      elements: new Map([...dual.elements].filter(([, e]) => e.family === 'ip6')),
      foreign: [{ kind: 'map', name: 'svc4', handle: 7, why: 'size 3' }],
    };
    expect(changeText(diff(current, dual)).split('\n')).toEqual([
      'flush chain inet slipstream forward',
      'flush map inet slipstream svc4',
      'delete map inet slipstream svc4',
      'add map inet slipstream svc4 { type ipv4_addr . inet_proto . inet_service : verdict; }',
      'add element inet slipstream svc4 { 10.96.0.10 . udp . 443 : jump threshold-20, 10.96.0.10 . tcp . 5432 : jump threshold-20 }',
      'add rule inet slipstream forward meta l4proto tcp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4',
      'add rule inet slipstream forward meta l4proto udp ct original ip daddr . ct protocol . ct original proto-dst vmap @svc4',
      'add rule inet slipstream forward meta l4proto tcp ct original ip6 daddr . ct protocol . ct original proto-dst vmap @svc6',
      'add rule inet slipstream forward meta l4proto udp ct original ip6 daddr . ct protocol . ct original proto-dst vmap @svc6',
      'add rule inet slipstream forward meta l4proto tcp ct original ip daddr @node4 ct protocol . ct original proto-dst vmap @nodeports',
      'add rule inet slipstream forward meta l4proto udp ct original ip daddr @node4 ct protocol . ct original proto-dst vmap @nodeports',
      'add rule inet slipstream forward meta l4proto tcp ct original ip6 daddr @node6 ct protocol . ct original proto-dst vmap @nodeports',
      'add rule inet slipstream forward meta l4proto udp ct original ip6 daddr @node6 ct protocol . ct original proto-dst vmap @nodeports',
      '',
    ]);
  });

  it('writes nothing for an empty change', () => {
    expect(changeText(diff(dual, dual))).toBe('');
    expect(rulesetText(emptyRuleset(null))).toContain('add table inet slipstream');
  });

  it('refuses any value that is not in its strict form, writing nothing', () => {
    const change = diff(null, desiredRuleset(scenarioInput(loadScenario('dual-stack'), false)));
    const withElement = (patch: Record<string, unknown>): Change => ({
      ...change,
      ops: change.ops.map((op) =>
        op.op === 'add-elements' && op.family === 'ip'
          ? { ...op, elements: op.elements.map((e, i) => (i === 0 ? { ...e, ...patch } : e)) }
          : op,
      ),
    });
    expect(() => changeText(change)).not.toThrow();
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
      expect(() => changeText(withElement(patch)), JSON.stringify(patch)).toThrow(UnwritableError);
    }
    expect(() => opText({ op: 'delete-chain', chain: 'x; flush ruleset' })).toThrow(UnwritableError);
    expect(() =>
      opText({ op: 'add-flowtable', name: 'ft', devices: ['eth0"; flush ruleset'], counter: true }),
    ).toThrow(UnwritableError);
    expect(() =>
      opText({
        op: 'delete-object',
        object: { kind: 'table; flush ruleset', name: 'x', handle: 1, why: '' },
      }),
    ).toThrow(UnwritableError);
  });
});
