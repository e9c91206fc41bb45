// The real daemon process (`node daemon/src/main.ts`) and `slipstream status`, against the real
// kernel of this machine (no flowtable support: degraded) in a private network namespace, fed
// from a temp manifests directory. The kernel is observed through the nft CLI, independently of
// the daemon's own kernel edge. No timing assertions: every wait polls a condition, bounded.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { canUseNetns, kernelState, netnsName, nftJson } from '../../test/lib/netns.ts';
import {
  freePort,
  type LogEntry,
  DAEMON_MAIN as MAIN,
  Proc,
  run as runWith,
  STATUS_MAIN,
  until,
} from '../../test/lib/process.ts';
import { EXAMPLES_DIR } from './cli.ts';

const ENV: Record<string, string | undefined> = { ...process.env, OTEL_TRACES_EXPORTER: 'none' };
delete ENV.KUBERNETES_SERVICE_HOST;
delete ENV.OTEL_EXPORTER_OTLP_ENDPOINT;
delete ENV.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;

const run = (script: string, args: string[]) => runWith(script, args, { env: ENV });

// The Services used here, copied from the shipped examples, one file each.
function exampleDocs(): Map<string, Record<string, unknown>> {
  const docs = new Map<string, Record<string, unknown>>();
  for (const file of ['services.yaml', 'namespaces.yaml']) {
    for (const d of parseAllDocuments(readFileSync(join(EXAMPLES_DIR, file), 'utf8'))) {
      const object = d.toJS() as { kind: string; metadata: { name: string; namespace?: string } };
      const { kind, metadata } = object;
      docs.set(
        kind === 'Namespace' ? `namespace/${metadata.name}` : `${metadata.namespace}/${metadata.name}`,
        object,
      );
    }
  }
  return docs;
}

const POSTGRES = 'svc4 10.96.10.10 tcp 5432 -> threshold-20';
const REDIS = 'svc4 10.96.10.11 tcp 6379 -> threshold-20';
const IPERF3_TCP = 'svc4 10.96.20.20 tcp 5201 -> threshold-20';
const IPERF3_UDP = 'svc4 10.96.20.20 udp 5201 -> threshold-20';
const WHOAMI = 'svc4 10.96.30.10 tcp 80 -> threshold-100';
const CHECKOUT = 'svc4 10.96.10.20 tcp 50051 -> threshold-20';
const INITIAL = [POSTGRES, REDIS, IPERF3_TCP, IPERF3_UDP].sort();

describe.skipIf(!canUseNetns())('the daemon process in a private network namespace (degraded kernel)', () => {
  const ns = netnsName('process');
  const docs = exampleDocs();
  let dir: string;
  const started: Proc[] = [];

  /** `nft -j list table inet slipstream`, or null when there is no table. */
  const tableJson = (): string | null => nftJson(ns);
  /** The map elements as `svc4 ADDR PROTO PORT -> CHAIN`, sorted; null when there is no table. */
  const elements = (): string[] | null => kernelState(ns)?.elements ?? null;
  const withoutHandles = (json: string) =>
    JSON.stringify(JSON.parse(json), (key, value) => (key === 'handle' ? undefined : value));

  const manifest = (key: string, edit: (o: Record<string, unknown>) => void = () => {}) => {
    const object = structuredClone(docs.get(key)!);
    edit(object);
    return stringify(object);
  };
  const write = (file: string, text: string) => writeFileSync(join(dir, file), text);
  const annotate = (key: string, annotations: Record<string, string>) =>
    manifest(key, (o) => {
      const metadata = o.metadata as Record<string, unknown>;
      metadata.annotations = { ...(metadata.annotations as object), ...annotations };
    });
  const label = (key: string, labels: Record<string, string>) =>
    manifest(key, (o) => {
      const metadata = o.metadata as Record<string, unknown>;
      metadata.labels = { ...(metadata.labels as object), ...labels };
    });
  const namespacesFile = (media: string) => [media, manifest('namespace/shop')].join('---\n');

  const daemon = (args: string[]) => {
    const p = new Proc(MAIN, args, { env: ENV });
    started.push(p);
    return p;
  };
  const base = () => ['--services', dir, '--netns', ns];

  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    dir = mkdtempSync(join(tmpdir(), 'slipstream-process-test-'));
    write('postgres.yaml', manifest('shop/postgres'));
    write('redis.yaml', manifest('shop/redis'));
    write('iperf3.yaml', manifest('media/iperf3'));
    write('namespaces.yaml', namespacesFile(manifest('namespace/media')));
  });

  afterAll(async () => {
    for (const p of started) {
      if (p.running) {
        p.child.kill('SIGKILL');
        await p.exited;
      }
    }
    execFileSync('ip', ['netns', 'delete', ns]);
    rmSync(dir, { recursive: true, force: true });
  });

  describe('one-shot runs', () => {
    it('--once programs the manifests, prints the ruleset and exits 0', async () => {
      const r = await run(MAIN, [...base(), '--once']);
      expect(r.code, r.stderr).toBe(0);
      expect(elements()).toEqual(INITIAL);
      expect(r.stdout).toContain('add table inet slipstream\n');
      expect(r.stdout).toContain('10.96.10.10 . tcp . 5432 : jump threshold-20');
      const sync = r.logs.find((l) => l.msg === 'sync');
      expect(sync).toMatchObject({ trigger: 'startup', result: 'ok', degraded: true, writes: 1 });
      expect(r.logs.some((l) => String(l.msg).startsWith('degraded:'))).toBe(true);
    });

    it.each([
      [['--frobnicate']],
      [['--once', '--min-sync-period', 'soon']],
      [['--services', '/tmp', '--kubeconfig', '/tmp/kc']],
      [['--netns', '../../proc/1/ns/net', '--once']],
      [['--health-listen', 'nowhere']],
    ])('bad flags %j: exit code 2 and the usage, nothing programmed', async (args) => {
      const r = await run(MAIN, args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/^slipstream daemon: /);
      expect(r.stderr).toContain('usage: npm run daemon --');
      expect(r.stdout).toBe('');
    });

    it('--help prints the usage on stdout and exits 0', async () => {
      const r = await run(MAIN, ['--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('usage: npm run daemon --');
    });

    it('--once on a network namespace that does not exist: exit 1 with one clear line, no stack, no hang', async () => {
      const missing = netnsName('missing');
      const r = await run(MAIN, ['--services', dir, '--netns', missing, '--once']);
      expect(r.code, r.stderr).toBe(1);
      const errors = r.logs.filter((l) => l.level === 'error' || l.level === 'warn' || 'raw' in l);
      expect(errors).toEqual([
        expect.objectContaining({
          level: 'error',
          msg: `cannot start: network namespace "${missing}" does not exist (/run/netns/${missing})`,
        }),
      ]);
      expect(r.stderr).not.toMatch(/\bat (file:|node:|async )/);
      expect(r.stdout).toBe('');
    });

    it('--cleanup on a network namespace that does not exist is an error, not "was not there"', async () => {
      const missing = netnsName('missing');
      const r = await run(MAIN, ['--netns', missing, '--cleanup']);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('does not exist');
      expect(r.stderr).not.toContain('was not there');
    });

    it('a health port already in use: exit 1 naming it (the watchers it started do not keep it alive)', async () => {
      const blocker = createServer();
      await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
      const address = blocker.address();
      if (!address || typeof address === 'string') throw new Error('no port');
      try {
        const r = await run(MAIN, [...base(), '--health-listen', `127.0.0.1:${address.port}`]);
        expect(r.code, r.stderr).toBe(1);
        expect(r.logs.at(-1)).toMatchObject({
          level: 'error',
          msg: expect.stringMatching(/^cannot start: --health-listen 127\.0\.0\.1:\d+: .*EADDRINUSE/),
        });
      } finally {
        await new Promise((r) => blocker.close(r));
      }
    });
  });

  describe('a long-running daemon, then a restart', () => {
    let d: Proc;
    let port: number;
    const context = () => `elements: ${JSON.stringify(elements())}\nstderr:\n${d.stderr}`;
    const health = async (path: string) => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}${path}`);
        return { status: res.status, body: (await res.json()) as { lastSync: LogEntry | null } };
      } catch {
        return null;
      }
    };
    const waitElements = (what: string, check: (e: string[]) => boolean) =>
      until(
        what,
        () => {
          const e = elements();
          return e !== null && check(e) ? e : null;
        },
        context,
      );
    const syncsSoFar = () => d.logs().filter((l) => l.msg === 'sync').length;

    it('starts, programs the table and becomes ready on /readyz', async () => {
      port = await freePort();
      d = daemon([...base(), '--min-sync-period', '100ms', '--health-listen', `127.0.0.1:${port}`]);
      const ready = await until(
        '/readyz 200',
        async () => (await health('/readyz'))?.status === 200,
        context,
      );
      expect(ready).toBe(true);
      expect(elements()).toEqual(INITIAL);
      expect((await health('/healthz'))?.status).toBe(200);
    });

    it('a new Service manifest: its element appears', async () => {
      write('whoami.yaml', manifest('default/whoami'));
      const e = await waitElements('whoami added', (e) => e.includes(WHOAMI));
      expect(e).toEqual([...INITIAL, WHOAMI].sort());
    });

    it('the manifest deleted: its element goes', async () => {
      rmSync(join(dir, 'whoami.yaml'));
      const e = await waitElements('whoami removed', (e) => !e.includes(WHOAMI));
      expect(e).toEqual(INITIAL);
    });

    it('slipstream.dev/acceleration: disabled on a Service: its element goes, the others stay', async () => {
      write('postgres.yaml', annotate('shop/postgres', { 'slipstream.dev/acceleration': 'disabled' }));
      const e = await waitElements('postgres removed', (e) => !e.includes(POSTGRES));
      expect(e).toEqual([REDIS, IPERF3_TCP, IPERF3_UDP].sort());
    });

    it('a namespace labelled slipstream.dev/acceleration: disabled: its Services go', async () => {
      write(
        'namespaces.yaml',
        namespacesFile(label('namespace/media', { 'slipstream.dev/acceleration': 'disabled' })),
      );
      const e = await waitElements(
        'media removed',
        (e) => !e.includes(IPERF3_TCP) && !e.includes(IPERF3_UDP),
      );
      expect(e).toEqual([REDIS]);
    });

    it('the opt-outs undone: the elements come back', async () => {
      write('postgres.yaml', manifest('shop/postgres'));
      write('namespaces.yaml', namespacesFile(manifest('namespace/media')));
      const e = await waitElements('everything back', (e) => e.length === INITIAL.length);
      expect(e).toEqual(INITIAL);
    });

    it('a veth pair added inside the namespace: a link sync runs, and it does not fail', async () => {
      ip('link', 'add', 'slip-a', 'type', 'veth', 'peer', 'name', 'slip-b');
      ip('link', 'set', 'slip-a', 'up');
      ip('link', 'set', 'slip-b', 'up');
      // The health endpoint reports the last sync, noops included (the log only has the writes).
      const last = await until(
        'a sync triggered by the links',
        async () => {
          const h = await health('/readyz');
          return h?.body.lastSync?.trigger === 'link' ? h : null;
        },
        context,
      );
      expect(last.status).toBe(200);
      expect(last.body.lastSync).toMatchObject({ trigger: 'link', degraded: true });
      expect(last.body.lastSync?.result).not.toBe('error');
      expect(elements()).toEqual(INITIAL);
    });

    it('an invalid YAML file does not stop the daemon; other Services still sync', async () => {
      write('broken.yaml', 'apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n  spec: :\n');
      await until(
        'the broken file reported',
        () =>
          d
            .logs()
            .some((l) => l.msg === 'cannot read manifest file' && String(l.file).endsWith('broken.yaml')),
        context,
      );
      write('checkout.yaml', manifest('shop/checkout'));
      const e = await waitElements('checkout added', (e) => e.includes(CHECKOUT));
      expect(e).toEqual([...INITIAL, CHECKOUT].sort());
      expect(d.running).toBe(true);
      rmSync(join(dir, 'checkout.yaml'));
      await waitElements('checkout removed', (e) => !e.includes(CHECKOUT));
      expect((await health('/readyz'))?.status).toBe(200);
    });

    it('SIGUSR1 opens no inspector: the daemon says so and keeps running', async () => {
      d.child.kill('SIGUSR1');
      await d.waitForLog('SIGUSR1 ignored', (l) => String(l.msg).startsWith('SIGUSR1 ignored'));
      // The inspector would listen on 127.0.0.1:9229; the daemon's only listener is its health port.
      const own = execFileSync('ss', ['-ltnpH'], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => l.includes(`pid=${d.child.pid},`));
      expect(own.map((l) => l.split(/\s+/)[3])).toEqual([`127.0.0.1:${port}`]);
      expect((await health('/healthz'))?.status).toBe(200);
    });

    it('SIGHUP reloads: the manifests are read again and the table is read back, the daemon keeps running', async () => {
      const before = d.logs().length;
      d.child.kill('SIGHUP');
      await d.waitForLog('SIGHUP', (l) => l.msg === 'SIGHUP: reloading');
      await until(
        'a read-back after SIGHUP',
        () =>
          d
            .logs()
            .slice(before)
            .some((l) => l.msg === 'sync' || l.msg === 'SIGHUP: reloading'),
        context,
      );
      expect(d.running).toBe(true);
      expect((await health('/readyz'))?.status).toBe(200);
    });

    it('every line on stderr is a JSON object (no stray text from libnftables, Node or iproute2)', () => {
      expect(d.logs().filter((l) => 'raw' in l)).toEqual([]);
    });

    it('no sync failed during all of it', () => {
      const logs = d.logs();
      expect(syncsSoFar()).toBeGreaterThanOrEqual(7);
      expect(logs.filter((l) => l.result === 'error' || l.level === 'error')).toEqual([]);
      expect(d.stderr).not.toContain('"result":"error"');
    });

    it('SIGTERM: exits 0, and the table stays in the kernel with its elements', async () => {
      const before = tableJson();
      expect(before).not.toBeNull();
      d.child.kill('SIGTERM');
      const { code, signal } = await d.exit();
      expect({ code, signal }).toEqual({ code: 0, signal: null });
      expect(
        d.logs().some((l) => l.msg === 'stopping; the kernel rules stay in place' && l.signal === 'SIGTERM'),
      ).toBe(true);
      expect(tableJson()).toBe(before);
      expect(elements()).toEqual(INITIAL);
    });

    it('a restart on the same namespace and manifests adopts the table: a start-up sync with 0 writes', async () => {
      const before = tableJson()!;
      port = await freePort();
      d = daemon([...base(), '--min-sync-period', '100ms', '--health-listen', `127.0.0.1:${port}`]);
      await until('/readyz 200', async () => (await health('/readyz'))?.status === 200, context);
      const startup = d.logs().find((l) => l.trigger === 'startup');
      expect(startup).toMatchObject({
        msg: 'startup sync: adopted the existing table, 0 writes',
        result: 'noop',
        writes: 0,
        readBack: true,
        drift: false,
      });
      expect(d.logs().filter((l) => l.msg === 'sync')).toEqual([]);
      // Nothing was rewritten: the listing is identical, handles (which a re-created object would
      // change) included, and of course without them.
      const after = tableJson()!;
      expect(withoutHandles(after)).toBe(withoutHandles(before));
      expect(after).toBe(before);
    });

    it('slipstream status --output json on that namespace: offloaded ports in the kernel, degraded', async () => {
      const r = await run(STATUS_MAIN, [...base(), '--output', 'json']);
      expect(r.code, r.stderr).toBe(0);
      const status = JSON.parse(r.stdout) as {
        degraded: boolean;
        degradedReason?: string;
        tablePresent: boolean;
        ports: {
          service: string;
          port: string;
          decision: string;
          inKernel: boolean | null;
          offloaded: number | null;
        }[];
      };
      expect(status.degraded).toBe(true);
      expect(status.degradedReason).toMatch(/flowtable/);
      expect(status.tablePresent).toBe(true);
      expect(status.ports.map((p) => `${p.service} ${p.port} ${p.decision}`)).toEqual([
        'media/iperf3 5201/TCP (iperf3) offload',
        'media/iperf3 5201/UDP (iperf3-udp) offload',
        'shop/postgres 5432/TCP (postgres) offload',
        'shop/redis 6379/TCP (redis) offload',
      ]);
      for (const p of status.ports) expect(p, p.port).toMatchObject({ inKernel: true, offloaded: 0 });
    });

    it('status on a namespace that does not exist: exit 1, not an empty report', async () => {
      const r = await run(STATUS_MAIN, ['--services', dir, '--netns', netnsName('missing')]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('does not exist');
      expect(r.stdout).toBe('');
    });

    it('the restarted daemon stops on SIGTERM too', async () => {
      d.child.kill('SIGTERM');
      expect(await d.exit()).toEqual({ code: 0, signal: null });
      expect(d.logs().filter((l) => l.level === 'error')).toEqual([]);
    });
  });

  describe('a daemon that cannot write to nf_tables', () => {
    it('stays alive (/healthz 200) but is not ready (/readyz 503, naming why)', async () => {
      const port = await freePort();
      // Without CAP_NET_ADMIN every transaction is refused: the node cannot be programmed.
      const p = new Proc(
        MAIN,
        [...base(), '--min-sync-period', '100ms', '--health-listen', `127.0.0.1:${port}`],
        {
          env: ENV,
          wrap: ['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin'],
        },
      );
      started.push(p);
      const get = async (path: string) => {
        try {
          const res = await fetch(`http://127.0.0.1:${port}${path}`);
          return { status: res.status, body: (await res.json()) as { reason?: string } };
        } catch {
          return null;
        }
      };
      const unready = await until(
        '/readyz 503',
        async () => {
          const r = await get('/readyz');
          return r?.status === 503 ? r : null;
        },
        () => p.stderr,
      );
      expect(unready.body.reason).toMatch(/no sync has reached the kernel|differed/);
      expect((await get('/healthz'))?.status).toBe(200);
      expect(
        p.logs().filter((l) => l.level === 'error' && String(l.msg).startsWith('sync failed')).length,
      ).toBe(1);
      await p.stop();
    });
  });

  describe('cleanup, and a bad manifest at start-up', () => {
    it('--cleanup removes the table; a second --cleanup exits 0: "was not there"', async () => {
      expect(tableJson()).not.toBeNull();
      const first = await run(MAIN, ['--netns', ns, '--cleanup']);
      expect(first.code, first.stderr).toBe(0);
      expect(first.logs.at(-1)).toMatchObject({ msg: 'table inet slipstream removed' });
      expect(tableJson()).toBeNull();
      const second = await run(MAIN, ['--netns', ns, '--cleanup']);
      expect(second.code, second.stderr).toBe(0);
      expect(second.logs.at(-1)).toMatchObject({ msg: 'table inet slipstream was not there' });
    });

    it('an invalid YAML file present at start-up: the other Services are still programmed', async () => {
      expect(readFileSync(join(dir, 'broken.yaml'), 'utf8')).toContain('[unclosed');
      const r = await run(MAIN, [...base(), '--once']);
      expect(r.code, r.stderr).toBe(0);
      expect(elements()).toEqual(INITIAL);
      expect(r.logs).toContainEqual(
        expect.objectContaining({
          level: 'warn',
          msg: 'cannot read manifest file',
          file: join(dir, 'broken.yaml'),
        }),
      );
    });
  });

  function ip(...args: string[]) {
    execFileSync('ip', ['-n', ns, ...args]);
  }
});
