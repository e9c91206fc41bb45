// `npm run build`: the production webhook, bundled by esbuild into webhook/build/ (main.mjs plus
// the chunks it loads lazily: the Secret bootstrap with client-node, the self-signed certificate
// generator, the OTLP exporter). What the image runs and what the benchmark measures.
//
// Why a bundle: Node's type stripping loads its TypeScript transformer (~20 MB of RSS) and strips
// every module at start; resolving a few hundred files in node_modules costs start-up time too.
// The bundle is plain JavaScript in a handful of files, so neither happens.

import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

const HERE = dirname(fileURLToPath(import.meta.url));
export const BUILD_DIR = join(HERE, 'build');
export const BUNDLE_MAIN = join(BUILD_DIR, 'main.mjs');
const REPO = dirname(HERE);

/**
 * shared/ finds data beside its sources with `new URL('…', import.meta.url)` (the shipped default
 * policy). In a bundle every module shares the chunk's URL, so each shared source file gets its
 * own URL back: the chunk's, resolved to where that file lies relative to the build directory.
 * The image keeps the repository layout (shared/policy/ is there), so the same paths hold. The
 * webhook's own modules keep the chunk's URL: they find the worker's build beside it.
 */
const ownImportMetaUrl: Plugin = {
  name: 'own-import-meta-url',
  setup(b) {
    b.onLoad({ filter: /\.ts$/ }, async (args) => {
      if (args.path.includes('/node_modules/') || !args.path.startsWith(join(REPO, 'shared/')))
        return undefined;
      const { readFile } = await import('node:fs/promises');
      const source = await readFile(args.path, 'utf8');
      if (!source.includes('import.meta.url')) return undefined;
      const fromBuild = relative(BUILD_DIR, args.path);
      return {
        contents: source.replaceAll(
          'import.meta.url',
          `new URL(${JSON.stringify(fromBuild)}, import.meta.url).href`,
        ),
        loader: 'ts',
      };
    });
  },
};

export async function buildWebhook(): Promise<void> {
  rmSync(BUILD_DIR, { recursive: true, force: true });
  mkdirSync(BUILD_DIR, { recursive: true });
  const result = await build({
    entryPoints: { main: join(HERE, 'src/main.ts'), 'review-worker': join(HERE, 'src/review-worker.ts') },
    absWorkingDir: REPO,
    outdir: BUILD_DIR,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node24',
    // CommonJS dependencies call require() for Node built-ins; an ES module has no require of its own.
    banner: {
      js: "import { createRequire as __slipstreamCreateRequire } from 'node:module'; const require = __slipstreamCreateRequire(import.meta.url);",
    },
    minifySyntax: true,
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
    plugins: [ownImportMetaUrl],
  });
  writeFileSync(join(BUILD_DIR, 'meta.json'), JSON.stringify(result.metafile));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await buildWebhook();
  process.stdout.write(`webhook bundle: ${relative(process.cwd(), BUNDLE_MAIN)}\n`);
}
