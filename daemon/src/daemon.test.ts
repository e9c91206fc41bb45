// The daemon's wiring, in process: a real FileSource on a temp directory, a real LinkWatcher on a
// private network namespace, and a MemoryKernel (degraded, like this machine) for the kernel.
// The real kernel and the real process are in main.process.test.ts.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '@slipstream/shared/adapters/log';
import { PolicyError } from '@slipstream/shared/core/policy';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns } from '../../test/lib/netns.ts';
import { type DaemonOptions, EXAMPLES_DIR } from './cli.ts';
import { flowKey } from './conntrack.ts';
import { cleanup, type RunningDaemon, requireNetns, runOnce, StartupError, startDaemon } from './daemon.ts';
import { parseDevicePatterns } from './devices.ts';
import { MemoryKernel } from './memory-kernel.ts';
import type { NodeStatus } from './status.ts';

interface Entry {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

function recorder(): Logger & { entries: Entry[] } {
  const entries: Entry[] = [];
  const at =
    (level: string) =>
    (msg: string, fields: Record<string, unknown> = {}) =>
      void entries.push({ level, msg, fields });
  return { entries, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

class CountingKernel extends MemoryKernel {
  closed = 0;
  override close(): void {
    this.closed++;
  }
}

const isRoot = canUseNetns({ nft: false }); // links need a namespace; the kernel is a MemoryKernel

async function until<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>) {
  for (let i = 0; i < 400; i++) {
    const value = await probe();
    if (value) return value;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const childProcesses = () => process.getActiveResourcesInfo().filter((r) => r === 'ProcessWrap').length;

describe.skipIf(!isRoot)('startDaemon / runOnce / cleanup (MemoryKernel, private netns for links)', () => {
  const ns = `slipstream-daemontest-${randomBytes(4).toString('hex')}`;
  let dir: string;
  const running: RunningDaemon[] = [];

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    dir = mkdtempSync(join(tmpdir(), 'slipstream-daemon-test-'));
    for (const f of ['services.yaml', 'namespaces.yaml']) copyFileSync(join(EXAMPLES_DIR, f), join(dir, f));
  });
  afterEach(async () => {
    for (const d of running.splice(0)) await d.stop();
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
    rmSync(dir, { recursive: true, force: true });
  });

  const options = (extra: Partial<DaemonOptions> = {}): DaemonOptions => ({
    source: { kind: 'files', dir },
    once: false,
    cleanup: false,
    resyncPeriodMs: 0,
    minSyncPeriodMs: 10,
    conntrackSamplePeriodMs: 0,
    netns: ns,
    devices: { include: [], exclude: [] },
    ...extra,
  });

  async function start(kernel: MemoryKernel, logger = recorder(), extra: Partial<DaemonOptions> = {}) {
    const daemon = await startDaemon(options(extra), { logger, openKernel: async () => kernel });
    running.push(daemon);
    return { daemon, logger };
  }

  it('first start writes the table; a restart on the same kernel adopts it and says so, with 0 writes', async () => {
    const kernel = new MemoryKernel({ flowtable: false });
    const first = await start(kernel);
    expect(first.daemon.reconciler.lastResult).toMatchObject({ trigger: 'startup', result: 'ok', writes: 1 });
    expect(first.logger.entries.filter((e) => /adopted/.test(e.msg))).toEqual([]);
    expect(first.logger.entries.filter((e) => e.msg.startsWith('degraded:'))).toHaveLength(1);
    await first.daemon.stop();
    const before = kernel.dump();

    const second = await start(kernel);
    expect(kernel.writes).toBe(1);
    expect(kernel.dump()).toBe(before);
    const adopted = second.logger.entries.filter((e) => /adopted the existing table, 0 writes/.test(e.msg));
    expect(adopted).toHaveLength(1);
    expect(adopted[0]).toMatchObject({
      level: 'info',
      fields: { trigger: 'startup', result: 'noop', writes: 0, readBack: true, drift: false, elements: 11 },
    });
    expect(second.logger.entries.some((e) => e.msg.startsWith('degraded:'))).toBe(true);
  });

  it('a later noop sync (not the start-up one) logs nothing', async () => {
    const kernel = new MemoryKernel({ flowtable: false });
    const { daemon, logger } = await start(kernel);
    const count = logger.entries.length;
    const result = await daemon.reconciler.sync('service');
    expect(result.result).toBe('noop');
    expect(logger.entries.slice(count)).toEqual([]);
  });

  it('follows the directory: a Service file added and removed', async () => {
    const kernel = new MemoryKernel({ flowtable: false });
    const { daemon } = await start(kernel);
    const extra = join(dir, 'zz-extra.yaml');
    try {
      writeFileSync(
        extra,
        'apiVersion: v1\nkind: Service\nmetadata: {name: extra, namespace: shop}\nspec:\n  clusterIP: 10.96.99.1\n  ports: [{name: postgres, port: 5432}]\n',
      );
      await until('the element added', () => kernel.table?.elements.has('ip 10.96.99.1 6 5432'));
      rmSync(extra);
      await until(
        'the element removed',
        () => kernel.table && !kernel.table.elements.has('ip 10.96.99.1 6 5432'),
      );
      expect(daemon.reconciler.lastResult?.result).toBe('ok');
    } finally {
      rmSync(extra, { force: true });
    }
  });

  it('runOnce prints the programmed ruleset and returns 0', async () => {
    const kernel = new CountingKernel({ flowtable: false });
    const printed: string[] = [];
    const code = await runOnce(options({ once: true }), {
      logger: recorder(),
      openKernel: async () => kernel,
      print: (t) => printed.push(t),
    });
    expect(code).toBe(0);
    expect(printed).toHaveLength(1);
    expect(printed[0]).toContain('table inet slipstream');
    expect(printed[0]).toContain('10.96.10.10 . tcp . 5432 : jump threshold-20');
    expect(kernel.closed).toBe(1);
  });

  it('runOnce returns 1 and prints nothing when the kernel refuses the transaction (its retry, and the structure alone)', async () => {
    const kernel = new CountingKernel({ flowtable: false });
    kernel.failNext(undefined, 3);
    const printed: string[] = [];
    const logger = recorder();
    const code = await runOnce(options({ once: true }), {
      logger,
      openKernel: async () => kernel,
      print: (t) => printed.push(t),
    });
    expect(code).toBe(1);
    expect(printed).toEqual([]);
    expect(kernel.writes).toBe(0);
    expect(
      logger.entries.some(
        (e) => e.level === 'error' && e.msg.startsWith('sync failed') && e.fields.result === 'error',
      ),
    ).toBe(true);
    expect(kernel.closed).toBe(1);
  });

  it('serves /healthz, /readyz, /status and /metrics; unknown paths are 404', async () => {
    const kernel = new MemoryKernel({ flowtable: false });
    const { daemon } = await start(kernel, recorder(), { healthListen: { host: '127.0.0.1', port: 0 } });
    const address = daemon.health?.address();
    if (!address || typeof address === 'string') throw new Error('no address');
    const base = `http://127.0.0.1:${address.port}`;
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    const body = (await ready.json()) as {
      ready: boolean;
      reason: string;
      lastSync: Record<string, unknown>;
    };
    expect(body).toMatchObject({ ready: true, reason: 'the kernel holds the desired state' });
    expect(body.lastSync).toMatchObject({ trigger: 'startup', result: 'ok', degraded: true });
    expect(body.lastSync).not.toHaveProperty('change');
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const status = (await (await fetch(`${base}/status`)).json()) as { source: string; ports: unknown[] };
    expect(status.source).toBe('daemon');
    expect(status.ports.length).toBeGreaterThan(0);
    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    expect(text).toContain('slipstream_degraded 1');
    expect(text).toMatch(/^slipstream_sync_duration_seconds_count\{mode="full"\} [1-9]/m);
    expect((await fetch(`${base}/nowhere`)).status).toBe(404);
  });

  it('--metrics-listen serves the metrics and nothing else (no /status with Service names)', async () => {
    const kernel = new MemoryKernel({ flowtable: false });
    const { daemon } = await start(kernel, recorder(), { metricsListen: { host: '127.0.0.1', port: 0 } });
    const address = daemon.metricsListener?.address();
    if (!address || typeof address === 'string') throw new Error('no address');
    const base = `http://127.0.0.1:${address.port}`;
    const text = await (await fetch(`${base}/metrics`)).text();
    expect(text).toMatch(/^slipstream_elements\{map="svc4"\} [1-9]/m);
    expect(text).toContain('slipstream_policy_info{policy="default@');
    for (const path of ['/status', '/healthz', '/readyz'])
      expect((await fetch(`${base}${path}`)).status).toBe(404);
    expect(daemon.health).toBeUndefined();
  });

  it('/status: the hooked devices, the links left out with the reason, offloaded connections and bytes per port', async () => {
    const ip = (...args: string[]) => execFileSync('ip', ['-n', ns, ...args]);
    ip('link', 'add', 'da', 'type', 'veth', 'peer', 'name', 'db');
    ip('link', 'add', 'skip0', 'type', 'veth', 'peer', 'name', 'skip1');
    ip('link', 'set', 'da', 'up');
    ip('link', 'set', 'skip0', 'up');
    try {
      const kernel = new MemoryKernel();
      let reads = 0;
      const daemon = await startDaemon(
        options({
          healthListen: { host: '127.0.0.1', port: 0 },
          devices: { include: [], exclude: parseDevicePatterns('skip*') },
        }),
        {
          logger: recorder(),
          openKernel: async () => kernel,
          readOffloaded: async () => {
            reads++;
            await new Promise((r) => setTimeout(r, 50));
            return new Map([[flowKey('10.96.10.10', 6, 5432), { connections: 2, packets: 30, bytes: 4096 }]]);
          },
        },
      );
      running.push(daemon);
      expect(kernel.table?.flowtable?.devices).toEqual(['da']);
      const address = daemon.health?.address();
      if (!address || typeof address === 'string') throw new Error('no address');
      const get = async () =>
        (await (await fetch(`http://127.0.0.1:${address.port}/status`)).json()) as NodeStatus;
      const before = reads;
      // Two requests at once share one conntrack read.
      const [status] = await Promise.all([get(), get()]);
      expect(reads - before).toBe(1);
      expect(status.devices).toEqual({
        hooked: ['da'],
        excluded: [
          { name: 'db', reason: 'DOWN: hooked once it comes UP' },
          { name: 'lo', reason: 'loopback: forwarded traffic never enters through it' },
          { name: 'skip0', reason: 'matched by --flowtable-exclude skip*' },
          { name: 'skip1', reason: 'matched by --flowtable-exclude skip*' },
        ],
      });
      const pg = status.ports.find((p) => p.service === 'shop/postgres' && p.port.startsWith('5432/'));
      expect(pg).toMatchObject({ offloaded: 2, offloadedBytes: 4096 });

      // A hooked link going DOWN stays hooked: no write.
      const writes = kernel.writes;
      ip('link', 'set', 'da', 'down');
      await until(
        'the link watcher saw da DOWN',
        () => daemon.devices().hooked.includes('da') && !daemon.links.links.find((l) => l.name === 'da')?.up,
      );
      await daemon.reconciler.sync('link');
      expect(kernel.writes).toBe(writes);
      expect(kernel.table?.flowtable?.devices).toEqual(['da']);
    } finally {
      ip('link', 'delete', 'da');
      ip('link', 'delete', 'skip0');
    }
  });

  it('a link created again under its name is hooked again, even when the kernel still lists its old hook at first', async () => {
    // The kernel unregisters a deleted link (dropping its hook) asynchronously: the first device list
    // read after the link events can still name it.
    class LateUnregister extends MemoryKernel {
      stale: string[] | null = null;
      override async readFlowtableDevices(): Promise<string[] | null> {
        const stale = this.stale;
        this.stale = null;
        return stale ?? super.readFlowtableDevices();
      }
    }
    const kernel = new LateUnregister({ flowtable: true });
    const ip = (...args: string[]) => execFileSync('ip', ['-n', ns, ...args]);
    ip('link', 'add', 'dr', 'type', 'veth', 'peer', 'name', 'dr1');
    ip('link', 'set', 'dr', 'up');
    try {
      await start(kernel);
      await until('dr hooked', () => kernel.table?.flowtable?.devices.includes('dr') === true);
      kernel.stale = [...kernel.table!.flowtable!.devices];
      // What the kernel does when dr goes: its hook is dropped (no nf_tables event for that).
      kernel.tamper(
        (t) => {
          t!.flowtable!.devices = t!.flowtable!.devices.filter((d) => d !== 'dr');
          return t;
        },
        { silent: true },
      );
      execFileSync('ip', ['-n', ns, '-batch', '-'], {
        input: 'link del dr\nlink add dr type veth peer name dr1\nlink set dr up\n',
      });
      await until('dr hooked again', () => kernel.table?.flowtable?.devices.includes('dr') === true);
    } finally {
      ip('link', 'delete', 'dr');
    }
  });

  it('a start-up that fails closes what it opened (kernel, link monitor) and says what is wrong', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const address = blocker.address();
    if (!address || typeof address === 'string') throw new Error('no address');
    try {
      const baseline = childProcesses();
      const kernel = new CountingKernel({ flowtable: false });
      const error = await startDaemon(options({ healthListen: { host: '127.0.0.1', port: address.port } }), {
        logger: recorder(),
        openKernel: async () => kernel,
      }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(StartupError);
      expect((error as Error).message).toMatch(/--health-listen 127\.0\.0\.1:\d+: .*EADDRINUSE/);
      expect(kernel.closed).toBe(1);
      // The `ip monitor link` child is gone (it would keep the process alive).
      await until('the link monitor to exit', () => childProcesses() <= baseline);
    } finally {
      await new Promise((r) => blocker.close(r));
    }
  });

  it('a services directory that is not there: StartupError naming it, kernel closed', async () => {
    const kernel = new CountingKernel({ flowtable: false });
    const error = await startDaemon(options({ source: { kind: 'files', dir: join(dir, 'nope') } }), {
      logger: recorder(),
      openKernel: async () => kernel,
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(StartupError);
    expect((error as Error).message).toContain(join(dir, 'nope'));
    expect(kernel.closed).toBe(1);
  });

  it('a policy file that is not there: PolicyError before anything is opened', async () => {
    let opened = false;
    const error = await startDaemon(options({ policy: join(dir, 'no-policy.yaml') }), {
      logger: recorder(),
      openKernel: async () => {
        opened = true;
        return new MemoryKernel();
      },
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(PolicyError);
    expect(opened).toBe(false);
  });

  it('a network namespace that does not exist is a StartupError, also for --cleanup (not "absent")', async () => {
    const missing = `slipstream-missing-${randomBytes(4).toString('hex')}`;
    await expect(requireNetns(missing)).rejects.toThrow(
      new StartupError(`network namespace "${missing}" does not exist (/run/netns/${missing})`),
    );
    await expect(requireNetns(ns)).resolves.toBeUndefined();
    await expect(requireNetns(undefined)).resolves.toBeUndefined();
    await expect(cleanup(missing)).rejects.toBeInstanceOf(StartupError);
    let opened = false;
    await expect(
      startDaemon(options({ netns: missing }), {
        logger: recorder(),
        openKernel: async () => {
          opened = true;
          return new MemoryKernel();
        },
      }),
    ).rejects.toBeInstanceOf(StartupError);
    expect(opened).toBe(false);
  });
});
