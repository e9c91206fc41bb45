// `npm run webhook -- --listen HOST:PORT [--tls-cert F --tls-key F] [--policy F]`: parses the
// command line, starts the server with a watched policy, and shuts down cleanly on SIGTERM/SIGINT.

import { parseArgs } from 'node:util';
import { watchPolicy } from '@slipstream/shared/policy-watch';
import type { Telemetry } from '@slipstream/shared/telemetry';
import { createLogger, type Logger } from './log.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';

export const USAGE = `usage: npm run webhook -- [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE] [--policy FILE]

  --listen HOST:PORT   address to serve HTTPS on (default 0.0.0.0:8443; [::]:8443 for IPv6; port 0 picks one)
  --tls-cert FILE      PEM certificate (chain); reloaded when the file changes
  --tls-key FILE       PEM private key for --tls-cert
                       without both: a self-signed certificate generated in memory
  --policy FILE        policy (YAML or JSON); default: the shipped default policy; reloaded when it changes

Tracing: OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP), OTEL_TRACES_EXPORTER=none, OTEL_SERVICE_NAME, ...
`;

export interface CliOptions {
  host: string;
  port: number;
  tlsCert?: string;
  tlsKey?: string;
  policy?: string;
}

export class UsageError extends Error {
  override name = 'UsageError';
}

export function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw new UsageError(`--listen ${JSON.stringify(value)} is not HOST:PORT (e.g. 0.0.0.0:8443, [::]:8443)`);
  }
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}

/** Returns the options, or `help` when the usage was asked for; throws UsageError for bad arguments. */
export function parseCli(argv: string[]): CliOptions | 'help' {
  let values: { listen?: string; 'tls-cert'?: string; 'tls-key'?: string; policy?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        listen: { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        policy: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return 'help';
  const { host, port } = parseListen(values.listen ?? '0.0.0.0:8443');
  const cert = values['tls-cert'];
  const key = values['tls-key'];
  if ((cert === undefined) !== (key === undefined)) {
    throw new UsageError(
      '--tls-cert and --tls-key go together: give both, or neither for a self-signed certificate',
    );
  }
  return {
    host,
    port,
    ...(cert !== undefined ? { tlsCert: cert } : {}),
    ...(key !== undefined ? { tlsKey: key } : {}),
    ...(values.policy !== undefined ? { policy: values.policy } : {}),
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

  let policy: ReturnType<typeof watchPolicy>;
  try {
    policy = watchPolicy(options.policy, {
      onReload: (next, previous) =>
        log.log('info', 'policy reloaded', { file: options.policy, policy: next.id, previous: previous.id }),
      onError: (error, kept) =>
        log.log('error', 'policy file changed but does not load; keeping the last good policy', {
          file: options.policy,
          kept: kept.id,
          error: error.message,
        }),
    });
  } catch (error) {
    log.log('error', 'cannot start: the policy does not load', { error: (error as Error).message });
    await telemetry.shutdown();
    return 1;
  }

  let server: WebhookServer;
  try {
    server = await startWebhookServer({
      host: options.host,
      port: options.port,
      ...(options.tlsCert && options.tlsKey
        ? { tls: { certFile: options.tlsCert, keyFile: options.tlsKey } }
        : {}),
      policy: policy.current,
      log,
      tracer: telemetry.tracer,
    });
  } catch (error) {
    log.log('error', 'cannot start the server', { error: (error as Error).message });
    policy.close();
    await telemetry.shutdown();
    return 1;
  }
  log.log('info', 'slipstream webhook listening', {
    url: server.url,
    policy: policy.current().id,
    policyFile: policy.path ?? '(shipped default)',
    tracing: telemetry.exportTarget,
    pid: process.pid,
  });

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.log('info', 'shutting down: no new connections, finishing open reviews', { signal });
  // A second signal while draining ends the process at once.
  const force = () => process.exit(1);
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  await server.close();
  policy.close();
  await telemetry.shutdown();
  log.log('info', 'stopped');
  return 0;
}
