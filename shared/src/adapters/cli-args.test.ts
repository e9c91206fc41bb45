import { describe, expect, it } from 'vitest';
import { MAX_TIMER_MS, parseDuration, parseHostPort, UsageError } from './cli-args.ts';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['1h30m', 5_400_000],
    ['90d', 90 * 86_400_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration('--x', text)).toBe(ms);
  });

  it.each(['', '5', '10x', '-1s', '5 m', 'ms', 'h', '1e3ms', '0x10s', 'Infinity', '1.5'])(
    '%j is refused, naming the flag',
    (text) => {
      expect(() => parseDuration('--resync-period', text)).toThrow(UsageError);
      expect(() => parseDuration('--resync-period', text)).toThrow(/--resync-period/);
    },
  );

  it('takes 0 only where a period can be turned off', () => {
    expect(() => parseDuration('--x', '0s')).toThrow(/positive/);
    expect(() => parseDuration('--x', '0')).toThrow(UsageError);
    expect(parseDuration('--x', '0', { allowZero: true })).toBe(0);
    expect(parseDuration('--x', '0s', { allowZero: true })).toBe(0);
  });

  it('refuses what a timer cannot wait for, when asked to', () => {
    expect(parseDuration('--x', '596h', { maxMs: MAX_TIMER_MS })).toBe(596 * 3_600_000);
    expect(() => parseDuration('--x', '1000h', { maxMs: MAX_TIMER_MS })).toThrow(/too long/);
    expect(parseDuration('--x', '1000h')).toBe(1000 * 3_600_000);
  });
});

describe('parseHostPort', () => {
  it.each([
    ['0.0.0.0:8443', { host: '0.0.0.0', port: 8443 }],
    ['127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
    ['[::]:9443', { host: '::', port: 9443 }],
    [':8443', { host: '0.0.0.0', port: 8443 }],
    ['webhook.local:443', { host: 'webhook.local', port: 443 }],
  ])('%s', (value, expected) => {
    expect(parseHostPort('--listen', value)).toEqual(expected);
  });

  it.each(['8443', 'host:', 'host:70000', '[::1:80', 'a:b:c'])('refuses %s, naming the flag', (value) => {
    expect(() => parseHostPort('--listen', value)).toThrow(/--listen/);
  });
});
