/**
 * The real daemon in the VM (scenarios/daemon-eviction.sh, one VM boot): conntrack keeps counting offloaded
 * connections (the flowtable's counter flag) and `status` reports them with their bytes; and when offload
 * ends for a Service port (`acceleration: disabled`, a namespace of 1,000 Services opted out), its
 * established offloaded connections return to the slow path without being reset and without changing
 * backend, while another Service's connection loses a few packets at most. Slow-path packets are counted per
 * connection by the observer table. No timing assertions (emulated, shared host); times are printed.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { bulkConnection, type CtEntry, type LogLine } from './evidence.ts';
import { bootScenario, type Evidence, expectBulk, HOOK_TIMEOUT_MS } from './suite.ts';

interface Window {
  writtenAt: string;
  evictedAfterMs: number;
  slowPathKeep: number;
  logLineBefore: number;
  logLineAfter: number;
}

/** When the daemon's evicting sync ended after the change was written, and what the eviction cost. */
function timeline(w: Window, sync: LogLine): string {
  const e = sync.evicted as { conntrackMs: number; commitMs: number };
  return (
    `the evicting sync ended ${Date.parse(sync.time) - Date.parse(w.writtenAt)} ms after the change was written ` +
    `(sync ${sync.durationMs} ms: conntrack read ${e.conntrackMs} ms, flowtable re-created in ${e.commitMs} ms); ` +
    `conntrack showed it without [OFFLOAD] ${w.evictedAfterMs} ms after`
  );
}

/** The same connection (client port), the same backend (reply source), established, not offloaded. */
function expectEvicted(before: CtEntry[], after: CtEntry[], vip: string): CtEntry {
  const was = expectBulk(before, 'tcp', vip, 5432, true);
  const now = bulkConnection(after, 'tcp', vip, 5432);
  expect(now, `${vip}: the connection is still in conntrack`).toBeDefined();
  expect(now!.sport, `${vip}: the same connection\n${was.line}\n${now!.line}`).toBe(was.sport);
  expect(`${now!.replySrc}:${now!.replySport}`, `${vip}: the same backend`).toBe(
    `${was.replySrc}:${was.replySport}`,
  );
  expect(now!.offload, now!.line).toBe(false);
  expect(now!.state, now!.line).toBe('ESTABLISHED');
  expect(now!.packets, `${vip}: still carrying packets`).toBeGreaterThan(was.packets);
  return now!;
}

describe('daemon end to end: counters and eviction (one VM boot)', () => {
  let ev: Evidence;
  let log: LogLine[];

  const vm = bootScenario('daemon-eviction', 'bash test/kernel/scenarios/daemon-eviction.sh');
  beforeAll(async () => {
    ({ ev } = vm);
    log = await ev.log('daemon.log');
  }, HOOK_TIMEOUT_MS);

  test('9a. conntrack keeps counting an offloaded connection; status reports its connections and bytes', async () => {
    const first = expectBulk(await ev.ct('ct-counters-1.txt'), 'tcp', '10.96.5.10', 5432, true);
    const second = expectBulk(await ev.ct('ct-counters-2.txt'), 'tcp', '10.96.5.10', 5432, true);
    const { slowPathKeep } = await ev.json<{ slowPathKeep: number }>('counters.json');
    console.info(
      `[vmlab] offloaded for 3 s: +${second.packets - first.packets} packets, +${second.bytes - first.bytes} bytes in conntrack, ${slowPathKeep} on the slow path`,
    );
    expect(second.sport).toBe(first.sport);
    // ~4 Mbit/s for 3 s: some 1.5 MB, nearly all of it offloaded.
    expect(second.bytes - first.bytes).toBeGreaterThan(500_000);
    expect(second.packets - first.packets).toBeGreaterThan(100);
    expect(slowPathKeep, 'the growth is not slow-path traffic').toBeLessThan(10);

    const status = await ev.json<{
      ports: { service: string; offloaded: number | null; offloadedBytes: number | null }[];
    }>('status.json');
    const keep = status.ports.find((p) => p.service === 'shop/keep');
    expect(keep, JSON.stringify(status.ports.slice(0, 5))).toMatchObject({ offloaded: 1 });
    expect(keep!.offloadedBytes).toBeGreaterThanOrEqual(second.bytes);
  });

  test('9b. acceleration: disabled sends the established offloaded connection back to the slow path, not reset, same backend', async () => {
    const d = await ev.json<Window & { slowPathToggle: number }>('disable.json');
    console.info(
      `[vmlab] toggle disabled: not offloaded any more ${d.evictedAfterMs} ms after the manifest was written; keep lost ${d.slowPathKeep} packets to the slow path; toggle then took ${d.slowPathToggle} slow-path packets in 2 s`,
    );
    expect(d.evictedAfterMs, 'the connection left the flowtable').toBeGreaterThanOrEqual(0);
    const after = await ev.ct('ct-after-disable.txt');
    expectEvicted(await ev.ct('ct-before-disable.txt'), after, '10.96.5.20');
    expect(d.slowPathToggle, 'its packets now take the forward hook').toBeGreaterThan(50);
    // The other Service's connection is offloaded again at its next packet.
    expectBulk(after, 'tcp', '10.96.5.10', 5432, true);
    expect(d.slowPathKeep).toBeLessThanOrEqual(20);

    const during = log.slice(d.logLineBefore, d.logLineAfter);
    const sync = during.find((l) => l.msg === 'sync' && l.evicted !== undefined);
    expect(sync, JSON.stringify(during, null, 1)).toMatchObject({
      result: 'ok',
      elementsRemoved: 1,
      writes: 2,
      evicted: { ports: 1, connections: 1 },
    });
    console.info(`[vmlab] toggle: ${timeline(d, sync!)}`);
  });

  test('9c. a namespace of 1,000 Services opted out: one eviction for all of them; the other Service stays offloaded', async () => {
    const o = await ev.json<Window & { slowPathB1: number; slowPathB2: number; elementsLeft: number }>(
      'optout.json',
    );
    console.info(
      `[vmlab] bulk opted out: offload ended ${o.evictedAfterMs} ms after the label; keep lost ${o.slowPathKeep} packets; b1/b2 then took ${o.slowPathB1}/${o.slowPathB2} slow-path packets in 2 s`,
    );
    expect(o.evictedAfterMs).toBeGreaterThanOrEqual(0);
    expect(o.elementsLeft, 'only shop/keep is left').toBe(1);
    const before = await ev.ct('ct-after-disable.txt');
    const after = await ev.ct('ct-after-optout.txt');
    expectEvicted(before, after, '10.96.8.2');
    expectEvicted(before, after, '10.96.8.3');
    expect(o.slowPathB1).toBeGreaterThan(50);
    expect(o.slowPathB2).toBeGreaterThan(50);
    expectBulk(after, 'tcp', '10.96.5.10', 5432, true);
    expect(o.slowPathKeep).toBeLessThanOrEqual(20);

    const during = log.slice(o.logLineBefore, o.logLineAfter);
    const evictions = during.filter((l) => l.msg === 'sync' && l.evicted !== undefined);
    expect(evictions, 'one eviction for the whole namespace').toHaveLength(1);
    expect(evictions[0]).toMatchObject({
      elementsRemoved: 1000,
      writes: 2,
      evicted: { ports: 2, connections: 2 },
    });

    const running = await ev.json<Record<string, boolean>>('running.json');
    expect(running, 'no connection was reset: every iperf3 client still ran').toEqual({
      keep: true,
      toggle: true,
      b1: true,
      b2: true,
    });
  });
});
