// The daemon's command line: pure parsing, no I/O.

import { MAX_TIMER_MS, UsageError } from '@slipstream/shared/adapters/cli-args';
import { describe, expect, it } from 'vitest';
import { type DaemonOptions, EXAMPLES_DIR, parseDaemonArgs } from './cli.ts';

const NO_CLUSTER = {};

function parse(argv: string[], env: Record<string, string | undefined> = NO_CLUSTER): DaemonOptions {
  const options = parseDaemonArgs(argv, env);
  if (options === 'help') throw new Error('unexpected help');
  return options;
}

function usageError(argv: string[], env: Record<string, string | undefined> = NO_CLUSTER): UsageError {
  try {
    parseDaemonArgs(argv, env);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return error as UsageError;
  }
  throw new Error(`parseDaemonArgs(${JSON.stringify(argv)}) did not throw`);
}

describe('parseDaemonArgs: defaults and where Services come from', () => {
  it('reads the shipped examples when not in a cluster', () => {
    expect(parse([])).toEqual({
      source: { kind: 'files', dir: EXAMPLES_DIR },
      once: false,
      cleanup: false,
      resyncPeriodMs: 3_600_000,
      minSyncPeriodMs: 1000,
      conntrackSamplePeriodMs: 30_000,
      devices: { include: [], exclude: [] },
    });
    expect(EXAMPLES_DIR).toMatch(/\/deploy\/examples$/);
  });

  it('goes in-cluster when KUBERNETES_SERVICE_HOST is set (and only then)', () => {
    expect(parse([], { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).source).toEqual({ kind: 'kubernetes' });
    expect(parse([], { KUBERNETES_SERVICE_HOST: '' }).source).toEqual({ kind: 'files', dir: EXAMPLES_DIR });
  });

  it('an explicit source wins over the cluster environment', () => {
    const env = { KUBERNETES_SERVICE_HOST: '10.96.0.1' };
    expect(parse(['--services', '/etc/slipstream/services'], env).source).toEqual({
      kind: 'files',
      dir: '/etc/slipstream/services',
    });
    expect(parse(['--kubeconfig', '/root/.kube/config'], env).source).toEqual({
      kind: 'kubernetes',
      kubeconfig: '/root/.kube/config',
    });
  });

  it('--services and --kubeconfig exclude each other', () => {
    expect(usageError(['--services', 'dir', '--kubeconfig', 'kc']).message).toMatch(/exclude each other/);
    expect(usageError(['--kubeconfig=kc', '--services=dir']).message).toMatch(/exclude each other/);
  });

  it('refuses an empty --services or --kubeconfig (an unset variable must not mean cwd or in-cluster)', () => {
    expect(usageError(['--services', '']).message).toMatch(/--services/);
    expect(usageError(['--kubeconfig=']).message).toMatch(/--kubeconfig/);
  });

  it('reads the boolean and string flags', () => {
    const options = parse(['--once', '--cleanup', '--policy', '/p.yaml', '--netns', 'node1']);
    expect(options).toMatchObject({ once: true, cleanup: true, policy: '/p.yaml', netns: 'node1' });
    expect(parse([])).not.toHaveProperty('netns');
    expect(parse([])).not.toHaveProperty('policy');
    expect(parse([])).not.toHaveProperty('healthListen');
  });

  it('reads the flowtable device patterns (repeatable, comma lists; "" is none) and refuses bad ones', () => {
    const { devices } = parse([
      '--flowtable-include',
      'eth*,/^cali/',
      '--flowtable-include',
      'bond0',
      '--flowtable-exclude',
      '',
    ]);
    expect(devices.include.map((p) => p.text)).toEqual(['eth*', '/^cali/', 'bond0']);
    expect(devices.exclude).toEqual([]);
    expect(usageError(['--flowtable-exclude', 'kube-ipvs0,,x']).message).toBe(
      '--flowtable-exclude "kube-ipvs0,,x": entry 2 of 3 is empty',
    );
    expect(usageError(['--flowtable-include', '/(/']).message).toMatch(
      /^--flowtable-include "\/\(\/": entry 1 of 1 \(\/\(\/\) is not a regular expression/,
    );
  });

  it('--help and -h ask for help', () => {
    expect(parseDaemonArgs(['--help'], NO_CLUSTER)).toBe('help');
    expect(parseDaemonArgs(['-h'], NO_CLUSTER)).toBe('help');
  });
});

describe('durations', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['0', 0],
    ['0s', 0],
  ])('%s is %d ms', (text, ms) => {
    expect(parse(['--resync-period', text]).resyncPeriodMs).toBe(ms);
    expect(parse(['--min-sync-period', text]).minSyncPeriodMs).toBe(ms);
  });

  it.each(['', '5', '10x', '-1s', '5 m', 'ms', '1e3ms', '0x10s', 'Infinity'])('%j is refused', (text) => {
    expect(usageError(['--min-sync-period', text]).message).toContain('--min-sync-period');
  });

  it('refuses periods Node timers cannot wait for (they would fire after 1 ms instead)', () => {
    expect(parse(['--resync-period', '596h']).resyncPeriodMs).toBe(596 * 3_600_000);
    expect(parse(['--resync-period', `${MAX_TIMER_MS}ms`]).resyncPeriodMs).toBe(MAX_TIMER_MS);
    expect(usageError(['--resync-period', '1000h']).message).toMatch(/--resync-period .*too long/);
    expect(usageError(['--min-sync-period', `${MAX_TIMER_MS + 1}ms`]).message).toMatch(/too long/);
  });
});

describe('--netns', () => {
  it.each(['node1', 'slipstream-test-0a1b', 'ns_2.x', 'a', 'x'.repeat(64)])('accepts %j', (name) => {
    expect(parse(['--netns', name]).netns).toBe(name);
  });

  it.each([
    '',
    '.',
    '..',
    '../../proc/1/ns/net',
    '/run/netns/x',
    'a/b',
    'a b',
    '-n',
    '--all',
    'x;rm -rf /',
    '$(reboot)',
    'ns\n',
    'ns\u0000',
    'é',
    'x'.repeat(65),
  ])('refuses %j', (name) => {
    expect(usageError([`--netns=${name}`]).message).toContain('--netns');
  });
});

describe('--health-listen', () => {
  it.each([
    ['127.0.0.1:9469', { host: '127.0.0.1', port: 9469 }],
    [':9469', { host: '0.0.0.0', port: 9469 }],
    ['localhost:0', { host: 'localhost', port: 0 }],
    ['[::1]:9469', { host: '::1', port: 9469 }],
    ['[::]:65535', { host: '::', port: 65535 }],
  ])('%s', (text, expected) => {
    expect(parse(['--health-listen', text]).healthListen).toEqual(expected);
  });

  it.each([
    '9469',
    '127.0.0.1',
    '127.0.0.1:',
    '127.0.0.1:65536',
    '::1:9469',
    '[::1]',
    'host:port',
    'h:123456',
  ])('refuses %j', (text) => {
    expect(usageError(['--health-listen', text]).message).toContain('is not HOST:PORT');
  });
});

describe('--metrics-listen and --conntrack-sample-period', () => {
  it('takes a HOST:PORT of its own, apart from the health listener', () => {
    const options = parse(['--health-listen', '127.0.0.1:9469', '--metrics-listen', '10.0.0.5:9470']);
    expect(options.healthListen).toEqual({ host: '127.0.0.1', port: 9469 });
    expect(options.metricsListen).toEqual({ host: '10.0.0.5', port: 9470 });
    expect(parse([]).metricsListen).toBeUndefined();
  });

  it('refuses a bad address, naming the flag', () => {
    expect(usageError(['--metrics-listen', '10.0.0.5']).message).toMatch(
      /^--metrics-listen .* is not HOST:PORT/,
    );
  });

  it('takes a sampling period, 0 turning it off', () => {
    expect(parse(['--conntrack-sample-period', '5s']).conntrackSamplePeriodMs).toBe(5000);
    expect(parse(['--conntrack-sample-period', '0']).conntrackSamplePeriodMs).toBe(0);
    expect(usageError(['--conntrack-sample-period', 'often']).message).toContain('--conntrack-sample-period');
  });
});

describe('unknown and malformed arguments are usage errors', () => {
  it.each([
    [['--frobnicate']],
    [['--once', 'extra-positional']],
    [['-x']],
    [['--services']],
    [['--once=yes']],
    [['--resync-period']],
  ])('%j', (argv) => {
    usageError(argv);
  });
});
