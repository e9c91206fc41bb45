// Test and benchmark support: runs the webhook as a child process on 127.0.0.1 (`node
// webhook/src/main.ts`, or another command line such as the production bundle's) and waits for
// its "listening" log line.

import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const MAIN = fileURLToPath(new URL('../main.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * Node's options and the script of the webhook container in the base Deployment: what production
 * runs (the bundle, which `buildWebhook()` must have built).
 */
export function productionEntry(): string[] {
  const text = readFileSync(join(REPO, 'deploy/base/webhook/deployment.yaml'), 'utf8');
  const deployment = parseAllDocuments(text)[0]!.toJS() as {
    spec: { template: { spec: { containers: { name: string; command: string[] }[] } } };
  };
  const command = deployment.spec.template.spec.containers.find((c) => c.name === 'webhook')!.command;
  if (command[0] !== 'node') throw new Error(`the webhook container does not run node: ${command.join(' ')}`);
  return [...command.slice(1, -1), join(REPO, command.at(-1)!)];
}

export interface SpawnedWebhook {
  child: ChildProcess;
  url: string;
  /** Every log line so far, parsed. */
  logs: Record<string, unknown>[];
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

export async function spawnWebhook(
  args: string[] = [],
  env: Record<string, string | undefined> = {},
  timeoutMs = 20_000,
  /** Node's options and the script (default: the TypeScript entry point). */
  entry: readonly string[] = [MAIN],
): Promise<SpawnedWebhook> {
  const child = spawn(process.execPath, [...entry, '--listen', '127.0.0.1:0', ...args], {
    env: { ...process.env, OTEL_TRACES_EXPORTER: 'none', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`webhook did not start: ${JSON.stringify(logs)}`)),
      timeoutMs,
    );
    let buffer = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      buffer += chunk;
      let nl = buffer.indexOf('\n');
      while (nl >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        nl = buffer.indexOf('\n');
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          logs.push(entry);
          if (entry.msg === 'slipstream webhook listening') {
            clearTimeout(timer);
            resolve(String(entry.url));
          }
        } catch {
          logs.push({ raw: line });
        }
      }
    });
    child.stdout!.resume();
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`webhook exited with ${code} before listening: ${JSON.stringify(logs)}`));
    });
  });
  return {
    child,
    url,
    logs,
    exited,
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
