/**
 * End to end on a real kernel: the REAL daemon (embedded mode: Service manifests from a directory) programs
 * the VM's kernel, and conntrack ([OFFLOAD]) plus the counters (Slipstream's threshold chains, and an
 * observer table whose forward chain runs after Slipstream's and so counts every packet that still takes
 * the slow path) show which connections are offloaded, and after how many packets.
 *
 * Two VM boots, each asserted by several tests:
 *   scenarios/daemon-services.sh   decisions in the data plane: thresholds, policy, opt-outs, UDP, IPv6,
 *                                  a hint changed while the daemon runs
 *   scenarios/daemon-lifecycle.sh  pod veths appearing and disappearing under offloaded traffic; the daemon
 *                                  restarted (zero kernel writes) and killed (the rules stay)
 * No timing assertions: the host is shared and the VM is emulated (TCG). Times are printed for humans.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import {
  type CtEntry,
  chainCounter,
  chainNames,
  commentCounters,
  connectionsTo,
  describeConnections,
  failures,
  type LogLine,
  type NftJson,
  verdictMap,
  writesBeyondAddresses,
} from './evidence.ts';
import { bootScenario, type Evidence, expectBulk, HOOK_TIMEOUT_MS } from './suite.ts';

interface Snapshot {
  elapsedMs: number;
  conditionsMet: boolean;
  running: Record<string, boolean>;
}

describe('daemon end to end: decisions in the data plane (one VM boot)', () => {
  let ev: Evidence;
  let ct1: CtEntry[];
  let nft1: NftJson;
  let observer1: Record<string, number>;
  let log: LogLine[];

  const vm = bootScenario('daemon-services', 'bash test/kernel/scenarios/daemon-services.sh');
  beforeAll(async () => {
    ({ ev } = vm);
    ct1 = await ev.ct('ct-phase1.txt');
    nft1 = await ev.json<NftJson>('nft-phase1.json');
    observer1 = commentCounters(nft1, 'observer');
    log = await ev.log('daemon.log');
    console.info(`[vmlab] slow-path packets per Service port (observer): ${JSON.stringify(observer1)}`);
  }, HOOK_TIMEOUT_MS);

  test('the real daemon programmed the table once, without failures, and not degraded', async () => {
    const startup = log.find((l) => l.msg === 'sync' && l.trigger === 'startup');
    expect(startup, `a start-up sync line in the daemon log:\n${JSON.stringify(log, null, 1)}`).toBeDefined();
    expect(startup).toMatchObject({ result: 'ok', degraded: false });
    expect(failures(log), 'failed or refused transactions in the daemon log').toEqual([]);
    const phase1 = await ev.json<Snapshot>('phase1.json');
    expect(
      phase1.conditionsMet,
      `phase 1 conditions met within the deadline: ${JSON.stringify(phase1)}`,
    ).toBe(true);
    // The snapshot was taken during the transfers: every client was still there (paused, not finished).
    expect(Object.values(phase1.running).every(Boolean), JSON.stringify(phase1.running)).toBe(true);
  });

  test('1. a long TCP flow to a hinted Service (5432, threshold 20) is offloaded; a short connection is not', async () => {
    const svc4 = verdictMap(nft1, 'slipstream', 'svc4');
    expect(svc4.get('10.96.1.10 . tcp . 5432')).toBe('jump threshold-20');
    expect(svc4.get('10.96.1.10 . tcp . 3306'), 'the short connection port is hinted too').toBe(
      'jump threshold-20',
    );

    const db = expectBulk(ct1, 'tcp', '10.96.1.10', 5432, true);
    // Offloaded right after packet 20: the observer saw the packets before it (conntrack's counters go on
    // counting after offload: the flowtable's counter flag).
    expect(db.packets, db.line).toBeGreaterThan(20);
    expect(
      observer1.db,
      'slow-path packets of shop/db:5432 (iperf3 control + data before offload)',
    ).toBeLessThan(200);
    // Other connections to the port (iperf3's control connection, ~15 packets) stay on the slow path.
    for (const c of connectionsTo(ct1, 'tcp', '10.96.1.10', 5432).filter((c) => c !== db)) {
      expect(c.offload, c.line).toBe(false);
    }

    // The short connection: request and echo, still open, fewer packets than the threshold.
    expect(await ev.text('short.out')).toBe('ping\n');
    const short = connectionsTo(ct1, 'tcp', '10.96.1.10', 3306);
    expect(short.length, describeConnections(ct1, 'tcp', '10.96.1.10', 3306)).toBe(1);
    expect(short[0]!.state, short[0]!.line).toBe('ESTABLISHED');
    expect(short[0]!.offload, short[0]!.line).toBe(false);
    expect(short[0]!.packets, short[0]!.line).toBeLessThanOrEqual(20);
    expect(observer1.short).toBe(short[0]!.packets);
  });

  test('2. DNS (53/TCP, policy: never) and an opted-out namespace are never offloaded, even long flows', async () => {
    const svc4 = verdictMap(nft1, 'slipstream', 'svc4');
    for (const [key, vip, port] of [
      ['dns', '10.96.1.53', 53],
      ['optout', '10.96.1.20', 5432],
    ] as const) {
      expect(svc4.has(`${vip} . tcp . ${port}`), `${key}: no element for ${vip}:${port}`).toBe(false);
      const conn = expectBulk(ct1, 'tcp', vip, port, false);
      expect(conn.state, conn.line).toBe('ESTABLISHED');
      // Long: far more packets than any threshold in this test, all of them on the slow path.
      expect(conn.packets, `${key}: a long flow (${conn.line})`).toBeGreaterThan(3000);
      expect(observer1[key], `${key}: slow-path packets`).toBeGreaterThanOrEqual(conn.packets);
    }
    // The namespace label is what keeps legacy/pg out: the same port in shop/ is offloaded (test 1).
    expect(svc4.has('10.96.1.53 . udp . 53')).toBe(false);
  });

  test('3. slipstream.dev/packet-threshold is honoured: 2000 offloads much later than 20', async () => {
    const svc4 = verdictMap(nft1, 'slipstream', 'svc4');
    expect(svc4.get('10.96.1.31 . tcp . 5432')).toBe('jump threshold-20');
    expect(svc4.get('10.96.1.32 . tcp . 5432')).toBe('jump threshold-2000');
    expect(chainNames(nft1, 'slipstream')).toEqual(
      expect.arrayContaining(['forward', 'threshold-20', 'threshold-2000']),
    );

    const t20 = expectBulk(ct1, 'tcp', '10.96.1.31', 5432, true);
    const t2000 = expectBulk(ct1, 'tcp', '10.96.1.32', 5432, true);
    console.info(
      `[vmlab] threshold 20: offloaded at ${t20.packets} packets, ${observer1.t20} slow-path packets; ` +
        `threshold 2000: offloaded at ${t2000.packets} packets, ${observer1.t2000} slow-path packets`,
    );
    expect(t20.packets, t20.line).toBeGreaterThan(20);
    expect(t2000.packets, t2000.line).toBeGreaterThan(2000);
    expect(observer1.t20, 'slow-path packets, threshold 20').toBeLessThan(200);
    expect(observer1.t2000, 'slow-path packets, threshold 2000').toBeGreaterThan(2000);
    expect(observer1.t2000!, 'threshold 2000 vs 20: slow-path packets').toBeGreaterThan(10 * observer1.t20!);
    // Each threshold chain made its flow add (the packet that crossed the threshold is counted there).
    expect(chainCounter(nft1, 'slipstream', 'threshold-2000')).toBeGreaterThanOrEqual(1);
    expect(chainCounter(nft1, 'slipstream', 'threshold-20')).toBeGreaterThanOrEqual(1);
  });

  test('4. UDP (5201/UDP, iperf3 -u) and an IPv6 ClusterIP of a dual-stack Service are offloaded', async () => {
    const svc4 = verdictMap(nft1, 'slipstream', 'svc4');
    const svc6 = verdictMap(nft1, 'slipstream', 'svc6');
    expect(svc4.get('10.96.1.40 . udp . 5201')).toBe('jump threshold-20');
    const udp = expectBulk(ct1, 'udp', '10.96.1.40', 5201, true);
    expect(udp.packets, udp.line).toBeGreaterThan(20);
    expect(observer1.udp, 'UDP slow-path packets').toBeLessThan(200);

    // Dual-stack: one element per family, and the IPv6 flow is offloaded like an IPv4 one.
    expect(svc4.get('10.96.1.50 . tcp . 5432')).toBe('jump threshold-20');
    expect(svc6.get('fd00:96::1:50 . tcp . 5432')).toBe('jump threshold-20');
    const v6 = expectBulk(ct1, 'tcp', 'fd00:96::1:50', 5432, true);
    expect(v6.packets, v6.line).toBeGreaterThan(20);
    expect(observer1.v6, 'IPv6 slow-path packets').toBeLessThan(200);
  });

  test('7. acceleration: disabled written while the daemon runs removes the element; new flows stay on the slow path', async () => {
    // Before: offloaded.
    expectBulk(ct1, 'tcp', '10.96.1.60', 5432, true);
    const toggle = await ev.json<{ elementBefore: boolean; goneAfterMs: number }>('toggle.json');
    expect(toggle.elementBefore).toBe(true);
    expect(toggle.goneAfterMs, 'the element disappeared').toBeGreaterThanOrEqual(0);
    console.info(`[vmlab] element gone ${toggle.goneAfterMs} ms after the manifest was rewritten`);
    const sync = log.find((l) => l.msg === 'sync' && l.trigger === 'service' && l.elementsRemoved === 1);
    expect(sync, 'a service-triggered sync that removed one element').toMatchObject({ result: 'ok' });

    const after = await ev.json<NftJson>('slipstream-after-toggle.json');
    const svc4 = verdictMap(after, 'slipstream', 'svc4');
    expect(svc4.has('10.96.1.60 . tcp . 5432')).toBe(false);
    expect(svc4.get('10.96.1.10 . tcp . 5432'), 'the other Services keep their elements').toBe(
      'jump threshold-20',
    );

    const phase2 = await ev.json<Snapshot>('phase2.json');
    expect(phase2.conditionsMet, JSON.stringify(phase2)).toBe(true);
    expect(phase2.running.toggle2).toBe(true);
    const ct2 = await ev.ct('ct-phase2.txt');
    // Its state is not asserted: on a loaded host the flow may have ended (TIME_WAIT) by the snapshot; its
    // packets and the observer's count say it ran on the slow path.
    const conn = expectBulk(ct2, 'tcp', '10.96.1.60', 5432, false);
    expect(conn.packets, `far past the old threshold: ${conn.line}`).toBeGreaterThan(3000);
    const observer2 = commentCounters(await ev.json<NftJson>('nft-phase2.json'), 'observer');
    expect(observer2.toggle! - observer1.toggle!, 'the new flow took the slow path').toBeGreaterThanOrEqual(
      conn.packets,
    );
  });
});

describe('daemon end to end: device churn, restart and kill under offloaded traffic (one VM boot)', () => {
  let ev: Evidence;
  let log1: LogLine[];
  let log2: LogLine[];

  const vm = bootScenario('daemon-lifecycle', 'bash test/kernel/scenarios/daemon-lifecycle.sh');
  beforeAll(async () => {
    ({ ev } = vm);
    log1 = await ev.log('daemon-1.log');
    log2 = await ev.log('daemon-2.log');
  }, HOOK_TIMEOUT_MS);

  test('5a. a new pod veth is hooked into the flowtable and its flows are offloaded', async () => {
    const added = await ev.json<{ hookedAfterMs: number; devicesBefore: string; devicesAfter: string }>(
      'device-added.json',
    );
    expect(added.devicesBefore.trim().split(' ')).not.toContain('vn');
    expect(added.devicesAfter.trim().split(' ')).toContain('vn');
    expect(added.hookedAfterMs, 'vn was hooked').toBeGreaterThanOrEqual(0);
    const sync = log1.find(
      (l) => l.msg === 'sync' && l.trigger === 'link' && /\+devices vn\b/.test(`${l.change}`),
    );
    expect(sync, 'a link-triggered sync that added vn').toMatchObject({ result: 'ok', writes: 1 });
    // When vn came up (ip -ts monitor link, UTC) until the daemon's sync committed it (its log's time).
    const links = await ev.text('links.txt');
    const up = /^\[([0-9T:.-]+)\][^\n]*\bvn@[^\n]*\bUP\b/m.exec(links)?.[1];
    if (up) {
      const ms = Date.parse(String(sync!.time)) - Date.parse(`${up}Z`);
      console.info(`[vmlab] vn up -> flowtable hooks it: ${ms} ms (daemon sync committed)`);
    }
    console.info(`[vmlab] vn listed in the flowtable ${added.hookedAfterMs} ms after add_pod returned`);

    const ct = await ev.ct('ct-added.txt');
    expectBulk(ct, 'tcp', '10.96.2.20', 5432, true); // through vn
    expectBulk(ct, 'tcp', '10.96.2.10', 5432, true);
  });

  test('5b. a pod veth deleted while others carry offloaded flows: no failed transaction, the others stay offloaded', async () => {
    const del = await ev.json<{
      unhookedAfterMs: number;
      syncSeenAfterMs: number;
      devices: string;
      logLineBefore: number;
    }>('device-deleted.json');
    expect(del.devices.trim().split(' ').sort()).toEqual(['vc', 'vn', 'vs']);
    expect(del.syncSeenAfterMs, 'the daemon finished a sync after the deletion').toBeGreaterThanOrEqual(0);
    const stop = log1.findIndex((l) => l.msg.startsWith('stopping'));
    const afterDelete = log1.slice(del.logLineBefore, stop < 0 ? undefined : stop);
    expect(failures(afterDelete), 'failed or refused transactions after the deletion').toEqual([]);
    // The kernel unhooks a deleted link by itself; the daemon must not rewrite (recreate) the flowtable. The
    // pod's addresses went with its veth: that is the only write.
    expect(writesBeyondAddresses(afterDelete), 'kernel writes after the deletion').toEqual([]);

    const ct = await ev.ct('ct-deleted.txt');
    const a = expectBulk(ct, 'tcp', '10.96.2.10', 5432, true);
    const n = expectBulk(ct, 'tcp', '10.96.2.20', 5432, true);
    // Removing the pod's routes invalidates the cached routes of all offloaded flows: the kernel tears them
    // down and the threshold rule re-offloads each at its next packet, so only a handful of packets take
    // the slow path (a flow left on the slow path would show hundreds here).
    const before = commentCounters(await ev.json<NftJson>('observer-before-delete.json'), 'observer');
    const after = commentCounters(await ev.json<NftJson>('observer-after-delete.json'), 'observer');
    console.info(
      `[vmlab] slow-path packets across the deletion: A ${after.A! - before.A!}, N ${after.N! - before.N!}`,
    );
    expect(after.A! - before.A!, a.line).toBeLessThan(50);
    expect(after.N! - before.N!, n.line).toBeLessThan(50);
  });

  test('6a. a restart adopts the table with zero kernel writes; the flows stay offloaded', async () => {
    const summary = await ev.json<{ daemon1ExitStatus: number; daemon2ExitStatus: number }>('summary.json');
    expect(summary.daemon1ExitStatus, 'SIGTERM: clean exit').toBe(0);
    expect(log1.some((l) => l.msg === 'stopping; the kernel rules stay in place')).toBe(true);

    const startup = log2.find((l) => l.trigger === 'startup');
    expect(startup, JSON.stringify(log2, null, 1)).toMatchObject({
      msg: 'startup sync: adopted the existing table, 0 writes',
      result: 'noop',
      writes: 0,
      readBack: true,
      drift: false,
    });
    expect(
      log2.filter((l) => Number(l.writes) > 0),
      'syncs with writes after the restart',
    ).toEqual([]);
    expect(failures(log2)).toEqual([]);

    const before = await ev.text('table-before.txt');
    expect(before).toMatch(/flowtable ft/);
    expect(await ev.text('table-after-restart.txt'), 'the table (with handles) after the restart').toBe(
      before,
    );

    // nft monitor saw no change at all over the restart and the kill: only the canary made on purpose.
    const monitor = (await ev.text('monitor.txt')).split('\n').filter((l) => l.trim() !== '');
    expect(
      monitor.some((l) => l.includes('zz-canary')),
      `the monitor was listening:\n${monitor.join('\n')}`,
    ).toBe(true);
    const canaryGeneration = (l: string) => /^# new generation \d+ by process \d+ \(nft\)$/.test(l);
    expect(monitor.filter((l) => !l.includes('zz-canary') && !canaryGeneration(l))).toEqual([]);
    expect(monitor.filter(canaryGeneration).length, 'one generation per canary change').toBe(2);

    // The same connections are still offloaded, and not one more packet of theirs took the slow path.
    const deleted = await ev.ct('ct-deleted.txt');
    const restarted = await ev.ct('ct-restarted.txt');
    const slowBefore = commentCounters(await ev.json<NftJson>('observer-before-restart.json'), 'observer');
    const slowAfter = commentCounters(await ev.json<NftJson>('observer-restarted.json'), 'observer');
    for (const [vip, key] of [
      ['10.96.2.10', 'A'],
      ['10.96.2.20', 'N'],
    ] as const) {
      const was = expectBulk(deleted, 'tcp', vip, 5432, true);
      const now = expectBulk(restarted, 'tcp', vip, 5432, true);
      expect(now.sport, `${vip}: the same connection`).toBe(was.sport);
      expect(slowAfter[key]! - slowBefore[key]!, `${vip}: no slow-path packet during the restart`).toBe(0);
      expect(now.packets, `${vip}: conntrack went on counting`).toBeGreaterThan(was.packets);
    }
  });

  test('6b. SIGKILL leaves the rules in place and the flows offloaded', async () => {
    const summary = await ev.json<{ daemon2ExitStatus: number }>('summary.json');
    expect(summary.daemon2ExitStatus, 'killed by SIGKILL').toBe(137);
    expect(await ev.text('table-after-kill.txt')).toBe(await ev.text('table-before.txt'));
    const restarted = await ev.ct('ct-restarted.txt');
    const killed = await ev.ct('ct-killed.txt');
    const slowBefore = commentCounters(await ev.json<NftJson>('observer-restarted.json'), 'observer');
    const slowAfter = commentCounters(await ev.json<NftJson>('observer-killed.json'), 'observer');
    for (const [vip, key] of [
      ['10.96.2.10', 'A'],
      ['10.96.2.20', 'N'],
    ] as const) {
      const was = expectBulk(restarted, 'tcp', vip, 5432, true);
      const now = expectBulk(killed, 'tcp', vip, 5432, true);
      expect(now.sport).toBe(was.sport);
      expect(slowAfter[key]! - slowBefore[key]!, `${vip}: no slow-path packet after the kill`).toBe(0);
    }
  });
});
