// Entry point of the node daemon. Tracing is registered before the rest is imported, so every
// module that asks the OpenTelemetry API for a tracer gets the real one.
import { enableCompileCache } from 'node:module';
import { stderrLogger as logger } from '@slipstream/shared/adapters/log';
import { guardProcess } from '@slipstream/shared/adapters/process';

// Before anything else: SIGUSR1 must never open an inspector, SIGHUP must never kill the daemon.
let hangup: (() => void) | undefined;
guardProcess(logger, () => hangup?.());
enableCompileCache();

const { startTelemetry } = await import('@slipstream/shared/adapters/telemetry');
const telemetry = await startTelemetry('slipstream-daemon');
const { parseDaemonArgs, USAGE } = await import('./cli.ts');
const { UsageError } = await import('@slipstream/shared/adapters/cli-args');
const { cleanup, runOnce, StartupError, startDaemon } = await import('./daemon.ts');
const { PolicyError } = await import('@slipstream/shared/core/policy');

async function main(): Promise<number> {
  let options: ReturnType<typeof parseDaemonArgs>;
  try {
    options = parseDaemonArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`slipstream daemon: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (options === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  logger.info('starting', {
    source: options.source,
    netns: options.netns ?? '(this one)',
    traces: telemetry.exportTarget,
  });
  if (options.cleanup) {
    const outcome = await cleanup(options.netns);
    logger.info(
      outcome === 'removed' ? 'table inet slipstream removed' : 'table inet slipstream was not there',
    );
    return 0;
  }
  if (options.once) return runOnce(options, { logger });

  const daemon = await startDaemon(options, { logger });
  hangup = () => void daemon.reload();
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      logger.info('stopping; the kernel rules stay in place', { signal });
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await daemon.stop();
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) {
  // An operator error (a namespace, directory or policy that is not there) is one line that says
  // what is wrong; anything else is a bug and keeps its stack.
  if (error instanceof StartupError || error instanceof PolicyError) {
    logger.error(`cannot start: ${error.message}`);
  } else {
    logger.error('fatal', { error: (error as Error).stack ?? String(error) });
  }
  process.exitCode = 1;
} finally {
  await telemetry.shutdown();
}
