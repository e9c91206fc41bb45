// The plugin's release archive and krew manifest: the manifest's shape and its sha256 against the
// archive really built, the archive reproducible, and the packed plugin running on its own (no
// repository, no node_modules) against the API server stand-in.

import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { FakeApiServer } from '../test/apiserver/fake-apiserver.ts';
import { NODE } from '../test/lib/process.ts';
import {
  archiveName,
  buildPlugin,
  KREW_TEMPLATE,
  packageVersion,
  renderKrewManifest,
} from './build-plugin.ts';

interface KrewPlatform {
  selector: { matchLabels: Record<string, string> };
  uri: string;
  sha256: string;
  bin: string;
  files: { from: string; to: string }[];
}

describe('renderKrewManifest', () => {
  const template = readFileSync(KREW_TEMPLATE, 'utf8');
  it('refuses a version or sha256 of the wrong form, and a field left unfilled', () => {
    const sha256 = 'a'.repeat(64);
    expect(() => renderKrewManifest(template, { version: 'v1.0.0', sha256 })).toThrow(/not X\.Y\.Z/);
    expect(() => renderKrewManifest(template, { version: '1.0.0', sha256: 'TODO' })).toThrow(/not 64 hex/);
    expect(() => renderKrewManifest(`${template}\n# {{release}}\n`, { version: '1.0.0', sha256 })).toThrow(
      /\{\{release\}\} is not filled/,
    );
  });
});

describe('the plugin archive and its krew manifest', () => {
  let work: string;
  let built: Awaited<ReturnType<typeof buildPlugin>>;
  let server: FakeApiServer;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'slipstream-plugin-build-'));
    built = await buildPlugin({ outDir: join(work, 'out') });
    server = await FakeApiServer.start();
    await server.createNamespace('slipstream-system');
  }, 120_000);

  afterAll(async () => {
    await server?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('names the archive by the release convention, with its real sha256, for linux amd64 and arm64', () => {
    const version = packageVersion();
    const manifest = parse(readFileSync(built.manifest, 'utf8')) as {
      apiVersion: string;
      kind: string;
      metadata: { name: string };
      spec: { version: string; shortDescription: string; platforms: KrewPlatform[] };
    };
    expect(manifest.apiVersion).toBe('krew.googlecontainertools.github.com/v1alpha2');
    expect(manifest.kind).toBe('Plugin');
    expect(manifest.metadata.name).toBe('slipstream');
    expect(manifest.spec.version).toBe(`v${version}`);
    expect(manifest.spec.platforms.map((p) => p.selector.matchLabels)).toEqual([
      { os: 'linux', arch: 'amd64' },
      { os: 'linux', arch: 'arm64' },
    ]);
    const sha256 = createHash('sha256').update(readFileSync(built.archive)).digest('hex');
    const listed = execFileSync('tar', ['-tzf', built.archive], { encoding: 'utf8' }).trim().split('\n');
    for (const p of manifest.spec.platforms) {
      expect(p.uri).toMatch(
        new RegExp(`^https://[^{}\\s]+/releases/download/v${version}/${archiveName(version)}$`),
      );
      expect(p.sha256).toBe(sha256);
      expect(p.bin).toBe('kubectl-slipstream');
      expect(p.files.map((f) => f.from).sort()).toEqual(listed.sort());
    }
    expect(built.archive.endsWith(archiveName(version))).toBe(true);
  });

  it('is reproducible: the same sources give the same sha256', async () => {
    const again = await buildPlugin({ outDir: join(work, 'again') });
    expect(again.sha256).toBe(built.sha256);
  }, 120_000);

  it('runs from the unpacked archive alone, with the node on PATH, against the API server', async () => {
    const dir = join(work, 'installed');
    mkdirSync(dir);
    execFileSync('tar', ['-xzf', built.archive, '-C', dir]);
    const kubeconfig = join(work, 'kubeconfig');
    writeFileSync(kubeconfig, server.kubeconfig());
    const env = { PATH: `${dirname(NODE)}:/usr/bin:/bin`, KUBECONFIG: kubeconfig, HOME: work };
    // Asynchronously: the API server answers from this process.
    const r = await promisify(execFile)(join(dir, 'kubectl-slipstream'), ['status'], { env, cwd: work }).then(
      () => ({ code: 0, stderr: '' }),
      (error: { code: number; stderr: string }) => ({ code: error.code, stderr: error.stderr }),
    );
    expect(r).toEqual({
      code: 1,
      stderr:
        'kubectl slipstream: no daemon pods (app.kubernetes.io/name=slipstream,app.kubernetes.io/component=daemon) in slipstream-system: is Slipstream installed?\n',
    });
    expect(server.requests.some((q) => q.resource === 'pods' && q.verb === 'list')).toBe(true);
  });
});
