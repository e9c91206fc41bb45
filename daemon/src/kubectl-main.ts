// `kubectl slipstream status`: the kubectl plugin (bin/kubectl-slipstream runs this file). Reads
// the kubeconfig like every plugin, lists the daemon pods, reads each daemon's /status through a
// port-forward and prints one row per Service port across the nodes.

import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { DAEMON_NAMESPACE, DAEMON_SELECTOR, listDaemonPods, readFleet, STATUS_PORT } from './daemon-pods.ts';
import { fleetStatus, formatFleetStatus } from './fleet-status.ts';

const USAGE = `usage: kubectl slipstream status [-n NAMESPACE | -A] [-o table|json] [--kubeconfig FILE] [--context NAME]

For every Service port: the decision, threshold and reason, how many nodes hold it in their
kernel (N/M) and which do not or keep it QUARANTINED, and the connections offloaded now, summed
over the nodes. Rows where nodes decide differently are marked with *.

Reads each daemon's status (pods ${DAEMON_SELECTOR}
in ${DAEMON_NAMESPACE}) through a port-forward to its loopback port ${STATUS_PORT}: needs RBAC to list
pods and create pods/portforward there (the slipstream-status-reader Role).

  -n, --namespace NAME   only the Services of this namespace (default: every namespace)
  -A, --all-namespaces   every namespace (the default)
  -o, --output FORMAT    table (default) or json
      --kubeconfig FILE  the kubeconfig (default: $KUBECONFIG, else ~/.kube/config)
      --context NAME     a context other than the current one

Exits 1 when no daemon answered (the unreachable ones are named), 2 on a usage error.
`;

function fail(message: string, code: number): number {
  process.stderr.write(`kubectl slipstream: ${message}\n`);
  return code;
}

async function main(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: {
        namespace: { type: 'string', short: 'n' },
        'all-namespaces': { type: 'boolean', short: 'A' },
        output: { type: 'string', short: 'o' },
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    return fail(`${(error as Error).message}\n${USAGE}`, 2);
  }
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  if (positionals.length !== 1 || positionals[0] !== 'status')
    return fail(`unknown command "${positionals.join(' ')}" (only "status")\n${USAGE}`, 2);
  const output = (values.output as string | undefined) ?? 'table';
  if (output !== 'table' && output !== 'json') return fail('--output must be table or json', 2);
  if (values.namespace !== undefined && values['all-namespaces'])
    return fail('--namespace and --all-namespaces exclude each other', 2);

  const kc = new KubeConfig();
  try {
    if (values.kubeconfig) kc.loadFromFile(values.kubeconfig as string);
    else kc.loadFromDefault();
    if (values.context) {
      if (!kc.getContextObject(values.context as string))
        return fail(`context "${values.context}" is not in the kubeconfig`, 2);
      kc.setCurrentContext(values.context as string);
    }
  } catch (error) {
    return fail(`cannot load the kubeconfig: ${(error as Error).message}`, 1);
  }

  let pods: Awaited<ReturnType<typeof listDaemonPods>>;
  try {
    pods = await listDaemonPods(kc);
  } catch (error) {
    return fail(`cannot list the daemon pods in ${DAEMON_NAMESPACE}: ${(error as Error).message}`, 1);
  }
  if (pods.length === 0)
    return fail(`no daemon pods (${DAEMON_SELECTOR}) in ${DAEMON_NAMESPACE}: is Slipstream installed?`, 1);
  const { reports, unreachable } = await readFleet(kc, pods);
  const fleet = fleetStatus(reports, unreachable, values.namespace as string | undefined);
  process.stdout.write(
    output === 'json' ? `${JSON.stringify(fleet, null, 2)}\n` : `${formatFleetStatus(fleet)}\n`,
  );
  if (reports.length === 0) return fail('no daemon answered', 1);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
