// `npm run webhook -- --listen HOST:PORT [--tls-cert F --tls-key F | --tls-secret NS/NAME --webhook-config NAME]
// [--policy F] [--client-ca F]`: parses the command line into typed options; no I/O here (the
// lifecycle is webhook.ts, the entry point main.ts).

import { parseArgs } from 'node:util';
import { MAX_TIMER_MS, parseDuration, parseHostPort, UsageError } from '@slipstream/shared/adapters/cli-args';
import {
  checkDurations,
  DEFAULT_CHECK_INTERVAL_MS,
  DEFAULT_DURATIONS,
  type TlsDurations,
} from './bootstrap-plan.ts';

export const USAGE = `usage: npm run webhook -- [--listen HOST:PORT] [--policy FILE] [--client-ca FILE [--client-name NAME]...]
         [--tls-cert FILE --tls-key FILE | --tls-secret NAMESPACE/NAME --webhook-config NAME [--kubeconfig FILE]]

  --listen HOST:PORT   address to serve HTTPS on (default 0.0.0.0:8443; [::]:8443 for IPv6; port 0 picks one)
  --policy FILE        policy (YAML or JSON); default: the shipped default policy; reloaded when it changes
  --metrics-listen HOST:PORT  serve GET /metrics (Prometheus) over plain HTTP there (default: not served)
  --client-ca FILE     PEM CA(s): POST /mutate answers only clients with a certificate it signed (403 otherwise;
                       the API server presents one when its AdmissionConfiguration names a client certificate);
                       /healthz and /readyz stay open to the kubelet's probes; reloaded when it changes
  --client-name NAME   with --client-ca: the client certificate must also name NAME (subject CN or a DNS SAN);
                       repeat for several

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

export interface WebhookOptions {
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
  /** --client-ca: reviews need a client certificate signed by these CAs. */
  clientCa?: string;
  /** --client-name: ... and naming one of these (CN or DNS SAN). */
  clientNames?: string[];
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
export function parseWebhookArgs(argv: string[]): WebhookOptions | 'help' {
  let values: Record<string, string | boolean | string[] | undefined>;
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
        'client-ca': { type: 'string' },
        'client-name': { type: 'string', multiple: true },
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
  const clientCa = string('client-ca');
  const clientNames = (values['client-name'] as string[] | undefined) ?? [];
  if (clientNames.length > 0 && clientCa === undefined) {
    throw new UsageError('--client-name goes with --client-ca (the CA that signs the client certificates)');
  }
  for (const name of clientNames) {
    if (!/^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/.test(name) || name.length > 253) {
      throw new UsageError(`--client-name ${JSON.stringify(name)} is not a certificate name`);
    }
  }
  const options: WebhookOptions = {
    host,
    port,
    ...(metrics !== undefined ? { metricsListen: parseHostPort('--metrics-listen', metrics) } : {}),
    ...(cert !== undefined ? { tlsCert: cert } : {}),
    ...(key !== undefined ? { tlsKey: key } : {}),
    ...(policy !== undefined ? { policy } : {}),
    ...(clientCa !== undefined ? { clientCa } : {}),
    ...(clientNames.length > 0 ? { clientNames } : {}),
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
