// Typed access to the rendered workloads, shared by the deploy tests.

import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import { type KubeObject, one } from './manifests.ts';

export const IMAGE = 'ghcr.io/slipstream-dev/slipstream:0.1.0';
export const POLICY_MOUNT = '/etc/slipstream';
export const POLICY_PATH = '/etc/slipstream/policy.yaml';

export function webhookDeployment(objects: KubeObject[]): IDeployment {
  return one<IDeployment>(objects, 'Deployment', 'slipstream-webhook');
}

export function daemonSet(objects: KubeObject[]): IDaemonSet {
  return one<IDaemonSet>(objects, 'DaemonSet', 'slipstream-daemon');
}

export function podSpec(workload: IDeployment | IDaemonSet): IPodSpec {
  const spec = workload.spec?.template.spec;
  if (!spec) throw new Error(`${workload.metadata?.name} has no pod spec`);
  return spec;
}

export function container(workload: IDeployment | IDaemonSet, name: string): IContainer {
  const found = podSpec(workload).containers.filter((c) => c.name === name);
  if (found.length !== 1) throw new Error(`${workload.metadata?.name}: expected one container ${name}`);
  return found[0]!;
}

/** The value of `--flag value` in an argument list (undefined when absent; throws when repeated). */
export function flag(args: string[] | undefined, name: string): string | undefined {
  const at = (args ?? []).flatMap((a, i) => (a === name ? [i] : []));
  if (at.length > 1) throw new Error(`${name} given ${at.length} times`);
  if (at.length === 0) return undefined;
  const value = args?.[at[0]! + 1];
  if (value === undefined || value.startsWith('--')) throw new Error(`${name} has no value`);
  return value;
}

/** Plain env values by name (valueFrom entries map to their fieldRef path, prefixed with "field:"). */
export function envOf(c: IContainer): Map<string, string> {
  const env = new Map<string, string>();
  for (const e of c.env ?? []) {
    if (env.has(e.name)) throw new Error(`${c.name}: env ${e.name} is set twice`);
    const field = e.valueFrom?.fieldRef?.fieldPath;
    env.set(e.name, field !== undefined ? `field:${field}` : (e.value ?? ''));
  }
  return env;
}
