// Wires the edges to the core: a Service source and the link watcher feed the Reconciler, which
// owns the kernel. Everything here is lifecycle (start, signals, health, shutdown); decisions and
// rulesets are computed in shared/.

import { createServer, type Server } from 'node:http';
import type { Logger } from '@slipstream/shared/adapters/log';
import { type PolicyWatch, watchPolicy } from '@slipstream/shared/adapters/policy-watch';
import { formatRuleset } from '@slipstream/shared/core/nft-json';
import { TABLE_NAME } from '@slipstream/shared/core/ruleset';
import type { DaemonOptions } from './cli.ts';
import { type Kernel, NapiKernel, netnsPath } from './kernel.ts';
import { LinkWatcher } from './links.ts';
import { Reconciler, type SyncResult } from './reconciler.ts';
import { FileSource } from './sources/files.ts';
import type { ServiceSource } from './sources/source.ts';
import { requireNetns, StartupError } from './startup.ts';

export { requireNetns, StartupError };

export interface DaemonDeps {
  logger: Logger;
  /** Opens the kernel edge (tests may pass a MemoryKernel). */
  openKernel?: (netns?: string) => Promise<Kernel>;
  /** Where --once prints what it programmed. */
  print?: (text: string) => void;
}

export interface RunningDaemon {
  reconciler: Reconciler;
  source: ServiceSource;
  links: LinkWatcher;
  health: Server | undefined;
  /** Stops watchers and timers; leaves the kernel table in place. */
  stop(): Promise<void>;
}

/** The Kubernetes client is imported only when it is used: loading it costs more than the rest of the daemon. */
async function makeSource(options: DaemonOptions, logger: Logger): Promise<ServiceSource> {
  if (options.source.kind === 'files') return new FileSource({ dir: options.source.dir, log: logger });
  const { KubernetesSource } = await import('./sources/kubernetes.ts');
  return new KubernetesSource({
    ...(options.source.kubeconfig ? { kubeconfig: options.source.kubeconfig } : {}),
    log: logger,
  });
}

/** Removes Slipstream's table; a table that is not there is not an error. */
export async function cleanup(netns: string | undefined): Promise<'removed' | 'absent'> {
  await requireNetns(netns);
  const { NftContext, NftError } = await import('nftables-napi');
  const ctx = new NftContext(netns ? { netns: netnsPath(netns) } : {});
  try {
    await ctx.run({ nftables: [{ delete: { table: { family: 'inet', name: TABLE_NAME } } }] });
    return 'removed';
  } catch (error) {
    if (error instanceof NftError && error.errorClass === 'no-such-object') return 'absent';
    throw error;
  } finally {
    ctx.close();
  }
}

function summary(r: SyncResult): Record<string, unknown> {
  const { change: _change, ...rest } = r;
  return rest;
}

function serveHealth(
  listen: { host: string; port: number },
  reconciler: Reconciler,
  logger: Logger,
): Promise<Server> {
  const server = createServer((req, res) => {
    const last = reconciler.lastResult;
    const body = {
      lastSync: last ? summary(last) : null,
      lastSuccessAt: reconciler.lastSuccessAt?.toISOString() ?? null,
    };
    // Alive while the process answers: a kernel that refuses a rule is retried with backoff, and a
    // restart would not help it. Ready once one sync has reached the kernel.
    const ok = req.url === '/healthz' || (req.url === '/readyz' && reconciler.lastSuccessAt !== null);
    const known = req.url === '/healthz' || req.url === '/readyz';
    res.writeHead(known ? (ok ? 200 : 503) : 404, { 'content-type': 'application/json' });
    res.end(JSON.stringify(known ? body : { error: 'not found' }));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      logger.info('health endpoint listening', { address: server.address() });
      resolve(server);
    });
  });
}

/** Starts the daemon; resolves once the first sync has run. On failure, everything it opened is closed again. */
export async function startDaemon(options: DaemonOptions, deps: DaemonDeps): Promise<RunningDaemon> {
  const { logger } = deps;
  await requireNetns(options.netns);
  // Whatever is opened is closed again when start-up fails: a watcher or timer left behind would
  // keep the process alive (and restarting `ip monitor`) after the fatal error.
  const closers: (() => void | Promise<void>)[] = [];
  const closeAll = async () => {
    for (const close of closers.splice(0).reverse()) {
      try {
        await close();
      } catch (error) {
        logger.warn('closing failed', { error: String(error) });
      }
    }
  };
  try {
    return await start(options, deps, closers, closeAll);
  } catch (error) {
    await closeAll();
    throw error;
  }
}

async function start(
  options: DaemonOptions,
  deps: DaemonDeps,
  closers: (() => void | Promise<void>)[],
  closeAll: () => Promise<void>,
): Promise<RunningDaemon> {
  const { logger } = deps;
  const policyWatch: PolicyWatch = watchPolicy(options.policy, {
    onReload: (policy, previous) => {
      logger.info('policy reloaded', { policy: policy.id, previous: previous.id });
      reconciler.setPolicy(policy);
      reconciler.request('service');
    },
    onError: (error, kept) =>
      logger.error('policy not reloaded; keeping the last good one', { error: error.message, kept: kept.id }),
  });
  closers.push(() => policyWatch.close());
  const kernel = await (deps.openKernel ?? ((netns) => NapiKernel.open(netns ? { netns } : {})))(
    options.netns,
  );
  closers.push(() => kernel.close());
  const links = new LinkWatcher({
    ...(options.netns ? { netns: options.netns } : {}),
    logger,
    onChange: (devices) => {
      reconciler.update({ devices });
      reconciler.request('link');
    },
  });
  closers.push(() => links.stop());
  const reconciler = new Reconciler({
    kernel,
    policy: policyWatch.current(),
    minSyncIntervalMs: options.minSyncPeriodMs,
    resyncIntervalMs: options.once ? 0 : options.resyncPeriodMs,
    refreshDevices: () => links.refresh(),
    logger,
  });
  closers.push(() => reconciler.stop());
  // The reconciler logs every sync that writes or fails; here only the start-up state an operator
  // must see: degraded mode, and a start-up that found the kernel already right (which the
  // reconciler does not log, being a noop).
  reconciler.onSync((r) => {
    if (r.trigger !== 'startup') return;
    if (r.result === 'noop' && r.waitingFor === undefined) {
      logger.info('startup sync: adopted the existing table, 0 writes', summary(r));
    }
    if (r.degraded) {
      logger.warn(
        'degraded: this kernel has no flowtable support; maps, chains and counters are kept, flow add is left out',
        {
          reason: r.degradedReason,
        },
      );
    }
  });

  const source = await makeSource(options, logger);
  closers.push(() => source.stop());
  try {
    await source.start();
  } catch (error) {
    throw new StartupError(`reading Services failed: ${(error as Error).message}`);
  }
  const snapshot = source.snapshot();
  for (const r of snapshot.rejected) logger.warn('Service not read', { ref: r.ref, error: r.error });
  reconciler.update(snapshot);
  reconciler.update({ devices: await links.start() });
  source.onChange((trigger) => {
    reconciler.update(source.snapshot());
    reconciler.request(trigger);
  });
  await reconciler.start();
  let health: Server | undefined;
  if (options.healthListen) {
    try {
      health = await serveHealth(options.healthListen, reconciler, logger);
    } catch (error) {
      const { host, port } = options.healthListen;
      throw new StartupError(`--health-listen ${host}:${port}: ${(error as Error).message}`);
    }
  }

  if (health) {
    const server = health;
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  }
  return {
    reconciler,
    source,
    links,
    health,
    // In the reverse order of the start: health, source, reconciler (waits for a running sync),
    // links, kernel, policy watch.
    stop: closeAll,
  };
}

/** `--once`: one sync, what it programmed on stdout, exit code 0 or 1. */
export async function runOnce(options: DaemonOptions, deps: DaemonDeps): Promise<number> {
  const daemon = await startDaemon(options, deps);
  try {
    const result = daemon.reconciler.lastResult;
    const desired = daemon.reconciler.desired;
    if (desired && result?.result !== 'error') (deps.print ?? console.log)(formatRuleset(desired));
    return result && result.result !== 'error' ? 0 : 1;
  } finally {
    await daemon.stop();
  }
}
