// `npm run build:plugin`: the release archive of `kubectl slipstream` and its krew manifest, in
// daemon/build/plugin/. The archive holds one esbuild bundle (kubectl-slipstream.mjs, plain
// JavaScript with client-node inside) and a launcher running it with the node on PATH; the same
// archive serves linux/amd64 and linux/arm64. It is reproducible (sorted, owner 0, mtime 0, gzip
// without a timestamp), so its sha256 names the content. The manifest is deploy/krew's template
// rendered with the version and that sha256.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { parse } from 'yaml';
import { NODE_BUNDLE } from '../scripts/build.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = dirname(HERE);
export const PLUGIN_BUILD_DIR = join(HERE, 'build/plugin');
export const KREW_TEMPLATE = join(REPO, 'deploy/krew/slipstream.yaml.template');

/** The release naming convention: tag `v<version>`, asset `kubectl-slipstream-v<version>.tar.gz`. */
export const archiveName = (version: string) => `kubectl-slipstream-v${version}.tar.gz`;

const LAUNCHER = `#!/bin/sh
# kubectl slipstream: runs the bundle beside this file with the node on PATH (24 or newer).
here=$(dirname "$(readlink -f "$0")")
exec node --disable-sigusr1 "$here/kubectl-slipstream.mjs" "$@"
`;

/** The template with its fields filled; fails on a field left unfilled or a manifest that does not parse. */
export function renderKrewManifest(template: string, fields: { version: string; sha256: string }): string {
  if (!/^\d+\.\d+\.\d+$/.test(fields.version)) throw new Error(`version ${fields.version}: not X.Y.Z`);
  if (!/^[0-9a-f]{64}$/.test(fields.sha256)) throw new Error(`sha256 ${fields.sha256}: not 64 hex digits`);
  const text = template.replaceAll('{{version}}', fields.version).replaceAll('{{sha256}}', fields.sha256);
  const left = /\{\{[^}]*\}\}/.exec(text);
  if (left) throw new Error(`krew manifest: ${left[0]} is not filled`);
  parse(text);
  return text;
}

/** The daemon package's version: the plugin is released with the daemon it reads. */
export const packageVersion = (): string =>
  JSON.parse(readFileSync(join(HERE, 'package.json'), 'utf8')).version as string;

export async function buildPlugin(
  options: { version?: string; outDir?: string } = {},
): Promise<{ archive: string; manifest: string; sha256: string }> {
  const version = options.version ?? packageVersion();
  const outDir = options.outDir ?? PLUGIN_BUILD_DIR;
  rmSync(outDir, { recursive: true, force: true });
  const stage = join(outDir, 'stage');
  mkdirSync(stage, { recursive: true });
  await build({
    entryPoints: [join(HERE, 'src/kubectl-main.ts')],
    absWorkingDir: REPO,
    outfile: join(stage, 'kubectl-slipstream.mjs'),
    ...NODE_BUNDLE,
    minify: true,
    legalComments: 'eof',
  });
  writeFileSync(join(stage, 'kubectl-slipstream'), LAUNCHER);
  chmodSync(join(stage, 'kubectl-slipstream'), 0o755);
  const tar = execFileSync(
    'tar',
    [
      '-c',
      '-C',
      stage,
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      'kubectl-slipstream',
      'kubectl-slipstream.mjs',
    ],
    { maxBuffer: 256 * 1024 * 1024 },
  );
  const archive = join(outDir, archiveName(version));
  const gz = gzipSync(tar, { level: 9 });
  writeFileSync(archive, gz);
  const sha256 = createHash('sha256').update(gz).digest('hex');
  const manifest = join(outDir, 'slipstream.yaml');
  writeFileSync(manifest, renderKrewManifest(readFileSync(KREW_TEMPLATE, 'utf8'), { version, sha256 }));
  rmSync(stage, { recursive: true, force: true });
  return { archive, manifest, sha256 };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { archive, manifest, sha256 } = await buildPlugin(
    process.argv[2] ? { version: process.argv[2] } : {},
  );
  process.stdout.write(
    `plugin archive: ${relative(process.cwd(), archive)} (sha256 ${sha256})\nkrew manifest: ${relative(process.cwd(), manifest)}\n`,
  );
}
