// Test and benchmark support: runs the webhook as a child process on 127.0.0.1 (`node
// webhook/src/main.ts`, or another command line such as the production bundle's) and resolves
// once its "listening" log line is written.

import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { type LogEntry, Proc, ROOT, WAIT_MS, WEBHOOK_MAIN } from './process.ts';

/**
 * Node's options and the script of the webhook container in the base Deployment: what production
 * runs (the bundle, which `buildBundle(WEBHOOK)` must have built).
 */
export function productionEntry(): string[] {
  const text = readFileSync(join(ROOT, 'deploy/base/webhook/deployment.yaml'), 'utf8');
  const deployment = parseAllDocuments(text)[0]!.toJS() as {
    spec: { template: { spec: { containers: { name: string; command: string[] }[] } } };
  };
  const command = deployment.spec.template.spec.containers.find((c) => c.name === 'webhook')!.command;
  if (command[0] !== 'node') throw new Error(`the webhook container does not run node: ${command.join(' ')}`);
  return [...command.slice(1, -1), join(ROOT, command.at(-1)!)];
}

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
  /** Node's options and the script (default: the TypeScript entry point). */
  entry: readonly string[] = [WEBHOOK_MAIN],
): Promise<SpawnedWebhook> {
  const proc = new Proc(entry.at(-1)!, ['--listen', '127.0.0.1:0', ...args], {
    name: 'webhook',
    nodeArgs: entry.slice(0, -1),
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
