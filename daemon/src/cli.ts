// `npm run daemon -- [--services DIR | --kubeconfig F] [--once] [--resync-period D] [--cleanup] ...`
// Parses the command line into typed options; no I/O here.

import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MAX_TIMER_MS, parseDuration, parseHostPort, UsageError } from '@slipstream/shared/adapters/cli-args';
import { type DevicePattern, type DeviceRules, parseDevicePatterns } from './devices.ts';

export const EXAMPLES_DIR = fileURLToPath(new URL('../../deploy/examples', import.meta.url));

export const USAGE = `usage: npm run daemon -- [--services DIR | --kubeconfig FILE] [options]

Where Services come from (one of):
  --services DIR          Service and Namespace manifests (YAML/JSON, multi-document); followed for changes
  --kubeconfig FILE       a cluster, through list/watch on Services and Namespaces
                          neither: in-cluster when run in a Pod, else the shipped examples (deploy/examples)
Options:
  --once                  sync once and exit; non-zero when the sync fails
  --cleanup               remove the inet slipstream table and exit
  --policy FILE           policy (YAML/JSON; default: the shipped default); reloaded when it changes
  --resync-period D       full resync that reads the table back and repairs drift (default 1h; 0 disables)
  --min-sync-period D     coalesce changes: at most one sync per period (default 1s)
  --netns NAME            program the named network namespace (/run/netns/NAME) instead of this one
  --health-listen H:P     serve GET /healthz, /readyz, /status and /metrics over HTTP (e.g. 127.0.0.1:9469)
  --metrics-listen H:P    serve only GET /metrics over HTTP, for Prometheus (e.g. the node's address:9470)
  --conntrack-sample-period D  how often offloaded connections are counted from conntrack (default 30s; 0 disables)
  --flowtable-include P   hook only links matching P (default: every UP link but loopback)
  --flowtable-exclude P   never hook links matching P
Durations: 500ms, 30s, 5m, 1h. Patterns: comma lists of names, * matching any characters
(cali*), or regular expressions between slashes (/^veth[0-9a-f]+$/); repeatable; "" is none.
Tracing: OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP), OTEL_TRACES_EXPORTER=none, OTEL_SERVICE_NAME, ...
`;

export type SourceOption = { kind: 'files'; dir: string } | { kind: 'kubernetes'; kubeconfig?: string };

export interface DaemonOptions {
  source: SourceOption;
  once: boolean;
  cleanup: boolean;
  policy?: string;
  resyncPeriodMs: number;
  minSyncPeriodMs: number;
  netns?: string;
  healthListen?: { host: string; port: number };
  metricsListen?: { host: string; port: number };
  conntrackSamplePeriodMs: number;
  /** Which links the flowtable hooks (devices.ts). */
  devices: DeviceRules;
}

function patterns(flag: string, values: string[] | undefined): DevicePattern[] {
  const out: DevicePattern[] = [];
  for (const value of values ?? []) {
    try {
      out.push(...parseDevicePatterns(value));
    } catch (error) {
      throw new UsageError(`${flag} ${JSON.stringify(value)}: ${(error as Error).message}`);
    }
  }
  return out;
}

/** Periods become timers; 0 turns them off. */
const PERIOD = { allowZero: true, maxMs: MAX_TIMER_MS };

/** Options, or `help`; throws UsageError for bad arguments. `env` decides the in-cluster default. */
export function parseDaemonArgs(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
): DaemonOptions | 'help' {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        services: { type: 'string' },
        kubeconfig: { type: 'string' },
        once: { type: 'boolean' },
        cleanup: { type: 'boolean' },
        policy: { type: 'string' },
        'resync-period': { type: 'string' },
        'min-sync-period': { type: 'string' },
        netns: { type: 'string' },
        'health-listen': { type: 'string' },
        'metrics-listen': { type: 'string' },
        'conntrack-sample-period': { type: 'string' },
        'flowtable-include': { type: 'string', multiple: true },
        'flowtable-exclude': { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return 'help';
  const services = values.services as string | undefined;
  const kubeconfig = values.kubeconfig as string | undefined;
  // An empty value (`--kubeconfig "$UNSET"`) would silently mean "the current directory" or "in-cluster".
  if (services === '') throw new UsageError('--services needs a directory');
  if (kubeconfig === '') throw new UsageError('--kubeconfig needs a file');
  if (services !== undefined && kubeconfig !== undefined) {
    throw new UsageError('--services and --kubeconfig exclude each other: Services come from one place');
  }
  let source: SourceOption;
  if (services !== undefined) source = { kind: 'files', dir: services };
  else if (kubeconfig !== undefined) source = { kind: 'kubernetes', kubeconfig };
  else if (env.KUBERNETES_SERVICE_HOST) source = { kind: 'kubernetes' };
  else source = { kind: 'files', dir: EXAMPLES_DIR };

  const netns = values.netns as string | undefined;
  // A name under /run/netns: no `/`, not `.` or `..` (which would name /run/netns or /run), and
  // no leading `-` (it is passed to `ip -n NAME` and `ip netns exec NAME`).
  if (netns !== undefined && (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}$/.test(netns) || /^\.\.?$/.test(netns))) {
    throw new UsageError(`--netns ${JSON.stringify(netns)} is not a network namespace name`);
  }
  const options: DaemonOptions = {
    source,
    once: values.once === true,
    cleanup: values.cleanup === true,
    resyncPeriodMs: parseDuration(
      '--resync-period',
      (values['resync-period'] as string | undefined) ?? '1h',
      PERIOD,
    ),
    minSyncPeriodMs: parseDuration(
      '--min-sync-period',
      (values['min-sync-period'] as string | undefined) ?? '1s',
      PERIOD,
    ),
    conntrackSamplePeriodMs: parseDuration(
      '--conntrack-sample-period',
      (values['conntrack-sample-period'] as string | undefined) ?? '30s',
      PERIOD,
    ),
    devices: {
      include: patterns('--flowtable-include', values['flowtable-include'] as string[] | undefined),
      exclude: patterns('--flowtable-exclude', values['flowtable-exclude'] as string[] | undefined),
    },
  };
  if (values.policy !== undefined) options.policy = values.policy as string;
  if (netns !== undefined) options.netns = netns;
  if (values['health-listen'] !== undefined) {
    options.healthListen = parseHostPort('--health-listen', values['health-listen'] as string);
  }
  if (values['metrics-listen'] !== undefined) {
    options.metricsListen = parseHostPort('--metrics-listen', values['metrics-listen'] as string);
  }
  return options;
}
