/**
 * The real daemon in the VM while the node's links change under an offloaded flow (scenarios/daemon-devices.sh,
 * one VM boot): an unrelated link DOWN and UP, a pod's veth deleted and created again under its name in one
 * go, a link that vanishes between the daemon's listing and its commit, and what `status` says of the
 * devices. Slow-path packets are counted per connection by the observer table (forward hook, after
 * Slipstream's chain). No timing assertions (emulated, shared host); times are printed.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { failures, type LogLine, writesBeyondAddresses } from './evidence.ts';
import { bootScenario, type Evidence, expectBulk, HOOK_TIMEOUT_MS } from './suite.ts';

interface DownUp {
  baseline: { slowPathA: number };
  daemon: {
    slowPathA: number;
    handleBefore: string;
    handleAfter: string;
    devicesWhileDown: string;
    devicesAfter: string;
    logLineBefore: number;
    logLineAfter: number;
    synced: boolean;
  };
}

const words = (s: string) => s.trim().split(/\s+/).filter(Boolean).sort();

describe('daemon end to end: link churn under an offloaded flow (one VM boot)', () => {
  let ev: Evidence;
  let log: LogLine[];

  const vm = bootScenario('daemon-devices', 'bash test/kernel/scenarios/daemon-devices.sh');
  beforeAll(async () => {
    ({ ev } = vm);
    log = await ev.log('daemon.log');
  }, HOOK_TIMEOUT_MS);

  test('8a. an unrelated link DOWN and UP: zero writes, the same flowtable, no slow-path packet beyond the kernel’s own', async () => {
    const d = await ev.json<DownUp>('downup.json');
    console.info(
      `[vmlab] vx DOWN+UP: A took ${d.baseline.slowPathA} slow-path packets with the daemon frozen (the kernel's own cost), ${d.daemon.slowPathA} with it`,
    );
    expect(d.daemon.synced, 'the daemon finished a sync after each event').toBe(true);
    // DOWN links stay hooked: nothing to write at DOWN, nothing at UP.
    expect(words(d.daemon.devicesWhileDown)).toContain('vx');
    expect(words(d.daemon.devicesAfter)).toEqual(['vb', 'vc', 'vs', 'vx']);
    const during = log.slice(d.daemon.logLineBefore, d.daemon.logLineAfter);
    expect(writesBeyondAddresses(during), 'kernel writes for the DOWN and UP').toEqual([]);
    expect(failures(during)).toEqual([]);
    expect(d.daemon.handleAfter, 'the flowtable was not re-created').toBe(d.daemon.handleBefore);
    // The kernel itself sends an offloaded flow's next packet through the slow path at every link UP or
    // DOWN (the route cache is flushed: about one packet per event); the daemon adds none.
    expect(d.daemon.slowPathA).toBeLessThanOrEqual(Math.max(d.baseline.slowPathA, 2) + 1);
    expectBulk(await ev.ct('ct-downup.txt'), 'tcp', '10.96.4.10', 5432, true);
  });

  test('8b. a pod veth deleted and created again under its name in one batch is hooked again; its new flow is offloaded both ways', async () => {
    const re = await ev.json<{
      batchAt: string;
      hookedAfterMs: number;
      devicesAfter: string;
      slowPathB: number;
      logLineBefore: number;
    }>('recreate.json');
    expect(re.hookedAfterMs, 'vb hooked again').toBeGreaterThanOrEqual(0);
    expect(words(re.devicesAfter)).toContain('vb');
    const sync = log
      .slice(re.logLineBefore)
      .find((l) => l.msg === 'sync' && l.trigger === 'link' && /\+devices vb\b/.test(`${l.change}`));
    expect(sync, 'a link-triggered sync that hooked vb again').toMatchObject({ result: 'ok' });
    // When vb's link events came (ip -ts monitor link, UTC), against the daemon's commit.
    const committed = Date.parse(sync!.time);
    const events = [...(await ev.text('links-recreate.txt')).matchAll(/^\[([0-9T:.-]+)\][^\n]*\bvb@/gm)]
      .map((m) => Date.parse(`${m[1]}Z`))
      .filter((t) => t <= committed);
    console.info(
      `[vmlab] vb re-created: the daemon's sync hooked it ${committed - Date.parse(re.batchAt)} ms after the batch, ` +
        `${events.length ? committed - events.at(-1)! : '?'} ms after vb's last link event before it ` +
        `(${events.length} events; nft listed it after ${re.hookedAfterMs} ms); B took ${re.slowPathB} slow-path packets in 3 s once offloaded`,
    );
    const b = expectBulk(await ev.ct('ct-recreate.txt'), 'tcp', '10.96.4.20', 5432, true);
    // Unhooked, every reply packet entering through vb would take the slow path (hundreds in 3 s).
    expect(re.slowPathB, b.line).toBeLessThan(10);
  });

  test('8c. a link that vanishes between listing and commit: the refused transaction is retried with fresh links', async () => {
    const v = await ev.json<{
      vanished: boolean;
      logLineBefore: number;
      logLineAfter: number;
      devices: string;
    }>('vanish.json');
    expect(v.vanished, 'the wrapper deleted vz right after the daemon listed it').toBe(true);
    const during = log.slice(v.logLineBefore, v.logLineAfter);
    const refused = during.find((l) => l.msg.startsWith('transaction refused'));
    expect(refused, JSON.stringify(during, null, 1)).toBeDefined();
    expect(String(refused!.error)).toMatch(/No such file or directory/);
    const retried = during.find((l) => l.msg === 'sync' && l.retried === true);
    expect(retried, 'the retry ended well').toBeDefined();
    expect(['ok', 'noop']).toContain(retried!.result);
    expect(during.filter((l) => l.level === 'error' || l.result === 'error')).toEqual([]);
    expect(words(v.devices)).toEqual(['vb', 'vc', 'vs', 'vx']);
    expectBulk(await ev.ct('ct-vanish.txt'), 'tcp', '10.96.4.10', 5432, true);
  });

  test('8d. status lists the hooked devices and the links left out, with the reason; and bytes per port', async () => {
    expect(words(await ev.text('devices-start.txt'))).toEqual(['vb', 'vc', 'vs', 'vx']);
    const status = await ev.json<{
      devices: { hooked: string[]; excluded: { name: string; reason: string }[] };
      ports: { service: string; port: string; offloaded: number | null; offloadedBytes: number | null }[];
    }>('status.json');
    expect(status.devices.hooked).toEqual(['vb', 'vc', 'vs', 'vx']);
    const excluded = Object.fromEntries(status.devices.excluded.map((d) => [d.name, d.reason]));
    expect(excluded).toMatchObject({
      lo: 'loopback: forwarded traffic never enters through it',
      skip0: 'matched by --flowtable-exclude skip*',
      skip1: 'matched by --flowtable-exclude skip*',
    });
    const a = status.ports.find((p) => p.service === 'shop/a');
    expect(a, JSON.stringify(status.ports)).toMatchObject({ offloaded: 1 });
    expect(a!.offloadedBytes).toBeGreaterThan(1_000_000);
  });
});
