// The daemons of a cluster, reached through the API server: their pods listed by label, and each
// one's loopback /status read through the pod's port-forward (as istioctl reaches loopback admin
// ports). It needs RBAC for `pods` list and `pods/portforward` create in the daemons' namespace
// and nothing on the nodes. Why /status and not /metrics: the per-Service rows are only there (no
// metric has a per-Service label: their cardinality would grow with the cluster).

import http from 'node:http';
import { Duplex, PassThrough } from 'node:stream';
import { CoreV1Api, type KubeConfig, PortForward } from '@kubernetes/client-node';
import { isRecord } from '@slipstream/shared/core/record';
import type { NodeReport, UnreachableDaemon } from './fleet-status.ts';
import type { NodeStatus } from './status.ts';

/** Where deploy/base puts the DaemonSet, and the labels of its pods (daemonset.yaml). */
export const DAEMON_NAMESPACE = 'slipstream-system';
export const DAEMON_SELECTOR = 'app.kubernetes.io/name=slipstream,app.kubernetes.io/component=daemon';
/** The daemon's --health-listen port (127.0.0.1:9469 in the DaemonSet). */
export const STATUS_PORT = 9469;

export interface DaemonPod {
  name: string;
  node: string;
  phase: string;
}

export async function listDaemonPods(kc: KubeConfig, namespace = DAEMON_NAMESPACE): Promise<DaemonPod[]> {
  const list = await kc
    .makeApiClient(CoreV1Api)
    .listNamespacedPod({ namespace, labelSelector: DAEMON_SELECTOR });
  return list.items
    .map((p) => ({
      name: p.metadata?.name ?? '',
      node: p.spec?.nodeName ?? '(not scheduled)',
      phase: p.status?.phase ?? 'Unknown',
    }))
    .sort((a, b) => a.node.localeCompare(b.node) || a.name.localeCompare(b.name));
}

/** A guard against a port that answers with something else: the fields every NodeStatus has. */
function asNodeStatus(value: unknown): NodeStatus {
  if (!isRecord(value) || typeof value.degraded !== 'boolean' || !Array.isArray(value.ports))
    throw new Error('the answer is not a Slipstream status');
  return value as unknown as NodeStatus;
}

interface Closable {
  close(): void;
  once(event: 'close', listener: () => void): unknown;
}

/** GET /status on the pod's STATUS_PORT over a port-forward; fails after `timeoutMs`. */
export async function readDaemonStatus(
  kc: KubeConfig,
  pod: DaemonPod,
  options: { namespace?: string; port?: number; timeoutMs?: number } = {},
): Promise<NodeStatus> {
  const timeoutMs = options.timeoutMs ?? 5000;
  const output = new PassThrough();
  const errors = new PassThrough();
  const input = new PassThrough();
  let ws: Closable | undefined;
  let timer: NodeJS.Timeout | undefined;
  let settled = false;
  const close = () => {
    settled = true;
    ws?.close();
  };
  try {
    return await new Promise<NodeStatus>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000}s`)), timeoutMs);
      // The kubelet's dial failing comes on the error channel.
      errors.on('data', (d: Buffer) => {
        if (d.length > 0) reject(new Error(d.toString().trim()));
      });
      new PortForward(kc)
        .portForward(
          options.namespace ?? DAEMON_NAMESPACE,
          pod.name,
          [options.port ?? STATUS_PORT],
          output,
          errors,
          input,
        )
        .then((socket) => {
          ws = socket as unknown as Closable;
          // A forward that opened after the deadline is closed at once.
          if (settled) return ws.close();
          ws.once('close', () => output.end());
          const connection = Duplex.from({ readable: output, writable: input });
          const req = http.request(
            {
              createConnection: () => connection as never,
              path: '/status',
              headers: { host: '127.0.0.1', connection: 'close' },
            },
            (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c: Buffer) => chunks.push(c));
              res.on('error', reject);
              res.on('end', () => {
                const text = Buffer.concat(chunks).toString('utf8');
                if (res.statusCode !== 200) return reject(new Error(`/status answered ${res.statusCode}`));
                try {
                  resolve(asNodeStatus(JSON.parse(text)));
                } catch (error) {
                  reject(new Error(`/status: ${(error as Error).message}`));
                }
              });
            },
          );
          req.on('error', reject);
          req.end();
        }, reject);
    });
  } finally {
    clearTimeout(timer);
    close();
  }
}

/** Every daemon's status, at most `concurrency` port-forwards at once; the ones that fail are named. */
export async function readFleet(
  kc: KubeConfig,
  pods: readonly DaemonPod[],
  options: { namespace?: string; concurrency?: number; timeoutMs?: number } = {},
): Promise<{ reports: NodeReport[]; unreachable: UnreachableDaemon[] }> {
  const reports: NodeReport[] = [];
  const unreachable: UnreachableDaemon[] = [];
  const queue = [...pods];
  const worker = async () => {
    for (let pod = queue.shift(); pod; pod = queue.shift()) {
      if (pod.phase !== 'Running') {
        unreachable.push({ node: pod.node, pod: pod.name, reason: `pod is ${pod.phase}` });
        continue;
      }
      try {
        reports.push({ node: pod.node, pod: pod.name, status: await readDaemonStatus(kc, pod, options) });
      } catch (error) {
        unreachable.push({ node: pod.node, pod: pod.name, reason: (error as Error).message });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 8, pods.length) }, worker));
  return { reports, unreachable };
}
