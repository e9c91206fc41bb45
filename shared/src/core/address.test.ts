import { describe, expect, it } from 'vitest';
import { addressBytes, canonicalAddress, isIPv4, isIPv6 } from './address.ts';

describe('canonicalAddress', () => {
  it.each([
    ['10.96.0.1', 'ip', '10.96.0.1'],
    ['FD00:0:0:0:0:0:0:A', 'ip6', 'fd00::a'],
    ['fd00:0000:0000:0000:0000:0000:0000:000a', 'ip6', 'fd00::a'],
    ['2001:db8:0:0:1:0:0:1', 'ip6', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:0:0:0:1', 'ip6', '2001:db8:0:1::1'],
    ['2001:0:0:1:0:0:0:0', 'ip6', '2001:0:0:1::'],
    ['::', 'ip6', '::'],
    ['::1', 'ip6', '::1'],
    ['::ffff:10.1.2.3', 'ip6', '::ffff:10.1.2.3'],
    ['::FFFF:0A01:0203', 'ip6', '::ffff:10.1.2.3'],
    ['2001:db8:1:2:3:4:5:6', 'ip6', '2001:db8:1:2:3:4:5:6'],
    ['2001:db8::0:1', 'ip6', '2001:db8::1'],
    ['1:0:2:3:4:5:6:7', 'ip6', '1:0:2:3:4:5:6:7'],
  ])('%s → %s %s', (raw, family, address) => {
    expect(canonicalAddress(raw)).toEqual({ ok: true, family, address });
  });

  it.each([
    '10.96.0.300',
    '010.1.1.1',
    ' 10.0.0.1',
    'fe80::1%eth0',
    '',
    'None',
    '1.2.3.4/32',
    '::ffff:1.2.3',
  ])('rejects %j', (raw) => {
    expect(canonicalAddress(raw).ok).toBe(false);
  });
});

describe('isIPv4 / isIPv6', () => {
  it('accepts only strict forms', () => {
    expect(isIPv4('10.96.0.1')).toBe(true);
    expect(isIPv4('10.96.0.01')).toBe(false);
    expect(isIPv4('256.1.1.1')).toBe(false);
    expect(isIPv6('fd00::a')).toBe(true);
    expect(isIPv6('fd00::a::1')).toBe(false);
    expect(isIPv6('fe80::1%eth0')).toBe(false);
  });
});

describe('addressBytes', () => {
  const hex = (b: Uint8Array | null) => (b ? Buffer.from(b).toString('hex') : null);
  it('gives network byte order, 4 or 16 bytes', () => {
    expect(hex(addressBytes('ip', '10.96.0.1'))).toBe('0a600001');
    expect(hex(addressBytes('ip6', '2001:db8::1'))).toBe('20010db8000000000000000000000001');
    expect(hex(addressBytes('ip6', '::'))).toBe('0'.repeat(32));
    expect(hex(addressBytes('ip6', 'fd00::'))).toBe(`fd00${'0'.repeat(28)}`);
    expect(hex(addressBytes('ip6', '::ffff:192.0.2.9'))).toBe('00000000000000000000ffffc0000209');
    expect(hex(addressBytes('ip6', '1:2:3:4:5:6:7:8'))).toBe('00010002000300040005000600070008');
  });
  it('refuses what is not an address of the family', () => {
    expect(addressBytes('ip', '10.0.0')).toBeNull();
    expect(addressBytes('ip', '2001:db8::1')).toBeNull();
    expect(addressBytes('ip6', '1::2::3')).toBeNull();
    expect(addressBytes('ip6', '10.0.0.1')).toBeNull();
  });
});
