// Faults an operator meets, against the real kernel: someone else edits the daemon's table
// (`nft` from another process, in a private network namespace this file creates), and the loop,
// with its default timings, notices from the kernel's change events and repairs it. The old loop
// noticed only at the hourly resync; these waits are far shorter than that. How fast the repair
// is, is measured by the daemon benchmark (daemon.driftRepairMs), not asserted here.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { memoryLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { USER_KEYS } from '@slipstream/shared/core/contract';
import { desiredRuleset } from '@slipstream/shared/core/desired-ruleset';
import { parseTable } from '@slipstream/shared/core/nft-listing';
import type { Ruleset } from '@slipstream/shared/core/ruleset';
import type { Service } from '@slipstream/shared/core/service';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { canUseNetns } from '../../test/lib/netns.ts';
import { NapiKernel } from './kernel.ts';
import { Reconciler } from './reconciler.ts';

const policy = loadDefaultPolicy();
const NAMESPACES = [{ name: 'shop', labels: {} }];

function svc(
  name: string,
  ip: string,
  ports: { port: number; protocol: 'TCP' | 'UDP' }[] = [{ port: 5432, protocol: 'TCP' }],
  annotations: Record<string, string> = {},
): Service {
  return { namespace: 'shop', name, annotations, type: 'ClusterIP', clusterIPs: [ip], ports };
}

/** The kernel-facing part of a ruleset, as `nft` lists it. */
function view(r: Ruleset | null) {
  if (!r) return null;
  const chains = [...r.chains]
    .map(([name, c]) => ({ name, base: c.base, rules: c.rules }))
    .sort((a, b) => a.name.localeCompare(b.name));
  const elements = [...r.elements.keys()].sort().map((k) => [k, r.elements.get(k)!.threshold]);
  return { flowtable: r.flowtable, maps: r.maps, chains, elements, foreign: r.foreign };
}

describe.skipIf(!canUseNetns())('faults repaired by the loop, on the real kernel', () => {
  const ns = `slipstream-faults-${randomBytes(4).toString('hex')}`;
  const nft = (...args: string[]) =>
    execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  const listed = () => {
    try {
      return parseTable(JSON.parse(nft('-j', 'list', 'table', 'inet', 'slipstream')));
    } catch {
      return null;
    }
  };
  let kernel: NapiKernel;
  let r: Reconciler;
  const logger = memoryLogger();
  let services: Service[];

  const want = () =>
    desiredRuleset({
      services,
      namespaces: new Map(NAMESPACES.map((n) => [n.name, n])),
      devices: [],
      nodeAddresses: ['192.168.7.1', 'fd00:7::1'],
      capabilities: { flowtable: false },
      policy,
    });
  const equalsWanted = () => JSON.stringify(view(listed())) === JSON.stringify(view(want()));
  async function until(what: string, ok: () => boolean, ms = 10_000): Promise<number> {
    const t0 = Date.now();
    while (!ok()) {
      if (Date.now() - t0 > ms) throw new Error(`not within ${ms} ms: ${what}`);
      await new Promise((res) => setTimeout(res, 25));
    }
    return Date.now() - t0;
  }

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    kernel = await NapiKernel.open({ netns: ns });
    // Default timings: 1 s minimum sync interval, hourly resync.
    r = new Reconciler({ kernel, policy, logger });
    services = [svc('db', '10.96.1.1'), svc('cache', '10.96.1.2', [{ port: 6379, protocol: 'TCP' }])];
    r.update({ services, namespaces: NAMESPACES, devices: [], nodeAddresses: ['192.168.7.1', 'fd00:7::1'] });
    expect((await r.start()).result).toBe('ok');
    expect(equalsWanted()).toBe(true);
  });
  afterAll(async () => {
    await r?.stop();
    kernel?.close();
    execFileSync('ip', ['netns', 'delete', ns]);
  });
  afterEach(async () => {
    await until('the table is as desired again', equalsWanted);
  });

  it.each([
    ['a flushed map', 'flush map inet slipstream svc4'],
    ['a deleted table', 'delete table inet slipstream'],
    ['a rogue element', 'add element inet slipstream svc4 { 10.9.9.9 . tcp . 22 : jump threshold-20 }'],
    ['a deleted base chain', 'delete chain inet slipstream forward'],
    [
      'a foreign set and chain',
      'add set inet slipstream intruders { type ipv4_addr; }; add chain inet slipstream sneaky',
    ],
    ['a rule added to its chain', 'add rule inet slipstream forward ip saddr 10.0.0.1 drop'],
    [
      'the map re-created with size 3',
      'flush chain inet slipstream forward; delete map inet slipstream svc4; add map inet slipstream svc4 { type ipv4_addr . inet_proto . inet_service : verdict; size 3; }',
    ],
    [
      'the map re-created with other flags',
      'flush chain inet slipstream forward; delete map inet slipstream svc4; add map inet slipstream svc4 { type ipv4_addr . inet_proto . inet_service : verdict; flags timeout; }',
    ],
  ])('%s: noticed from the kernel, repaired, and said so', async (_what, command) => {
    const before = logger.lines.length;
    const repair = r.nextSync((x) => x.trigger === 'drift' && x.drift);
    nft(command);
    await repair;
    expect(equalsWanted()).toBe(true);
    const said = logger.lines.slice(before);
    expect(
      said.some((l) => l.msg.startsWith('someone else changed the table') && l.fields?.process === 'nft'),
    ).toBe(true);
    expect(
      said.some((l) => l.msg === 'sync' && l.fields?.drift === true && l.fields?.trigger === 'drift'),
    ).toBe(true);
  });

  it('a Service added while the map is full of foreign size still reaches the kernel', async () => {
    nft(
      'flush chain inet slipstream forward; delete map inet slipstream svc4; add map inet slipstream svc4 { type ipv4_addr . inet_proto . inet_service : verdict; size 3; }',
    );
    services = [
      ...services,
      svc('queue', '10.96.1.3', [{ port: 5672, protocol: 'TCP' }]),
      svc('search', '10.96.1.4', [{ port: 9200, protocol: 'TCP' }]),
    ];
    r.update({ services });
    r.request('service');
    await until('all four Services in the kernel', () => listed()?.elements.size === 4);
    expect(r.quarantined).toEqual([]);
  });

  it('a Service with 131,070 ports is decided and shown; every other Service is still programmed', async () => {
    const ports = Array.from({ length: 65535 }, (_, i) => i + 1).flatMap((port) => [
      { port, protocol: 'TCP' as const },
      { port, protocol: 'UDP' as const },
    ]);
    const huge = svc('everything', '10.96.1.9', ports, { [USER_KEYS.acceleration]: 'enabled' });
    services = [...services, huge, svc('late', '10.96.1.10')];
    r.update({ services });
    r.request('service');
    await until(
      'the late Service in the kernel',
      () => listed()?.elements.has('ip 10.96.1.10 6 5432') === true,
      30_000,
    );
    expect(r.desired?.services.get('shop/everything')?.decision.reason).toBeTruthy();
  });

  it("checks its own commits against the kernel's events, and they agree (Services, node addresses)", async () => {
    const before = logger.lines.length;
    services = [...services, svc('queue2', '10.96.1.20', [{ port: 5672, protocol: 'TCP' }])];
    r.update({ services, nodeAddresses: ['192.168.7.1', '192.168.7.2', 'fd00:7::1'] });
    await r.sync('service');
    await new Promise((res) => setTimeout(res, 500));
    expect(logger.lines.slice(before).filter((l) => l.msg === 'reading the table back')).toEqual([]);
    r.update({ nodeAddresses: ['192.168.7.1', 'fd00:7::1'] });
    await r.sync('link');
  });

  it('converges to what a fresh start programs, whatever Services and foreign edits came before (property)', async () => {
    const edits = [
      'flush map inet slipstream svc4',
      'delete table inet slipstream',
      'add element inet slipstream svc4 { 10.9.9.8 . udp . 53 : jump threshold-20 }',
      'add chain inet slipstream sneaky',
      'add rule inet slipstream forward accept',
    ];
    const arbStep = fc.oneof(
      fc.record({ kind: fc.constant('edit' as const), command: fc.constantFrom(...edits) }),
      fc.record({
        kind: fc.constant('services' as const),
        ips: fc.uniqueArray(fc.integer({ min: 1, max: 6 }), { maxLength: 4 }),
        threshold: fc.constantFrom(undefined, '5', '20', '300'),
      }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(arbStep, { minLength: 1, maxLength: 5 }), async (steps) => {
        for (const step of steps) {
          if (step.kind === 'edit') {
            try {
              nft(step.command);
            } catch {
              // An edit that does not apply to the table as it is now (no table, no map) is no edit.
            }
          } else {
            services = step.ips.map((i) =>
              svc(
                `s${i}`,
                `10.96.2.${i}`,
                [{ port: 5432, protocol: 'TCP' }],
                step.threshold ? { [USER_KEYS.packetThreshold]: step.threshold } : {},
              ),
            );
            r.update({ services });
            r.request('service');
          }
        }
        await until('converged', equalsWanted);
        // A fresh start on the same inputs, in a fresh namespace, programs the same table.
        const fresh = `${ns}-fresh`;
        execFileSync('ip', ['netns', 'add', fresh]);
        const k2 = await NapiKernel.open({ netns: fresh });
        const r2 = new Reconciler({ kernel: k2, policy, logger: memoryLogger(), resyncIntervalMs: 0 });
        try {
          r2.update({
            services,
            namespaces: NAMESPACES,
            devices: [],
            nodeAddresses: ['192.168.7.1', 'fd00:7::1'],
          });
          await r2.start();
          const other = parseTable(
            JSON.parse(
              execFileSync(
                'ip',
                ['netns', 'exec', fresh, 'nft', '-j', 'list', 'table', 'inet', 'slipstream'],
                { encoding: 'utf8' },
              ),
            ),
          );
          expect(view(listed())).toEqual(view(other));
        } finally {
          await r2.stop();
          k2.close();
          execFileSync('ip', ['netns', 'delete', fresh]);
        }
      }),
      { numRuns: 12 },
    );
  }, 240_000);
});
