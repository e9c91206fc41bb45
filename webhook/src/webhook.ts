// The webhook's lifecycle: a watched policy, the HTTPS server, (with --tls-secret) the TLS
// bootstrap and (with --metrics-listen) the metrics listener, started in that order and stopped
// in reverse. Arguments are cli.ts's; signals and
// exit codes are main.ts's.

import type { Server } from 'node:http';
import type { Tracer } from '@opentelemetry/api';
import type { Logger } from '@slipstream/shared/adapters/log';
import type { PolicyMetrics } from '@slipstream/shared/adapters/metrics';
import { type PolicyWatch, watchPolicy } from '@slipstream/shared/adapters/policy-watch';
import type { WebhookOptions } from './cli.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';

/** An operator error found while starting (a policy that does not load, no API access): one line, no stack. */
export class StartupError extends Error {
  override name = 'StartupError';
  /** What went wrong underneath, for the log line's `error` field. */
  detail: string;
  constructor(message: string, cause: unknown) {
    super(message);
    this.detail = cause instanceof Error ? cause.message : String(cause);
  }
}

export interface WebhookDeps {
  log: Logger;
  tracer?: Tracer;
  /** Named in the "listening" log line. */
  tracing?: string;
}

export interface RunningWebhook {
  server: WebhookServer;
  /** SIGHUP: re-reads the policy file now (it is also watched). */
  reload(): void;
  /** Stops the bootstrap, finishes open reviews, closes the server and the policy watch. */
  stop(): Promise<void>;
}

function startPolicy(
  options: WebhookOptions,
  log: Logger,
  metrics: () => PolicyMetrics | undefined,
): PolicyWatch {
  try {
    return watchPolicy(options.policy, {
      onReload: (next, previous) => {
        metrics()?.reloaded(next.id);
        log.info('policy reloaded', { file: options.policy, policy: next.id, previous: previous.id });
      },
      onError: (error, kept) => {
        metrics()?.failed();
        log.error('policy file changed but does not load; keeping the last good policy', {
          file: options.policy,
          kept: kept.id,
          error: error.message,
        });
      },
    });
  } catch (error) {
    throw new StartupError('the policy does not load', error);
  }
}

/** Starts serving; throws StartupError for what an operator has to fix, having released what it started. */
export async function startWebhook(options: WebhookOptions, deps: WebhookDeps): Promise<RunningWebhook> {
  const { log } = deps;
  let policyMetrics: PolicyMetrics | undefined;
  const policy = startPolicy(options, log, () => policyMetrics);

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
      policy.close();
      throw new StartupError('no access to the Kubernetes API for --tls-secret', error);
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
      ...(options.clientCa
        ? { clientAuth: { caFile: options.clientCa, names: options.clientNames ?? [] } }
        : {}),
      policy: policy.current,
      log,
      ...(deps.tracer ? { tracer: deps.tracer } : {}),
    });
  } catch (error) {
    policy.close();
    throw new StartupError('cannot start the server', error);
  }
  bootstrap?.start();
  log.info('slipstream webhook listening', {
    url: server.url,
    policy: policy.current().id,
    policyFile: policy.path ?? '(shipped default)',
    tracing: deps.tracing,
    ...(options.tlsSecret
      ? {
          tlsSecret: `${options.tlsSecret.namespace}/${options.tlsSecret.name}`,
          webhookConfig: options.webhookConfig,
          dnsNames: bootstrap?.dnsNames,
        }
      : {}),
    ...(options.clientCa ? { clientCa: options.clientCa, clientNames: options.clientNames ?? [] } : {}),
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
      await bootstrap?.stop();
      await server.close();
      policy.close();
      const { host, port } = options.metricsListen;
      throw new StartupError(`cannot serve --metrics-listen ${host}:${port}`, error);
    }
  }

  const running = server;
  return {
    server: running,
    reload: () => policy.check(),
    async stop() {
      await bootstrap?.stop();
      await running.close();
      metricsServer?.close();
      policy.close();
    },
  };
}
