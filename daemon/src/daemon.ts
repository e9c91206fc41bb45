// Wires the edges to the core: a Service source and the link watcher feed the Reconciler, which
// owns the kernel. Everything here is lifecycle (start, signals, health, shutdown); decisions and
// rulesets are computed in shared/.

import { createServer, type Server } from 'node:http';
import { formatRuleset } from '@slipstream/shared/nft-json';
import { type PolicyWatch, watchPolicy } from '@slipstream/shared/policy-watch';
import { TABLE_NAME } from '@slipstream/shared/ruleset';
import type { DaemonOptions } from './cli.ts';
import { type Kernel, NapiKernel, netnsPath } from './kernel.ts';
import { LinkWatcher } from './links.ts';
import { type Logger, Reconciler, type SyncResult } from './reconciler.ts';
import { FileSource } from './sources/files.ts';
import { KubernetesSource } from './sources/kubernetes.ts';
import type { Log, ServiceSource } from './sources/source.ts';

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

function sourceLog(logger: Logger): Log {
  return (level, message, fields) => {
    if (level === 'debug') return;
    logger[level === 'info' ? 'info' : level](message, fields);
  };
}

function makeSource(options: DaemonOptions, logger: Logger): ServiceSource {
  const log = sourceLog(logger);
  return options.source.kind === 'files'
    ? new FileSource({ dir: options.source.dir, log })
    : new KubernetesSource({
        ...(options.source.kubeconfig ? { kubeconfig: options.source.kubeconfig } : {}),
        log,
      });
}

/** Removes Slipstream's table; a table that is not there is not an error. */
export async function cleanup(netns: string | undefined): Promise<'removed' | 'absent'> {
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

/** Starts the daemon; resolves once the first sync has run. */
export async function startDaemon(options: DaemonOptions, deps: DaemonDeps): Promise<RunningDaemon> {
  const { logger } = deps;
  let policyWatch: PolicyWatch | undefined;
  policyWatch = watchPolicy(options.policy, {
    onReload: (policy, previous) => {
      logger.info('policy reloaded', { policy: policy.id, previous: previous.id });
      reconciler.setPolicy(policy);
      reconciler.request('service');
    },
    onError: (error, kept) =>
      logger.error('policy not reloaded; keeping the last good one', { error: error.message, kept: kept.id }),
  });
  const kernel = await (deps.openKernel ?? ((netns) => NapiKernel.open(netns ? { netns } : {})))(
    options.netns,
  );
  const links = new LinkWatcher({
    ...(options.netns ? { netns: options.netns } : {}),
    logger,
    onChange: (devices) => {
      reconciler.update({ devices });
      reconciler.request('link');
    },
  });
  const reconciler = new Reconciler({
    kernel,
    policy: policyWatch.current(),
    minSyncIntervalMs: options.minSyncPeriodMs,
    resyncIntervalMs: options.once ? 0 : options.resyncPeriodMs,
    refreshDevices: () => links.refresh(),
    logger,
  });
  // The reconciler logs every sync itself; here only the start-up state an operator must see.
  reconciler.onSync((r) => {
    if (r.degraded && r.trigger === 'startup') {
      logger.warn(
        'degraded: this kernel has no flowtable support; maps, chains and counters are kept, flow add is left out',
        {
          reason: r.degradedReason,
        },
      );
    }
  });

  const source = makeSource(options, logger);
  await source.start();
  const snapshot = source.snapshot();
  for (const r of snapshot.rejected) logger.warn('Service not read', { ref: r.ref, error: r.error });
  reconciler.update(snapshot);
  reconciler.update({ devices: await links.start() });
  source.onChange((trigger) => {
    reconciler.update(source.snapshot());
    reconciler.request(trigger);
  });
  await reconciler.start();
  const health = options.healthListen
    ? await serveHealth(options.healthListen, reconciler, logger)
    : undefined;

  return {
    reconciler,
    source,
    links,
    health,
    async stop() {
      policyWatch?.close();
      policyWatch = undefined;
      links.stop();
      await source.stop();
      await reconciler.stop();
      await new Promise<void>((resolve) => (health ? health.close(() => resolve()) : resolve()));
      kernel.close();
    },
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
