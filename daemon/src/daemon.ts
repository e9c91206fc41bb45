// Wires the edges to the core: a Service source and the link watcher feed the Reconciler, which
// owns the kernel. Everything here is lifecycle (start, signals, health, shutdown); decisions and
// rulesets are computed in shared/.

import type { Server } from 'node:http';
import { type Logger, LogOnce } from '@slipstream/shared/adapters/log';
import { createMetricsRegistry, PolicyMetrics, serveMetrics } from '@slipstream/shared/adapters/metrics';
import { type PolicyWatch, watchPolicy } from '@slipstream/shared/adapters/policy-watch';
import { effectiveDecision } from '@slipstream/shared/core/decide';
import { rulesetText } from '@slipstream/shared/core/nft-text';
import { AddressWatcher } from './addresses.ts';
import type { DaemonOptions } from './cli.ts';
import { compactHeap, isBulk } from './compact.ts';
import {
  type ConntrackError,
  type OffloadedFlows,
  readOffloadedFlows,
  SharedRead,
  sampleOffloaded,
} from './conntrack.ts';
import { type DeviceChoice, DeviceSelector } from './devices.ts';
import { serveEndpoints } from './http.ts';
import { type Kernel, NapiKernel } from './kernel.ts';
import { type LinkInfo, LinkWatcher } from './links.ts';
import { DaemonMetrics } from './metrics.ts';
import { Reconciler, type SyncResult } from './reconciler.ts';
import { FileSource } from './sources/files.ts';
import type { ServiceSource } from './sources/source.ts';
import { requireNetns, StartupError } from './startup.ts';
import { type NodeStatus, portStatuses } from './status.ts';

export { requireNetns, StartupError };

/** How long after a link change the kernel's flowtable devices are read once more. */
const LINK_RELOOK_MS = 1500;

export interface DaemonDeps {
  logger: Logger;
  /** Opens the kernel edge (tests may pass a MemoryKernel). */
  openKernel?: (netns?: string) => Promise<Kernel>;
  /** Where --once prints what it programmed. */
  print?: (text: string) => void;
  /** Reads the offloaded connections (tests may pass their own); conntrack by default. */
  readOffloaded?: (
    netns?: string,
    onError?: (error: ConntrackError) => void,
  ) => Promise<OffloadedFlows | null>;
}

export interface RunningDaemon {
  reconciler: Reconciler;
  source: ServiceSource;
  links: LinkWatcher;
  /** Which links the flowtable hooks, and why the others are left out (the latest listing). */
  devices(): DeviceChoice;
  health: Server | undefined;
  /** The daemon's Prometheus metrics (fed by the loop's sync results and conntrack samples). */
  metrics: DaemonMetrics;
  /** The --metrics-listen listener. */
  metricsListener: Server | undefined;
  /** SIGHUP: re-reads the policy file and the manifests directory, and reads the table back. */
  reload(): Promise<void>;
  /** Stops watchers and timers; leaves the kernel table in place. */
  stop(): Promise<void>;
}

/**
 * The Service source. client-node is loaded only for the Kubernetes source: in files mode (the
 * embedded default, the VM scenarios, the demo) it would cost seconds of start-up and tens of MB.
 */
async function makeSource(options: DaemonOptions, logger: Logger): Promise<ServiceSource> {
  if (options.source.kind === 'files') return new FileSource({ dir: options.source.dir, log: logger });
  const { KubernetesSource } = await import('./sources/kubernetes.ts');
  return new KubernetesSource({
    ...(options.source.kubeconfig ? { kubeconfig: options.source.kubeconfig } : {}),
    log: logger,
  });
}

/** Removes Slipstream's table through the kernel edge; a table that is not there is not an error. */
export async function cleanup(
  netns: string | undefined,
  openKernel: (netns?: string) => Promise<Kernel> = (ns) => NapiKernel.open(ns ? { netns: ns } : {}),
): Promise<'removed' | 'absent'> {
  await requireNetns(netns);
  const kernel = await openKernel(netns);
  try {
    return await kernel.removeTable();
  } finally {
    kernel.close();
  }
}

function summary(r: SyncResult): Record<string, unknown> {
  const { change: _change, ...rest } = r;
  return rest;
}

/** The node's status from the running loop: what is wanted, what the kernel holds, what is held out. */
export function nodeStatus(
  reconciler: Reconciler,
  offloaded: OffloadedFlows | null = null,
  devices: DeviceChoice | null = null,
): NodeStatus {
  const caps = reconciler.capabilities;
  const desired = reconciler.desired;
  const belief = reconciler.belief;
  const quarantined = new Map(reconciler.quarantined.map((q) => [q.key, { key: q.key, reason: q.reason }]));
  const services = [...reconciler.services.values()];
  const policy = reconciler.policy;
  return {
    degraded: caps ? !caps.flowtable || caps.flowtableCounter === false : true,
    ...(caps?.reason ? { degradedReason: caps.reason } : {}),
    tablePresent: belief !== null && belief !== undefined,
    source: 'daemon',
    quarantined: quarantined.size,
    ready: reconciler.readiness(),
    ...(caps?.flowtable
      ? {
          devices: {
            hooked: belief?.flowtable?.devices ?? desired?.flowtable?.devices ?? [],
            ...(devices ? { excluded: devices.excluded } : {}),
          },
        }
      : {}),
    ports: desired
      ? portStatuses(
          services,
          desired,
          belief ?? null,
          offloaded,
          (s) => effectiveDecision(s, policy, reconciler.namespaces.get(s.namespace)),
          quarantined,
        )
      : [],
  };
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
      policyMetrics.reloaded(policy.id);
      reconciler.setPolicy(policy);
      reconciler.request('service');
    },
    onError: (error, kept) => {
      policyMetrics.failed();
      logger.error('policy not reloaded; keeping the last good one', { error: error.message, kept: kept.id });
    },
  });
  closers.push(() => policyWatch.close());
  const registry = createMetricsRegistry('daemon');
  const policyMetrics = new PolicyMetrics(registry, policyWatch.current().id);
  const onStray = (text: string) => logger.warn('libnftables printed', { text });
  const kernel = await (
    deps.openKernel ?? ((netns) => NapiKernel.open({ ...(netns ? { netns } : {}), onStray }))
  )(options.netns);
  closers.push(() => kernel.close());
  const selector = new DeviceSelector(options.devices);
  let choice: DeviceChoice = { hooked: [], excluded: [] };
  const choose = (listed: LinkInfo[]): string[] => {
    choice = selector.select(listed);
    return choice.hooked;
  };
  // The kernel unregisters a deleted link (and drops its flowtable hook) asynchronously: a link
  // deleted and created again under its name may still be listed as hooked right after. So the
  // kernel's device list is read after every link change and once more a little later.
  let relook: NodeJS.Timeout | undefined;
  const links = new LinkWatcher({
    ...(options.netns ? { netns: options.netns } : {}),
    logger,
    onChange: (listed) => {
      reconciler.update({ devices: choose(listed) });
      reconciler.request('link');
      clearTimeout(relook);
      relook = setTimeout(() => reconciler.request('link'), LINK_RELOOK_MS);
      relook.unref();
    },
  });
  closers.push(() => {
    clearTimeout(relook);
    links.stop();
  });
  const addresses = new AddressWatcher({
    ...(options.netns ? { netns: options.netns } : {}),
    logger,
    onChange: (nodeAddresses) => {
      reconciler.update({ nodeAddresses });
      reconciler.request('address');
    },
  });
  closers.push(() => addresses.stop());
  // One conntrack read per status request (concurrent requests share it); evictions read afresh;
  // the metrics sample on their own period. A failure is logged once, whoever read.
  const conntrackLog = new LogOnce();
  const conntrackFailed = (error: ConntrackError) =>
    conntrackLog.report('conntrack', error.reason, () =>
      logger.warn(
        'cannot read conntrack: offloaded connections are not counted, and evictions are not skipped',
        { error: error.message },
      ),
    );
  const read =
    deps.readOffloaded ?? ((netns, onError) => readOffloadedFlows(netns ? { netns } : {}, onError));
  const readFlows = async () => {
    const flows = await read(options.netns, conntrackFailed);
    if (flows) conntrackLog.clear('conntrack');
    return flows;
  };
  const sharedFlows = new SharedRead(readFlows);
  const reconciler = new Reconciler({
    kernel,
    policy: policyWatch.current(),
    minSyncIntervalMs: options.minSyncPeriodMs,
    resyncIntervalMs: options.once ? 0 : options.resyncPeriodMs,
    refreshDevices: async () => choose(await links.refresh()),
    readOffloaded: readFlows,
    logger,
  });
  closers.push(() => reconciler.stop());
  const metrics = new DaemonMetrics(registry, reconciler);
  // The first sync and each read-back leave their garbage (compact.ts): collected off the loop's turn.
  reconciler.onSync((r) => {
    if (isBulk(r)) setImmediate(() => compactHeap());
  });
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
  try {
    reconciler.update({ nodeAddresses: await addresses.start() });
  } catch (error) {
    // Without them nodePorts match nothing; everything else works.
    logger.warn("cannot list this node's addresses; nodePorts are not accelerated", { error: String(error) });
  }
  const listed = await links.start();
  // Links the flowtable hooked before this start stay hooked, DOWN ones too (devices.ts).
  const hooked = await kernel.readFlowtableDevices().catch(() => null);
  if (hooked) selector.adopt(hooked, listed);
  reconciler.update({ devices: choose(listed) });
  source.onChange(({ trigger, service }) => {
    // One Service changed: only it goes to the loop. Otherwise the whole snapshot (compared there).
    if (service?.value) reconciler.setService(service.value);
    else if (service) reconciler.deleteService(service.namespace, service.name);
    else reconciler.update(source.snapshot());
    reconciler.request(trigger);
  });
  await reconciler.start();
  if (options.conntrackSamplePeriodMs > 0 && !options.once) {
    const stopSampling = sampleOffloaded({
      periodMs: options.conntrackSamplePeriodMs,
      ...(options.netns ? { netns: options.netns } : {}),
      // A degraded kernel offloads nothing: no need to list conntrack.
      idle: () => reconciler.capabilities?.flowtable !== true,
      onReading: (reading) => {
        conntrackLog.clear('conntrack');
        metrics.sampled(reading);
      },
      onFailure: (error) => {
        metrics.sampleFailed(error.reason);
        conntrackFailed(error);
      },
    });
    closers.push(stopSampling);
  }
  let health: Server | undefined;
  if (options.healthListen) {
    try {
      health = await serveEndpoints(
        options.healthListen,
        {
          lastSync: () => (reconciler.lastResult ? summary(reconciler.lastResult) : null),
          lastSuccessAt: () => reconciler.lastSuccessAt?.toISOString() ?? null,
          readiness: () => reconciler.readiness(),
          status: async () => nodeStatus(reconciler, await sharedFlows.read(), choice),
          metrics: registry,
        },
        logger,
      );
    } catch (error) {
      const { host, port } = options.healthListen;
      throw new StartupError(`--health-listen ${host}:${port}: ${(error as Error).message}`);
    }
  }

  if (health) {
    const server = health;
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  }
  let metricsListener: Server | undefined;
  if (options.metricsListen) {
    try {
      metricsListener = await serveMetrics(options.metricsListen, registry, logger);
    } catch (error) {
      const { host, port } = options.metricsListen;
      throw new StartupError(`--metrics-listen ${host}:${port}: ${(error as Error).message}`);
    }
    const server = metricsListener;
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  }
  return {
    reconciler,
    source,
    links,
    devices: () => choice,
    health,
    metrics,
    metricsListener,
    reload: async () => {
      policyWatch.check();
      if (source instanceof FileSource) await source.rescan();
      reconciler.request('resync');
    },
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
    if (desired && result?.result !== 'error') (deps.print ?? console.log)(rulesetText(desired).trimEnd());
    return result && result.result !== 'error' ? 0 : 1;
  } finally {
    await daemon.stop();
  }
}
