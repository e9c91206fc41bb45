// The Prometheus plumbing both components share (prom-client): a registry with prom-client's
// default process and Node.js runtime metrics (`process_*`, `nodejs_*`, unprefixed as every Node
// exporter names them) and `slipstream_build_info`; the policy's reload metrics (both components
// watch a policy file); and the text exposition over plain HTTP. Each component defines its own
// `slipstream_*` metrics on the registry it is given.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import pkg from '../../package.json' with { type: 'json' };
import type { HostPort } from './cli-args.ts';
import type { Logger } from './log.ts';

export type Component = 'daemon' | 'webhook';

const LINT_FAILING_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** A registry with the default process and runtime metrics and `slipstream_build_info{component,version}`. */
export function createMetricsRegistry(component: Component): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Gauges named like counters (promtool refuses them); each is the sum of its per-type series
  // (nodejs_active_handles{type}, ...), which stay.
  for (const name of LINT_FAILING_DEFAULTS) registry.removeSingleMetric(name);
  new Gauge({
    name: 'slipstream_build_info',
    help: 'Always 1: the Slipstream component and version this process runs.',
    labelNames: ['component', 'version'],
    registers: [registry],
  }).set({ component, version: pkg.version }, 1);
  return registry;
}

/** Answers a scrape with the registry in the Prometheus text format (0.0.4). */
export async function writeMetrics(registry: Registry, res: ServerResponse, head = false): Promise<void> {
  const body = await registry.metrics();
  res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(body) });
  res.end(head ? undefined : body);
}

/**
 * A plain-HTTP listener that serves only `GET /metrics` (404 elsewhere, 405 for other methods):
 * what a scrape address may expose, and nothing else.
 */
export function serveMetrics(listen: HostPort, registry: Registry, logger: Logger): Promise<Server> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    const plain = (code: number, text: string) => {
      res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${text}\n`);
    };
    if (path !== '/metrics') return plain(404, 'not found: metrics are at /metrics');
    if (req.method !== 'GET' && req.method !== 'HEAD') return plain(405, 'only GET');
    writeMetrics(registry, res, req.method === 'HEAD').catch((error: unknown) => {
      logger.error('serving metrics failed', { error: String(error) });
      if (!res.headersSent) plain(500, 'internal error');
      else res.end();
    });
  });
  return listenHttp(server, listen, logger, 'metrics listening');
}

/**
 * Listens on `listen` and logs `message` with the address; rejects when it cannot. A client that
 * never completes a request (a probe, a scraper) must not pin a socket: bounded request times.
 */
export function listenHttp(
  server: Server,
  listen: HostPort,
  logger: Logger,
  message: string,
): Promise<Server> {
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      logger.info(message, { address: server.address() });
      resolve(server);
    });
  });
}

/** Policy reloads (`slipstream_policy_reloads_total{result}`) and the policy in force (`slipstream_policy_info`). */
export class PolicyMetrics {
  readonly #reloads: Counter<'result'>;
  readonly #info: Gauge<'policy'>;

  constructor(registry: Registry, initial: string) {
    this.#reloads = new Counter({
      name: 'slipstream_policy_reloads_total',
      help: 'Policy file changes: result="success" put a new policy in force, result="failure" kept the last good one (the file did not load).',
      labelNames: ['result'],
      registers: [registry],
    });
    this.#reloads.inc({ result: 'success' }, 0);
    this.#reloads.inc({ result: 'failure' }, 0);
    this.#info = new Gauge({
      name: 'slipstream_policy_info',
      help: 'Always 1: the policy in force, as name@version#content-hash.',
      labelNames: ['policy'],
      registers: [registry],
    });
    this.#info.set({ policy: initial }, 1);
  }

  reloaded(policy: string): void {
    this.#reloads.inc({ result: 'success' });
    this.#info.reset();
    this.#info.set({ policy }, 1);
  }

  failed(): void {
    this.#reloads.inc({ result: 'failure' });
  }
}
