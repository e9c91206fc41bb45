/**
 * `npm run demo` on a kernel without flowtables (scripts/demo.sh decides): the demo's core,
 * scenarios/demo.sh, in one VM of the kernel lab, its lines streamed as they come. test/kernel/demo.test.ts runs
 * the same function and asserts on the evidence the scenario leaves in the lab directory.
 *
 * Run directly (`node test/kernel/demo.ts`) it prints one line saying where the demo runs, then the
 * scenario's lines; it exits with the scenario's status, and on SIGINT/SIGTERM stops the VM and removes
 * the lab directory (a failed run keeps it, and says where).
 */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { release } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { prepareLab, REPO_ROOT, runInVm, VmLabError, type VmResult } from './lab.ts';

const run = promisify(execFile);

/**
 * Boot, the daemon's start and two status commands under emulation, two flows: 160-215 s measured on a shared
 * 2-core host at load average 4-7, over 300 s at 10 (each node process in the VM gets what the host leaves it).
 */
export const DEMO_TIMEOUT_MS = 540_000;

/** What only the VM prints: /init's markers and kernel messages. */
function isVmNoise(line: string): boolean {
  return line.startsWith('VMLAB: ') || /^\[\s*\d+\.\d+\] /.test(line);
}

export interface DemoOptions {
  /** Each line the demo prints, as it comes. */
  onLine?: (line: string) => void;
  signal?: AbortSignal;
  /** Extra environment for the scenario (DEMO_SECS, DEMO_FIREWALL_RULES). */
  env?: Record<string, string>;
}

/**
 * Node's compile cache for the daemon and the status command, filled here: under emulation a node process
 * spends a third of its start compiling (TypeScript stripped by a WebAssembly compiler, then JavaScript), and
 * the cache entries do not depend on the CPU. `--help` loads every module that each one imports up front.
 */
async function warmCompileCache(dir: string): Promise<void> {
  const env = { ...process.env, NODE_COMPILE_CACHE: dir, OTEL_TRACES_EXPORTER: 'none' };
  for (const main of ['daemon/src/main.ts', 'daemon/src/status-main.ts']) {
    await run(process.execPath, [main, '--help'], { cwd: REPO_ROOT, env });
  }
}

/** Runs the demo in a VM; the caller reads the evidence from the result and cleans it up. */
export async function runDemoInVm(options: DemoOptions = {}): Promise<VmResult> {
  const lab = await prepareLab();
  return runInVm({
    scenario: 'bash test/kernel/scenarios/demo.sh',
    timeoutMs: DEMO_TIMEOUT_MS,
    env: { DEMO_WHERE: `Linux ${lab.kver} in a qemu VM`, ...options.env },
    prepare: (labDir) => warmCompileCache(path.join(labDir, 'compile-cache')),
    ...(options.onLine
      ? {
          onConsoleLine: (line: string) => {
            if (!isVmNoise(line)) options.onLine!(line);
          },
        }
      : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
}

async function main(): Promise<number> {
  const lab = await prepareLab();
  process.stdout.write(
    `Slipstream demo: this kernel (${release()}) has no flowtables, so the demo runs in a VM: Linux ${lab.kver} under qemu; that takes a few minutes.\n`,
  );
  const abort = new AbortController();
  const interrupted = (signal: NodeJS.Signals) => {
    process.stderr.write(`\n${signal}: stopping the VM\n`);
    abort.abort();
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  let result: VmResult;
  try {
    result = await runDemoInVm({
      onLine: (line) => process.stdout.write(`${line}\n`),
      signal: abort.signal,
    });
  } catch (error) {
    if (error instanceof VmLabError && error.labDir && abort.signal.aborted) {
      await rm(error.labDir, { recursive: true, force: true });
      return 130;
    }
    process.stderr.write(`demo: ${(error as Error).message}\n`);
    return 1;
  }
  if (result.rc !== 0) {
    process.stderr.write(
      `demo: the scenario failed (status ${result.rc}); its files are in ${result.labDir}\n`,
    );
    return result.rc;
  }
  await result.cleanup();
  return 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.exitCode = await main();
}
