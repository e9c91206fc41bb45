/**
 * What the suites that run the real daemon in the VM share: the timeouts, the report lines, reading a
 * scenario's evidence (a missing file fails with the console's tail) and the [OFFLOAD] assertion.
 */
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { bulkConnection, type CtEntry, describeConnections, parseConntrack, parseLog } from './evidence.ts';
import { runInVm, type VmResult } from './lab.ts';

/**
 * Boot + daemon start (tens of seconds under emulation) + traffic; a host loaded by other work (load
 * average 12 on 2 cores, seen) makes the emulated part two to three times slower.
 */
export const VM_TIMEOUT_MS = 780_000;
export const HOOK_TIMEOUT_MS = VM_TIMEOUT_MS + 30_000;

export function report(name: string, r: VmResult): void {
  const t = r.timings;
  console.info(`[vmlab] ${name}: boot ${t.bootMs} ms, scenario ${t.scenarioMs} ms, total ${t.totalMs} ms`);
}

/** A daemon that died while starting (see daemon_wait_started in lib.sh) was started again: say so. */
export async function reportCrashes(r: VmResult): Promise<void> {
  const crashes = await r.readText('daemon-crashes.txt').catch(() => '');
  if (crashes)
    console.warn(`[vmlab] WARNING: the daemon died while starting and was started again:\n${crashes}`);
}

export function tail(text: string, lines = 60): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Reads what a scenario wrote; a missing file fails the test with the console's tail. */
export async function evidence(r: VmResult) {
  const why = `scenario rc=${r.rc}; evidence in ${r.labDir}; console (last lines):\n${tail(r.console)}`;
  const read = async <T>(name: string, parse: (text: string) => T): Promise<T> => {
    let text: string;
    try {
      text = await r.readText(name);
    } catch {
      throw new Error(`${name} is missing in ${r.labDir}; ${why}`);
    }
    return parse(text);
  };
  return {
    why,
    json: <T>(name: string) => read(name, (t) => JSON.parse(t) as T),
    ct: (name: string) => read(name, parseConntrack),
    log: (name: string) => read(name, parseLog),
    text: (name: string) => read(name, (t) => t),
  };
}

export type Evidence = Awaited<ReturnType<typeof evidence>>;

/** Asserts the bulk connection to a Service port is (not) [OFFLOAD]; returns it. */
export function expectBulk(
  ct: CtEntry[],
  proto: string,
  dst: string,
  port: number,
  offload: boolean,
): CtEntry {
  const conn = bulkConnection(ct, proto, dst, port);
  const what = describeConnections(ct, proto, dst, port);
  expect(conn, `a ${proto} connection to ${dst}:${port} in conntrack:\n${what}`).toBeDefined();
  expect(conn!.offload, `${dst}:${port}/${proto} should ${offload ? '' : 'NOT '}be [OFFLOAD]:\n${what}`).toBe(
    offload,
  );
  return conn!;
}

export interface BootedScenario {
  r: VmResult;
  ev: Evidence;
}

/**
 * One VM boot for the enclosing describe block: runs `scenario`, reports its timings and any daemon crash,
 * and fails the block (with the console's tail) when the scenario failed. The evidence is kept when a test
 * or the scenario failed, removed otherwise. Call it before the block's own beforeAll, which may read it.
 */
export function bootScenario(name: string, scenario: string): BootedScenario {
  const booted = {} as BootedScenario;
  let failed = false;
  beforeAll(async () => {
    booted.r = await runInVm({ scenario, timeoutMs: VM_TIMEOUT_MS });
    report(name, booted.r);
    await reportCrashes(booted.r);
    booted.ev = await evidence(booted.r);
    expect(booted.r.rc, booted.ev.why).toBe(0);
  }, HOOK_TIMEOUT_MS);
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') failed = true;
  });
  afterAll(async () => {
    const r = booted.r;
    if (r && (failed || r.rc !== 0)) console.info(`[vmlab] evidence kept in ${r.labDir}`);
    else await r?.cleanup();
  });
  return booted;
}
