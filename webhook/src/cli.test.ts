import { UsageError } from '@slipstream/shared/adapters/cli-args';
import { describe, expect, it } from 'vitest';
import { parseWebhookArgs } from './cli.ts';

describe('command line', () => {
  it('reads every option', () => {
    expect(
      parseWebhookArgs([
        '--listen',
        '127.0.0.1:9443',
        '--tls-cert',
        'c.pem',
        '--tls-key',
        'k.pem',
        '--policy',
        'p.yaml',
      ]),
    ).toEqual({
      host: '127.0.0.1',
      port: 9443,
      tlsCert: 'c.pem',
      tlsKey: 'k.pem',
      policy: 'p.yaml',
    });
    expect(parseWebhookArgs([])).toEqual({ host: '0.0.0.0', port: 8443 });
    expect(parseWebhookArgs(['--help'])).toBe('help');
  });

  it('reads the --tls-secret bootstrap options', () => {
    const base = [
      '--tls-secret',
      'slipstream-system/slipstream-webhook-tls',
      '--webhook-config',
      'slipstream',
    ];
    expect(parseWebhookArgs(base)).toEqual({
      host: '0.0.0.0',
      port: 8443,
      tlsSecret: { namespace: 'slipstream-system', name: 'slipstream-webhook-tls' },
      webhookConfig: 'slipstream',
    });
    expect(
      parseWebhookArgs([
        ...base,
        '--kubeconfig',
        'kc.yaml',
        '--service-name',
        'hooks',
        '--cert-validity',
        '10m',
        '--cert-renew-before',
        '5m',
        '--ca-validity',
        '2h',
        '--ca-renew-before',
        '1h',
        '--ca-overlap',
        '10m',
        '--tls-check-interval',
        '30s',
      ]),
    ).toMatchObject({
      kubeconfig: 'kc.yaml',
      serviceName: 'hooks',
      durations: {
        certValidityMs: 600_000,
        certRenewBeforeMs: 300_000,
        caValidityMs: 7_200_000,
        caRenewBeforeMs: 3_600_000,
        caOverlapMs: 600_000,
      },
      tlsCheckIntervalMs: 30_000,
    });
  });

  it.each([
    [['--tls-secret', 'ns/name'], /needs --webhook-config/],
    [['--webhook-config', 'slipstream'], /goes with --tls-secret/],
    [
      ['--kubeconfig', 'kc', '--cert-validity', '1d'],
      /--kubeconfig, --cert-validity: only with --tls-secret/,
    ],
    [['--tls-secret', 'name-only', '--webhook-config', 'w'], /is not NAMESPACE\/NAME/],
    [['--tls-secret', 'ns/n', '--webhook-config', 'w', '--tls-cert', 'c', '--tls-key', 'k'], /one place/],
    [
      ['--tls-secret', 'ns/n', '--webhook-config', 'w', '--service-name', 'Bad_Name'],
      /not a valid Service name/,
    ],
    [['--tls-secret', 'ns/n', '--webhook-config', 'w', '--cert-validity', '90'], /not a duration/],
    [
      ['--tls-secret', 'ns/n', '--webhook-config', 'w', '--cert-renew-before', '100d'],
      /shorter than its validity/,
    ],
    [['--tls-secret', 'ns/n', '--webhook-config', 'w', '--tls-check-interval', '20d'], /two check intervals/],
  ])('refuses %j', (argv, message) => {
    expect(() => parseWebhookArgs(argv)).toThrow(UsageError);
    expect(() => parseWebhookArgs(argv)).toThrow(message);
  });

  it('reads --metrics-listen as its own plain-HTTP address, apart from the review port', () => {
    expect(parseWebhookArgs(['--listen', '0.0.0.0:8443', '--metrics-listen', '0.0.0.0:9470'])).toEqual({
      host: '0.0.0.0',
      port: 8443,
      metricsListen: { host: '0.0.0.0', port: 9470 },
    });
    expect(() => parseWebhookArgs(['--metrics-listen', '9470'])).toThrow(
      /--metrics-listen "9470" is not HOST:PORT/,
    );
  });

  it('refuses a certificate without its key, and unknown options', () => {
    expect(() => parseWebhookArgs(['--tls-cert', 'c.pem'])).toThrow(/go together/);
    expect(() => parseWebhookArgs(['--port', '1'])).toThrow(UsageError);
    expect(() => parseWebhookArgs(['stray'])).toThrow(UsageError);
  });
});

describe('client certificates', () => {
  it('reads --client-ca and repeated --client-name', () => {
    expect(
      parseWebhookArgs([
        '--client-ca',
        'ca.pem',
        '--client-name',
        'kube-apiserver',
        '--client-name',
        'apiserver-2',
      ]),
    ).toEqual({
      host: '0.0.0.0',
      port: 8443,
      clientCa: 'ca.pem',
      clientNames: ['kube-apiserver', 'apiserver-2'],
    });
  });

  it('refuses --client-name without --client-ca, and names that are not printable', () => {
    expect(() => parseWebhookArgs(['--client-name', 'kube-apiserver'])).toThrow(/goes with --client-ca/);
    expect(() => parseWebhookArgs(['--client-ca', 'ca.pem', '--client-name', 'a\nb'])).toThrow(
      /not a certificate name/,
    );
  });
});
