// The daemon's HTTP listener (--health-listen, loopback in the DaemonSet):
//   GET /healthz  liveness: the process answers (a kernel that refuses rules is retried, and a
//                 restart would not help it)
//   GET /readyz   readiness: the node's kernel holds what is wanted, or differs for less than a
//                 few sync periods (loop/health.ts); 503 with the reason otherwise
//   GET /status   the node's status as `slipstream status --output json` prints it
//   GET /metrics  the Prometheus metrics (also on --metrics-listen, which serves nothing else)
// Two questions, two endpoints (kube-proxy's shape), so a rollout of a broken daemon stops.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { HostPort } from '@slipstream/shared/adapters/cli-args';
import type { Logger } from '@slipstream/shared/adapters/log';
import { listenHttp, writeMetrics } from '@slipstream/shared/adapters/metrics';
import type { Registry } from 'prom-client';
import type { NodeStatus } from './status.ts';

export interface Endpoints {
  /** The last sync, for both probes' bodies. */
  lastSync(): unknown;
  /** When a sync last reached the kernel (ISO time), or null. */
  lastSuccessAt(): string | null;
  readiness(): { ready: boolean; reason: string };
  status(): Promise<NodeStatus>;
  metrics?: Registry;
}

function send(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function route(req: IncomingMessage, res: ServerResponse, endpoints: Endpoints): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'only GET' });
  switch (path) {
    case '/healthz':
      return send(res, 200, {
        alive: true,
        lastSync: endpoints.lastSync(),
        lastSuccessAt: endpoints.lastSuccessAt(),
      });
    case '/readyz': {
      const r = endpoints.readiness();
      return send(res, r.ready ? 200 : 503, { ...r, lastSync: endpoints.lastSync() });
    }
    case '/status':
      return send(res, 200, await endpoints.status());
    case '/metrics':
      if (!endpoints.metrics) return send(res, 404, { error: 'not found' });
      return writeMetrics(endpoints.metrics, res, req.method === 'HEAD');
    default:
      return send(res, 404, { error: 'not found' });
  }
}

export function serveEndpoints(listen: HostPort, endpoints: Endpoints, logger: Logger): Promise<Server> {
  const server = createServer((req, res) => {
    route(req, res, endpoints).catch((error: unknown) => {
      logger.error('serving an endpoint failed', { path: req.url, error: String(error) });
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
      else res.end();
    });
  });
  return listenHttp(server, listen, logger, 'health endpoint listening');
}
