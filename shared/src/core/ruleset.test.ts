import { describe, expect, it } from 'vitest';
import { loadScenario, scenarioInput } from '../../../test/fixtures/services/load.ts';
import { desiredRuleset } from './desired-ruleset.ts';
import { elementHit, elementKey, parseThresholdChainName, validDeviceName } from './ruleset.ts';

describe('elementHit: the element a connection hits', () => {
  const r = desiredRuleset(scenarioInput(loadScenario('vips')));
  const hit = (address: string, protocol: number, port: number) => {
    const e = elementHit(r, address, protocol, port);
    return e ? elementKey(e) : undefined;
  };

  it("a Service address first, then the nodePort on one of this node's addresses, else none", () => {
    expect(hit('10.96.40.1', 6, 443)).toBe('ip 10.96.40.1 6 443');
    expect(hit('203.0.113.40', 6, 443)).toBe('ip 203.0.113.40 6 443');
    expect(hit('192.168.50.10', 6, 30443)).toBe('np  6 30443');
    expect(hit('fd00:50::10', 17, 30514)).toBe('np  17 30514');
    // The nodePort on an address that is not this node's: kube-proxy does not answer there.
    expect(hit('192.168.50.99', 6, 30443)).toBeUndefined();
    expect(hit('10.96.40.1', 6, 30443)).toBeUndefined();
  });
});

describe('names', () => {
  it('parses only canonical threshold chain names', () => {
    expect(parseThresholdChainName('threshold-20')).toBe(20);
    expect(parseThresholdChainName('threshold-0')).toBe(0);
    expect(parseThresholdChainName('threshold-020')).toBeNull();
    expect(parseThresholdChainName('threshold-x')).toBeNull();
  });

  it('validates device names', () => {
    expect(validDeviceName('eth0')).toBe(true);
    expect(validDeviceName('veth1234567890a')).toBe(true);
    expect(validDeviceName('veth1234567890ab')).toBe(false);
    expect(validDeviceName('a:b')).toBe(false);
    expect(validDeviceName('..')).toBe(false);
  });
});
