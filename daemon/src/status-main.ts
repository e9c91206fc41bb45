// `npm run status -- [--services DIR | --kubeconfig F] [--netns NAME] [--policy F] [--output table|json]`
// Reads the same Services the daemon reads, computes what it would program, and compares with
// this node's kernel and conntrack. Read-only: it never writes to the kernel.

import { parseArgs } from 'node:util';
import { silentLogger } from '@slipstream/shared/adapters/log';
import { watchPolicy } from '@slipstream/shared/adapters/policy-watch';
import { effectiveDecision } from '@slipstream/shared/core/decide';
import { desiredRuleset } from '@slipstream/shared/core/desired-ruleset';
import { EXAMPLES_DIR } from './cli.ts';
import { readOffloadedFlows } from './conntrack.ts';
import { NapiKernel } from './kernel.ts';
import { FileSource } from './sources/files.ts';
import type { ServiceSource } from './sources/source.ts';
import { requireNetns, StartupError } from './startup.ts';
import { formatStatus, type NodeStatus, portStatuses } from './status.ts';

const USAGE = `usage: npm run status -- [--daemon URL] [--services DIR | --kubeconfig FILE] [--netns NAME] [--policy FILE] [--output table|json]

Asks the daemon on this node (--daemon, default http://127.0.0.1:9469: its --health-listen) for
its status, quarantined Services included. When no daemon answers, computes what it would
program from the same sources and compares with this node's kernel and conntrack.
`;

async function fromDaemon(url: string): Promise<NodeStatus | null> {
  try {
    const res = await fetch(new URL('/status', url), { signal: AbortSignal.timeout(5000) });
    if (!res.ok) return null;
    return (await res.json()) as NodeStatus;
  } catch {
    return null;
  }
}

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        daemon: { type: 'string' },
        services: { type: 'string' },
        kubeconfig: { type: 'string' },
        netns: { type: 'string' },
        policy: { type: 'string' },
        output: { type: 'string', short: 'o' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    process.stderr.write(`slipstream status: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const output = (values.output as string | undefined) ?? 'table';
  if (output !== 'table' && output !== 'json') {
    process.stderr.write(`slipstream status: --output must be table or json\n${USAGE}`);
    return 2;
  }
  const print = (status: NodeStatus) =>
    process.stdout.write(
      output === 'json' ? `${JSON.stringify(status, null, 2)}\n` : `${formatStatus(status)}\n`,
    );
  const daemon = await fromDaemon((values.daemon as string | undefined) ?? 'http://127.0.0.1:9469');
  if (daemon) {
    print(daemon);
    return 0;
  }
  const kube = values.kubeconfig !== undefined || (process.env.KUBERNETES_SERVICE_HOST && !values.services);
  // client-node is loaded only when the Kubernetes source is used.
  const source: ServiceSource = kube
    ? new (await import('./sources/kubernetes.ts')).KubernetesSource({
        ...(values.kubeconfig ? { kubeconfig: values.kubeconfig as string } : {}),
        log: silentLogger,
      })
    : new FileSource({
        dir: (values.services as string | undefined) ?? EXAMPLES_DIR,
        log: silentLogger,
        rescanIntervalMs: 0,
      });
  const policyWatch = watchPolicy(values.policy as string | undefined, { pollMs: 0 });
  const netns = values.netns as string | undefined;
  // A namespace that is not there would otherwise read as "table ABSENT" and exit 0.
  try {
    await requireNetns(netns);
  } catch (error) {
    if (!(error instanceof StartupError)) throw error;
    process.stderr.write(`slipstream status: ${error.message}\n`);
    policyWatch.close();
    return 1;
  }
  const kernel = await NapiKernel.open(netns ? { netns } : {});
  try {
    await source.start();
    const snapshot = source.snapshot();
    await source.stop();
    const policy = policyWatch.current();
    const capabilities = await kernel.probe();
    const current = await kernel.readTable();
    const desired = desiredRuleset({
      services: snapshot.services,
      namespaces: snapshot.namespaces,
      devices: [],
      capabilities,
      policy,
    });
    const offloaded = await readOffloadedFlows(netns ? { netns } : {});
    const status: NodeStatus = {
      source: 'local',
      degraded: !capabilities.flowtable || capabilities.flowtableCounter === false,
      ...(capabilities.reason ? { degradedReason: capabilities.reason } : {}),
      tablePresent: current !== null,
      ...(current?.flowtable ? { devices: { hooked: current.flowtable.devices } } : {}),
      ports: portStatuses(snapshot.services, desired, current, offloaded, (s) =>
        effectiveDecision(s, policy, snapshot.namespaces.get(s.namespace)),
      ),
    };
    print(status);
    return 0;
  } finally {
    policyWatch.close();
    kernel.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
