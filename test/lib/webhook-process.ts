// Test and benchmark support: runs `node webhook/src/main.ts` as a child process on 127.0.0.1
// and resolves once its "listening" log line is written.

import type { ChildProcess } from 'node:child_process';
import { type LogEntry, Proc, WAIT_MS, WEBHOOK_MAIN } from './process.ts';

export interface SpawnedWebhook {
  child: ChildProcess;
  url: string;
  /** Every log line so far, parsed (the array grows). */
  logs: LogEntry[];
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

/** The webhook with `args` (after `--listen 127.0.0.1:0`); `env` is added to this process's, tracing off. */
export async function spawnWebhook(
  args: string[] = [],
  env: Record<string, string | undefined> = {},
  timeoutMs = WAIT_MS,
): Promise<SpawnedWebhook> {
  const proc = new Proc(WEBHOOK_MAIN, ['--listen', '127.0.0.1:0', ...args], {
    name: 'webhook',
    env: { ...process.env, OTEL_TRACES_EXPORTER: 'none', ...env },
  });
  let listening: LogEntry;
  try {
    listening = await proc.waitForLog(
      'listening',
      (l) => l.msg === 'slipstream webhook listening',
      timeoutMs,
    );
  } catch (error) {
    if (proc.running) {
      proc.child.kill('SIGKILL');
      throw new Error(`webhook did not start: ${JSON.stringify(proc.logs())}`, { cause: error });
    }
    throw new Error(
      `webhook exited with ${proc.exitStatus?.code ?? proc.exitStatus?.signal} before listening: ${JSON.stringify(proc.logs())}`,
    );
  }
  return {
    child: proc.child,
    url: String(listening.url),
    logs: proc.logs(),
    exited: proc.exited.then((e) => e.code),
    async stop(graceMs = 5000) {
      return (await proc.stop('SIGTERM', graceMs)).code;
    },
  };
}
