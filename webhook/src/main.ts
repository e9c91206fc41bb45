// Entry point of the admission webhook. Tracing is registered before the rest of the webhook is
// imported, so that every module that asks the OpenTelemetry API for a tracer gets the real one.
import { enableCompileCache } from 'node:module';

// Cache compiled code between starts (in $NODE_COMPILE_CACHE or the OS temp dir; a no-op when
// it cannot write there, and NODE_DISABLE_COMPILE_CACHE=1 turns it off).
enableCompileCache();

const { startTelemetry } = await import('@slipstream/shared/adapters/telemetry');
const telemetry = await startTelemetry('slipstream-webhook');
const { parseWebhookArgs, USAGE } = await import('./cli.ts');
const { UsageError } = await import('@slipstream/shared/adapters/cli-args');
const { StartupError, startWebhook } = await import('./webhook.ts');
const { createLogger } = await import('@slipstream/shared/adapters/log');
const { guardProcess } = await import('@slipstream/shared/adapters/process');
const log = createLogger();
let served = false;
let running: { reload(): void } | undefined;
// SIGUSR1 never opens an inspector (whatever flags started Node); SIGHUP re-reads the policy.
guardProcess(log, () => running?.reload());

async function main(): Promise<number> {
  let options: ReturnType<typeof parseWebhookArgs>;
  try {
    options = parseWebhookArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  let webhook: Awaited<ReturnType<typeof startWebhook>>;
  try {
    webhook = await startWebhook(options, { log, tracer: telemetry.tracer, tracing: telemetry.exportTarget });
    running = webhook;
  } catch (error) {
    if (!(error instanceof StartupError)) throw error;
    log.error(`cannot start: ${error.message}`, { error: error.detail });
    return 1;
  }
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log.info('shutting down: no new connections, finishing open reviews', { signal });
  // A second signal while draining ends the process at once.
  const force = () => process.exit(1);
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  await webhook.stop();
  served = true;
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) {
  log.error('fatal', { error: (error as Error).stack ?? String(error) });
  process.exitCode = 1;
} finally {
  await telemetry.shutdown();
}
if (served) log.info('stopped');
