// `kubectl slipstream status`: the real plugin executable (bin/kubectl-slipstream) against the API
// server stand-in, reading REAL daemons (files mode, each in its own private network namespace,
// degraded on this kernel) through pod port-forwards. Node a has every example Service, node b
// lacks shop/redis and has media/iperf3 opted out, node c's pod points at a closed port, node d's
// pod is Pending. No timing assertions: every wait polls a condition, bounded.

import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml, stringify } from 'yaml';
import { EXAMPLES_DIR } from '../../daemon/src/cli.ts';
import type { FleetStatus } from '../../daemon/src/fleet-status.ts';
import { FakeApiServer } from '../apiserver/fake-apiserver.ts';
import { canUseNetns, netnsExists, netnsName } from '../lib/netns.ts';
import { DAEMON_MAIN, freePort, Proc, ROOT, until } from '../lib/process.ts';

const PLUGIN = join(ROOT, 'bin/kubectl-slipstream');
const ENV: Record<string, string | undefined> = { ...process.env, OTEL_TRACES_EXPORTER: 'none' };
delete ENV.KUBERNETES_SERVICE_HOST;
delete ENV.OTEL_EXPORTER_OTLP_ENDPOINT;
delete ENV.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;

const LABELS = { 'app.kubernetes.io/name': 'slipstream', 'app.kubernetes.io/component': 'daemon' };

function examples(): Map<string, Record<string, unknown>> {
  const docs = new Map<string, Record<string, unknown>>();
  for (const file of ['services.yaml', 'namespaces.yaml']) {
    for (const d of parseAllDocuments(readFileSync(join(EXAMPLES_DIR, file), 'utf8'))) {
      const o = d.toJS() as { kind: string; metadata: { name: string; namespace?: string } };
      docs.set(
        o.kind === 'Namespace'
          ? `namespace/${o.metadata.name}`
          : `${o.metadata.namespace}/${o.metadata.name}`,
        o,
      );
    }
  }
  return docs;
}

function pod(
  name: string,
  node: string,
  phase = 'Running',
  namespace = 'slipstream-system',
  labels = LABELS,
) {
  return {
    metadata: { name, namespace, labels },
    spec: { nodeName: node, containers: [{ name: 'daemon', image: 'slipstream' }] },
    status: { phase },
  };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The plugin as kubectl runs it: the executable, its arguments, the environment (KUBECONFIG). */
function plugin(args: string[], env: Record<string, string | undefined>): Promise<Run> {
  const child = spawn(PLUGIN, args, {
    env: Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined)),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

/** The table row of a Service port, split on the column gaps. */
function row(table: string, service: string, port: string): string[] | undefined {
  return table
    .split('\n')
    .map((l) => l.split(/ {2,}/))
    .find((cells) => cells[0] === service && cells[1] === port);
}

describe.skipIf(!canUseNetns())(
  'kubectl slipstream status against the API server stand-in and real daemons',
  () => {
    const docs = examples();
    const nodes = ['a', 'b'].map((n) => ({
      node: `node-${n}`,
      ns: netnsName(`kubectl-${n}`),
      dir: '',
      port: 0,
    }));
    const daemons: Proc[] = [];
    let server: FakeApiServer;
    let work: string;
    let env: Record<string, string | undefined>;

    beforeAll(async () => {
      work = mkdtempSync(join(tmpdir(), 'slipstream-kubectl-test-'));
      const write = (
        dir: string,
        keys: string[],
        edit: (key: string, o: Record<string, unknown>) => void = () => {},
      ) => {
        mkdirSync(dir, { recursive: true });
        const objects = keys.map((k) => {
          const o = structuredClone(docs.get(k)!);
          edit(k, o);
          return stringify(o);
        });
        writeFileSync(join(dir, 'objects.yaml'), objects.join('---\n'));
      };
      const every = ['namespace/shop', 'namespace/media', 'shop/postgres', 'shop/redis', 'media/iperf3'];
      nodes[0]!.dir = join(work, 'a');
      write(nodes[0]!.dir, every);
      // Node b: no shop/redis, and media/iperf3 opted out (as a node on another input would decide).
      nodes[1]!.dir = join(work, 'b');
      write(
        nodes[1]!.dir,
        every.filter((k) => k !== 'shop/redis'),
        (k, o) => {
          if (k !== 'media/iperf3') return;
          const metadata = o.metadata as Record<string, unknown>;
          metadata.annotations = {
            ...(metadata.annotations as object),
            'slipstream.dev/acceleration': 'disabled',
          };
        },
      );
      server = await FakeApiServer.start();
      await server.createNamespace('slipstream-system');
      const kubeconfig = join(work, 'kubeconfig');
      await server.writeKubeconfig(kubeconfig);
      env = { ...ENV, KUBECONFIG: kubeconfig };
      for (const n of nodes) {
        execFileSync('ip', ['netns', 'add', n.ns]);
        n.port = await freePort();
        const d = new Proc(
          DAEMON_MAIN,
          [
            '--services',
            n.dir,
            '--netns',
            n.ns,
            '--health-listen',
            `127.0.0.1:${n.port}`,
            '--min-sync-period',
            '100ms',
          ],
          { env: ENV, name: `daemon ${n.node}` },
        );
        daemons.push(d);
        await until(
          `${n.node} ready`,
          async () => (await fetch(`http://127.0.0.1:${n.port}/readyz`).catch(() => null))?.status === 200,
          () => d.stderr,
        );
        await server.createPod(pod(`slipstream-daemon-${n.node.slice(-1)}`, n.node), { 9469: n.port });
      }
      await server.createPod(pod('slipstream-daemon-c', 'node-c'), { 9469: await freePort() });
      await server.createPod(pod('slipstream-daemon-d', 'node-d', 'Pending'));
      // Neither is a daemon of this install: another namespace, another component.
      await server.createPod(pod('slipstream-daemon-x', 'node-x', 'Running', 'default'), {
        9469: nodes[0]!.port,
      });
      await server.createPod(
        pod('slipstream-webhook-0', 'node-a', 'Running', 'slipstream-system', {
          ...LABELS,
          'app.kubernetes.io/component': 'webhook',
        }),
        { 9469: nodes[0]!.port },
      );
    }, 60_000);

    afterAll(async () => {
      for (const d of daemons) {
        if (d.running) {
          d.child.kill('SIGKILL');
          await d.exited;
        }
      }
      for (const n of nodes) if (netnsExists(n.ns)) execFileSync('ip', ['netns', 'delete', n.ns]);
      await server?.close();
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it('aggregates every Service port over the nodes, naming the missing, the disagreeing and the unreachable', async () => {
      const r = await plugin(['status'], env);
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.split('\n');
      expect(lines[0]).toBe('daemons: 2 of 4 answered (node-a, node-b)');
      expect(lines).toContainEqual(
        expect.stringMatching(
          /^UNREACHABLE: node-c \(pod slipstream-daemon-c\): error forwarding port 9469 to pod: .*refused/i,
        ),
      );
      expect(lines).toContain('UNREACHABLE: node-d (pod slipstream-daemon-d): pod is Pending');
      expect(lines).toContainEqual(
        expect.stringMatching(/^DEGRADED \(rules kept, nothing offloaded\): node-a \(.+\), node-b \(.+\)$/),
      );
      expect(row(r.stdout, 'shop/postgres', '5432/TCP (postgres)')?.slice(0, 8)).toEqual([
        'shop/postgres',
        '5432/TCP (postgres)',
        'offload',
        '20',
        '2/2',
        'cluster',
        '0',
        '0',
      ]);
      expect(row(r.stdout, 'shop/redis', '6379/TCP (redis)')?.slice(2, 5)).toEqual(['offload', '20', '1/2']);
      expect(lines).toContain(
        '  shop/redis 6379/TCP (redis): missing on node-b (the Service is not among its Services)',
      );
      // A tie (one node each) keeps the first node's decision and names the other.
      expect(row(r.stdout, 'media/iperf3', '5201/TCP (iperf3)')?.slice(2, 5)).toEqual([
        'offload*',
        '20',
        '1/2',
      ]);
      expect(lines).toContain('  media/iperf3 5201/TCP (iperf3): node-b decides keep');
      // The pods of another namespace or component are not asked.
      expect(r.stdout).not.toContain('node-x');
      expect(
        server.requests
          .filter((q) => q.path.endsWith('/portforward'))
          .map((q) => q.path)
          .sort(),
      ).toEqual(
        expect.arrayContaining([expect.stringContaining('/slipstream-system/pods/slipstream-daemon-a/')]),
      );
      expect(server.requests.some((q) => q.path.includes('slipstream-webhook-0'))).toBe(false);
    });

    it('-n keeps one namespace; -o json has the same rows as data', async () => {
      const r = await plugin(['status', '-n', 'shop', '-o', 'json'], env);
      expect(r.code, r.stderr).toBe(0);
      const fleet = JSON.parse(r.stdout) as FleetStatus;
      expect(fleet.answered).toEqual(['node-a', 'node-b']);
      expect(fleet.unreachable.map((u) => u.node)).toEqual(['node-c', 'node-d']);
      expect(fleet.degraded.map((d) => d.node)).toEqual(['node-a', 'node-b']);
      expect(fleet.ports.map((p) => `${p.service} ${p.port}`)).toEqual([
        'shop/postgres 5432/TCP (postgres)',
        'shop/redis 6379/TCP (redis)',
      ]);
      expect(fleet.ports[1]).toMatchObject({
        decision: 'offload',
        threshold: 20,
        nodes: 2,
        programmed: ['node-a'],
        missing: [{ node: 'node-b', reason: 'the Service is not among its Services' }],
        quarantined: [],
        disagree: [],
        vips: ['clusterIP'],
        offloaded: 0,
        offloadedBytes: 0,
      });
      const table = await plugin(['status', '--namespace', 'media'], env);
      expect(table.stdout).toContain('media/iperf3');
      expect(table.stdout).not.toContain('shop/');
    });

    it('--kubeconfig and --context choose the cluster, as kubectl does', async () => {
      // A kubeconfig whose current context is a server that is not there; the good one by name.
      const good = parseYaml(server.kubeconfig()) as Record<string, unknown[]>;
      const dead = `http://127.0.0.1:${await freePort()}`;
      const config = {
        ...good,
        clusters: [
          ...good.clusters!,
          { name: 'dead', cluster: { server: dead, 'insecure-skip-tls-verify': true } },
        ],
        contexts: [...good.contexts!, { name: 'dead', context: { cluster: 'dead', user: 'fake-apiserver' } }],
        'current-context': 'dead',
      };
      const file = join(work, 'two-contexts');
      writeFileSync(file, stringify(config));
      const broken = await plugin(['status', '--kubeconfig', file], ENV);
      expect(broken.code).toBe(1);
      expect(broken.stderr).toMatch(
        /^kubectl slipstream: cannot list the daemon pods in slipstream-system: /,
      );
      const chosen = await plugin(['status', '--kubeconfig', file, '--context', 'fake-apiserver'], ENV);
      expect(chosen.code, chosen.stderr).toBe(0);
      expect(chosen.stdout.split('\n')[0]).toBe('daemons: 2 of 4 answered (node-a, node-b)');
      const unknown = await plugin(['status', '--kubeconfig', file, '--context', 'nope'], ENV);
      expect(unknown).toMatchObject({
        code: 2,
        stderr: 'kubectl slipstream: context "nope" is not in the kubeconfig\n',
      });
    });

    it('a port that answers something else is named; no daemon answering exits 1', async () => {
      // Node a's daemon pod now lands on the API server itself: HTTP, but not a Slipstream status.
      await server.deletePod('slipstream-system', 'slipstream-daemon-a');
      await server.deletePod('slipstream-system', 'slipstream-daemon-b');
      await server.createPod(pod('slipstream-daemon-a', 'node-a'), {
        9469: Number(new URL(server.url).port),
      });
      const r = await plugin(['status'], env);
      expect(r.code).toBe(1);
      expect(r.stdout.split('\n')[0]).toBe('daemons: 0 of 3 answered');
      expect(r.stdout).toMatch(/^UNREACHABLE: node-a \(pod slipstream-daemon-a\): \/status answered 40\d$/m);
      expect(r.stderr).toBe('kubectl slipstream: no daemon answered\n');
    });
  },
);
