// The daemon's production bundle (what the image and the DaemonSet run): built by esbuild
// (scripts/build.ts), started with the DaemonSet's node flags and environment, it finds its native
// addon, the shipped default policy and the shipped examples beside the sources it was built from,
// loads its lazy Kubernetes chunk, and programs exactly what the TypeScript sources program. In a
// private network namespace of this machine's kernel (degraded: no flowtables).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { buildBundle, DAEMON } from '../scripts/build.ts';
import { FakeApiServer, type Json } from '../test/apiserver/fake-apiserver.ts';
import { daemonSetShape } from '../test/bench/daemon-process.ts';
import { canUseNetns, kernelState, netnsName } from '../test/lib/netns.ts';
import { DAEMON_MAIN, ROOT, run } from '../test/lib/process.ts';
import { EXAMPLES_DIR } from './src/cli.ts';

const ENV: Record<string, string | undefined> = { PATH: process.env.PATH, OTEL_TRACES_EXPORTER: 'none' };

describe.skipIf(!canUseNetns())('the daemon bundle (npm run build)', () => {
  const ns = netnsName('bundle');
  const shape = daemonSetShape();
  const bundled = (args: string[]) =>
    run(DAEMON.main, [...args, '--netns', ns], { nodeArgs: shape.nodeFlags, env: { ...ENV, ...shape.env } });
  const cleanup = () => run(DAEMON_MAIN, ['--cleanup', '--netns', ns], { env: ENV });
  let fromSources: { stdout: string; elements: string[] };

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', ns]);
    await buildBundle(DAEMON);
    // The reference: the TypeScript sources, the same defaults (examples, default policy).
    const r = await run(DAEMON_MAIN, ['--once', '--netns', ns], { env: ENV });
    expect(r.code, r.stderr).toBe(0);
    fromSources = { stdout: r.stdout, elements: kernelState(ns)!.elements };
    expect(fromSources.elements.length).toBeGreaterThan(5);
    await cleanup();
  }, 90_000);

  afterAll(() => {
    execFileSync('ip', ['netns', 'delete', ns]);
  });

  it('is what the DaemonSet runs', () => {
    expect(shape.entry).toBe(relative(ROOT, DAEMON.main));
  });

  it('--once: the shipped examples under the shipped default policy, through the addon, as the sources do', async () => {
    expect(kernelState(ns)).toBeNull();
    const r = await bundled(['--once']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(fromSources.stdout);
    expect(kernelState(ns)!.elements).toEqual(fromSources.elements);
    await cleanup();
  });

  it('--once --kubeconfig: the lazily loaded Kubernetes source lists the API server', async () => {
    const server = await FakeApiServer.start();
    const dir = mkdtempSync(join(tmpdir(), 'slipstream-bundle-'));
    try {
      for (const file of ['namespaces.yaml', 'services.yaml']) {
        for (const doc of parseAllDocuments(readFileSync(join(EXAMPLES_DIR, file), 'utf8'))) {
          const object = doc.toJS() as Json & {
            kind: string;
            metadata: { name: string; labels?: Record<string, string> };
          };
          if (object.kind === 'Namespace')
            await server.createNamespace(object.metadata.name, object.metadata.labels);
          else await server.createService(object);
        }
      }
      const kubeconfig = await server.writeKubeconfig(join(dir, 'kubeconfig'));
      const r = await bundled(['--once', '--kubeconfig', kubeconfig]);
      expect(r.code, r.stderr).toBe(0);
      expect(server.count('list', 'services')).toBeGreaterThan(0);
      expect(kernelState(ns)!.elements).toEqual(fromSources.elements);
    } finally {
      await cleanup();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
