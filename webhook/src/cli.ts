// `npm run webhook -- --listen HOST:PORT [--tls-cert F --tls-key F | --tls-secret NS/NAME --webhook-config NAME]
// [--policy F]`: parses the command line, starts the server with a watched policy (and, with
// --tls-secret, the TLS bootstrap), and shuts down cleanly on SIGTERM/SIGINT.

import type { Server } from 'node:http';
import { parseArgs } from 'node:util';
import { MAX_TIMER_MS, parseDuration, parseHostPort, UsageError } from '@slipstream/shared/adapters/cli-args';
import { createLogger, type Logger } from '@slipstream/shared/adapters/log';
import type { PolicyMetrics } from '@slipstream/shared/adapters/metrics';
import { watchPolicy } from '@slipstream/shared/adapters/policy-watch';
import type { Telemetry } from '@slipstream/shared/adapters/telemetry';
import {
  checkDurations,
  DEFAULT_CHECK_INTERVAL_MS,
  DEFAULT_DURATIONS,
  type TlsDurations,
} from './bootstrap-plan.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';

export const USAGE = `usage: npm run webhook -- [--listen HOST:PORT] [--policy FILE]
         [--tls-cert FILE --tls-key FILE | --tls-secret NAMESPACE/NAME --webhook-config NAME [--kubeconfig FILE]]

  --listen HOST:PORT   address to serve HTTPS on (default 0.0.0.0:8443; [::]:8443 for IPv6; port 0 picks one)
  --policy FILE        policy (YAML or JSON); default: the shipped default policy; reloaded when it changes
  --metrics-listen HOST:PORT  serve GET /metrics (Prometheus) over plain HTTP there (default: not served)

 Certificate, one of:
  --tls-cert FILE      PEM certificate (chain); reloaded when the file changes
  --tls-key FILE       PEM private key for --tls-cert
  --tls-secret NS/NAME keep a CA and serving certificate in this Secret (created when missing, rotated
                       before expiry, shared by every replica) and serve from it; /readyz is 503 until then
  --webhook-config NAME  MutatingWebhookConfiguration whose webhooks get the CA as caBundle (with --tls-secret)
                       neither: a self-signed certificate generated in memory

 With --tls-secret:
  --kubeconfig FILE    API server access (default: in-cluster inside a Pod, else $KUBECONFIG or ~/.kube/config)
  --service-name NAME  Service in front of the webhook, in the Secret's namespace (default slipstream-webhook):
                       the certificate names NAME.NS.svc and NAME.NS.svc.cluster.local
  --cert-validity D    serving certificate lifetime (default 90d)
  --cert-renew-before D  re-issue it when less than this is left (default 30d)
  --ca-validity D      CA lifetime (default 3650d)
  --ca-renew-before D  rotate the CA when less than this is left (default 365d)
  --ca-overlap D       each CA rotation step: new CA trusted before it signs, old one after (default 24h)
  --tls-check-interval D  re-read the Secret and the caBundle this often (default 1m)
                       durations: a number with ms, s, m, h or d, combinable (1h30m)

Tracing: OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP), OTEL_TRACES_EXPORTER=none, OTEL_SERVICE_NAME, ...
`;

export interface CliOptions {
  host: string;
  port: number;
  /** --metrics-listen: plain HTTP, GET /metrics only. */
  metricsListen?: { host: string; port: number };
  tlsCert?: string;
  tlsKey?: string;
  policy?: string;
  /** --tls-secret: bootstrap TLS through this Secret. */
  tlsSecret?: { namespace: string; name: string };
  webhookConfig?: string;
  kubeconfig?: string;
  serviceName?: string;
  /** Only the durations given on the command line. */
  durations?: Partial<TlsDurations>;
  tlsCheckIntervalMs?: number;
}

const DURATION_FLAGS = {
  'cert-validity': 'certValidityMs',
  'cert-renew-before': 'certRenewBeforeMs',
  'ca-validity': 'caValidityMs',
  'ca-renew-before': 'caRenewBeforeMs',
  'ca-overlap': 'caOverlapMs',
} as const satisfies Record<string, keyof TlsDurations>;

const SECRET_REF = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Returns the options, or `help` when the usage was asked for; throws UsageError for bad arguments. */
export function parseCli(argv: string[]): CliOptions | 'help' {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: 'string' },
        'metrics-listen': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        policy: { type: 'string' },
        'tls-secret': { type: 'string' },
        'webhook-config': { type: 'string' },
        kubeconfig: { type: 'string' },
        'service-name': { type: 'string' },
        'cert-validity': { type: 'string' },
        'cert-renew-before': { type: 'string' },
        'ca-validity': { type: 'string' },
        'ca-renew-before': { type: 'string' },
        'ca-overlap': { type: 'string' },
        'tls-check-interval': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const string = (name: string): string | undefined => {
    const value = values[name];
    return typeof value === 'string' ? value : undefined;
  };
  if (values.help) return 'help';
  const { host, port } = parseHostPort('--listen', string('listen') ?? '0.0.0.0:8443');
  const cert = string('tls-cert');
  const key = string('tls-key');
  const policy = string('policy');
  if ((cert === undefined) !== (key === undefined)) {
    throw new UsageError(
      '--tls-cert and --tls-key go together: give both, or neither for a self-signed certificate',
    );
  }
  const metrics = string('metrics-listen');
  const options: CliOptions = {
    host,
    port,
    ...(metrics !== undefined ? { metricsListen: parseHostPort('--metrics-listen', metrics) } : {}),
    ...(cert !== undefined ? { tlsCert: cert } : {}),
    ...(key !== undefined ? { tlsKey: key } : {}),
    ...(policy !== undefined ? { policy } : {}),
  };

  const secret = string('tls-secret');
  const webhookConfig = string('webhook-config');
  const bootstrapOnly = [
    'kubeconfig',
    'service-name',
    'tls-check-interval',
    ...Object.keys(DURATION_FLAGS),
  ].filter((name) => values[name] !== undefined);
  if (secret === undefined) {
    if (webhookConfig !== undefined) throw new UsageError('--webhook-config goes with --tls-secret');
    if (bootstrapOnly.length > 0) {
      throw new UsageError(`${bootstrapOnly.map((n) => `--${n}`).join(', ')}: only with --tls-secret`);
    }
    return options;
  }
  if (cert !== undefined) {
    throw new UsageError('--tls-secret or --tls-cert/--tls-key: the certificate comes from one place');
  }
  const ref = SECRET_REF.exec(secret);
  if (!ref) throw new UsageError(`--tls-secret ${JSON.stringify(secret)} is not NAMESPACE/NAME`);
  if (webhookConfig === undefined) {
    throw new UsageError(
      '--tls-secret needs --webhook-config NAME (the MutatingWebhookConfiguration to trust it)',
    );
  }
  if (!/^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$/.test(webhookConfig)) {
    throw new UsageError(`--webhook-config ${JSON.stringify(webhookConfig)} is not a valid name`);
  }
  const serviceName = string('service-name');
  if (serviceName !== undefined && !DNS_LABEL.test(serviceName)) {
    throw new UsageError(`--service-name ${JSON.stringify(serviceName)} is not a valid Service name`);
  }
  const durations: Partial<TlsDurations> = {};
  for (const [flag, field] of Object.entries(DURATION_FLAGS)) {
    const value = string(flag);
    if (value !== undefined) durations[field] = parseDuration(`--${flag}`, value);
  }
  const interval = string('tls-check-interval');
  const tlsCheckIntervalMs =
    interval === undefined
      ? undefined
      : parseDuration('--tls-check-interval', interval, { maxMs: MAX_TIMER_MS });
  try {
    checkDurations({ ...DEFAULT_DURATIONS, ...durations }, tlsCheckIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const kubeconfig = string('kubeconfig');
  return {
    ...options,
    tlsSecret: { namespace: ref[1]!, name: ref[3]! },
    webhookConfig,
    ...(kubeconfig !== undefined ? { kubeconfig } : {}),
    ...(serviceName !== undefined ? { serviceName } : {}),
    ...(Object.keys(durations).length > 0 ? { durations } : {}),
    ...(tlsCheckIntervalMs !== undefined ? { tlsCheckIntervalMs } : {}),
  };
}

export interface RunOptions {
  telemetry: Telemetry;
  log?: Logger;
}

/** Runs the webhook until SIGTERM or SIGINT; returns the process exit code. */
export async function runCli(
  argv: string[],
  { telemetry, log = createLogger() }: RunOptions,
): Promise<number> {
  let options: CliOptions | 'help';
  try {
    options = parseCli(argv);
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }

  let policyMetrics: PolicyMetrics | undefined;
  let policy: ReturnType<typeof watchPolicy>;
  try {
    policy = watchPolicy(options.policy, {
      onReload: (next, previous) => {
        policyMetrics?.reloaded(next.id);
        log.info('policy reloaded', { file: options.policy, policy: next.id, previous: previous.id });
      },
      onError: (error, kept) => {
        policyMetrics?.failed();
        log.error('policy file changed but does not load; keeping the last good policy', {
          file: options.policy,
          kept: kept.id,
          error: error.message,
        });
      },
    });
  } catch (error) {
    log.error('cannot start: the policy does not load', { error: (error as Error).message });
    await telemetry.shutdown();
    return 1;
  }

  // --tls-secret: the bootstrap hands its certificate to the server once it has one. client-node is
  // loaded only then, so the other modes start without it.
  let server: WebhookServer | undefined;
  let bootstrap: import('./bootstrap.ts').TlsBootstrap | undefined;
  if (options.tlsSecret && options.webhookConfig) {
    try {
      const { TlsBootstrap } = await import('./bootstrap.ts');
      const { loadKubeConfig } = await import('@slipstream/shared/adapters/kube');
      bootstrap = new TlsBootstrap({
        kubeConfig: loadKubeConfig(options.kubeconfig),
        secret: options.tlsSecret,
        webhookConfig: options.webhookConfig,
        ...(options.serviceName ? { serviceName: options.serviceName } : {}),
        ...(options.durations ? { durations: options.durations } : {}),
        ...(options.tlsCheckIntervalMs ? { checkIntervalMs: options.tlsCheckIntervalMs } : {}),
        log,
        onCertificate: (material) => {
          if (!server) throw new Error('the server is not listening yet');
          server.setCertificate(material);
        },
      });
    } catch (error) {
      log.error('cannot start: no access to the Kubernetes API for --tls-secret', {
        error: (error as Error).message,
      });
      policy.close();
      await telemetry.shutdown();
      return 1;
    }
  }

  try {
    server = await startWebhookServer({
      host: options.host,
      port: options.port,
      ...(options.tlsCert && options.tlsKey
        ? { tls: { certFile: options.tlsCert, keyFile: options.tlsKey } }
        : {}),
      ...(bootstrap ? { deferCertificate: true } : {}),
      policy: policy.current,
      log,
      tracer: telemetry.tracer,
    });
  } catch (error) {
    log.error('cannot start the server', { error: (error as Error).message });
    policy.close();
    await telemetry.shutdown();
    return 1;
  }
  bootstrap?.start();
  log.info('slipstream webhook listening', {
    url: server.url,
    policy: policy.current().id,
    policyFile: policy.path ?? '(shipped default)',
    tracing: telemetry.exportTarget,
    ...(options.tlsSecret
      ? {
          tlsSecret: `${options.tlsSecret.namespace}/${options.tlsSecret.name}`,
          webhookConfig: options.webhookConfig,
          dnsNames: bootstrap?.dnsNames,
        }
      : {}),
    pid: process.pid,
  });

  // Metrics after the review port answers: prom-client and its collectors load in tens of ms,
  // which the first review does not wait for (and without --metrics-listen they never load).
  let metricsServer: Server | undefined;
  if (options.metricsListen) {
    try {
      const { createMetricsRegistry, PolicyMetrics, serveMetrics } = await import(
        '@slipstream/shared/adapters/metrics'
      );
      const { WebhookMetrics } = await import('./metrics.ts');
      const registry = createMetricsRegistry('webhook');
      server.setMetrics(new WebhookMetrics(registry));
      policyMetrics = new PolicyMetrics(registry, policy.current().id);
      metricsServer = await serveMetrics(options.metricsListen, registry, log);
    } catch (error) {
      const { host, port } = options.metricsListen;
      log.error('cannot start: --metrics-listen', {
        address: `${host}:${port}`,
        error: (error as Error).message,
      });
      await bootstrap?.stop();
      await server.close();
      policy.close();
      await telemetry.shutdown();
      return 1;
    }
  }

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info('shutting down: no new connections, finishing open reviews', { signal });
  // A second signal while draining ends the process at once.
  const force = () => process.exit(1);
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  await bootstrap?.stop();
  await server.close();
  metricsServer?.close();
  policy.close();
  await telemetry.shutdown();
  log.info('stopped');
  return 0;
}
