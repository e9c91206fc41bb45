// Entry point. Tracing is registered before the rest of the webhook is imported, so that every
// module that asks the OpenTelemetry API for a tracer gets the real one; the app is loaded after.
import { enableCompileCache } from 'node:module';

// Cache compiled code between starts (in $NODE_COMPILE_CACHE or the OS temp dir; a no-op when
// it cannot write there, and NODE_DISABLE_COMPILE_CACHE=1 turns it off).
enableCompileCache();

const { startTelemetry } = await import('@slipstream/shared/adapters/telemetry');
const telemetry = await startTelemetry('slipstream-webhook');
const { runCli } = await import('./cli.ts');
process.exitCode = await runCli(process.argv.slice(2), { telemetry });
