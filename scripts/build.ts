// `npm run build`: the production bundles of both components, built by esbuild: the webhook into
// webhook/build/ (main.mjs, the review worker, and the chunks it loads lazily: the Secret
// bootstrap with client-node, the self-signed certificate generator, the OTLP exporter) and the
// daemon into daemon/build/ (main.mjs and its lazy chunks: the Kubernetes source with client-node,
// the OTLP exporter). What the image runs and what the benchmarks measure.
// `node scripts/build.ts webhook` (or `daemon`) builds one.
//
// Why a bundle: Node's type stripping loads its TypeScript transformer (~20 MB of RSS) and strips
// every module at start, and every module's source text stays in the heap while the process runs
// (client-node's generated API alone is ~20 MB of source). A bundle is plain JavaScript holding only
// what is imported, in a handful of files, minified in syntax (names kept, so stack traces read).

import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
// A CommonJS module whose exports are the function, with itself as `default` (the name TypeScript sees).
import standalone from 'ajv/dist/standalone/index.js';
import { type BuildOptions, build, type Plugin } from 'esbuild';
import { DEFAULT_POLICY_PATH, defaultPolicyDocument } from '../shared/src/adapters/default-policy.ts';
import { POLICY_SCHEMA } from '../shared/src/core/policy-schema.ts';
import { POLICY_AJV_OPTIONS } from '../shared/src/core/policy-validator.ts';

const REPO = dirname(dirname(fileURLToPath(import.meta.url)));

export interface Bundle {
  name: 'webhook' | 'daemon';
  /** Entry points: output name -> source, relative to the repository. */
  entries: Record<string, string>;
  /** Where the bundle is written (absolute). */
  dir: string;
  /** Its main entry point (absolute): what the manifest runs. */
  main: string;
  /**
   * Source folders whose modules keep their own `import.meta.url` (see ownImportMetaUrl). The
   * webhook's own modules are not among them: they find the review worker's bundle beside theirs.
   */
  ownUrlUnder: string[];
}

function bundle(name: Bundle['name'], entries: Record<string, string>, ownUrlUnder: string[]): Bundle {
  const dir = join(REPO, name, 'build');
  return { name, entries, dir, main: join(dir, 'main.mjs'), ownUrlUnder };
}

export const WEBHOOK = bundle(
  'webhook',
  { main: 'webhook/src/main.ts', 'review-worker': 'webhook/src/review-worker.ts' },
  ['shared/'],
);
export const DAEMON = bundle('daemon', { main: 'daemon/src/main.ts' }, ['shared/', 'daemon/']);
export const BUNDLES = [WEBHOOK, DAEMON];

/**
 * Our sources find files beside them with `new URL('…', import.meta.url)` (the shipped default
 * policy, the addon's .node file, the daemon's examples). In a bundle every module shares the
 * chunk's URL, so each such file gets its own URL back: the chunk's, resolved to where that file
 * lies relative to the build directory. The image keeps the repository layout, so the paths hold.
 */
function ownImportMetaUrl(b: Bundle): Plugin {
  const under = b.ownUrlUnder.map((d) => join(REPO, d));
  return {
    name: 'own-import-meta-url',
    setup(build) {
      build.onLoad({ filter: /\.ts$/ }, async (args) => {
        if (args.path.includes('/node_modules/') || !under.some((d) => args.path.startsWith(d)))
          return undefined;
        const source = await readFile(args.path, 'utf8');
        if (!source.includes('import.meta.url')) return undefined;
        const fromBuild = relative(b.dir, args.path);
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
}

const POLICY_VALIDATOR = join(REPO, 'shared/src/core/policy-validator.ts');
const DEFAULT_POLICY = join(REPO, 'shared/src/adapters/default-policy.ts');

/**
 * policy-validator.ts as the bundles hold it: the policy schema compiled now, by Ajv's standalone
 * code generation with the module's own options, into an ES module exporting the same name. (Its
 * runtime helpers, `require`d from ajv/dist/runtime, are bundled with it.)
 */
export function policyValidatorModule(): string {
  const ajv = new Ajv({ ...POLICY_AJV_OPTIONS, code: { source: true, esm: true } });
  const code = standalone.default(ajv, ajv.compile(POLICY_SCHEMA));
  return `${code}\nexport const validatePolicyDocument = validate;\n`;
}

/**
 * default-policy.ts as a bundle in `dir` holds it: the shipped policy parsed now (by the module's
 * own function, so with the same YAML parser and options), as a JSON literal. The path stays the
 * file's, relative to the chunk, for the log line and error messages.
 */
export function defaultPolicyModule(dir: string): string {
  const url = `new URL(${JSON.stringify(relative(dir, DEFAULT_POLICY_PATH))}, import.meta.url)`;
  // JSON.parse of a string literal: V8 parses JSON faster than the same object as JavaScript.
  const json = JSON.stringify(JSON.stringify(defaultPolicyDocument()));
  return [
    "import { fileURLToPath } from 'node:url';",
    `export const DEFAULT_POLICY_PATH = fileURLToPath(${url});`,
    `export function defaultPolicyDocument() { return JSON.parse(${json}); }`,
  ].join('\n');
}

/**
 * The policy work done at build time rather than at every start: compiling the schema
 * (policyValidatorModule) and parsing the shipped policy (defaultPolicyModule), for a bundle
 * written to `dir`. The modules they replace do the same work at run time, which is what source
 * runs and the tests use (shared/src/core/policy-validator.test.ts compares the two).
 */
export function builtPolicy(dir: string): Plugin {
  return {
    name: 'built-policy',
    setup(build) {
      build.onLoad({ filter: /[/\\](policy-validator|default-policy)\.ts$/ }, (args) => {
        if (args.path === POLICY_VALIDATOR) return { contents: policyValidatorModule(), loader: 'js' };
        if (args.path === DEFAULT_POLICY) return { contents: defaultPolicyModule(dir), loader: 'js' };
        return undefined;
      });
    },
  };
}

const BUILTIN = new Set([...builtinModules, ...builtinModules.map((m) => `node:${m}`)]);

/**
 * Node built-ins imported as ES modules are taken from `process.getBuiltinModule` instead. An
 * `import` of a built-in makes Node build its ES module facade, which reads every export once, and
 * some exports are lazy getters that load whole modules: node:http's WebSocket, CloseEvent and
 * MessageEvent load undici (25-33 ms of the webhook's start here, for a metrics server that uses
 * createServer), node:util's TextDecoder its encoding tables. The module object itself, as
 * `require` returns it, runs no getter until a name is used. (`require` calls in CommonJS
 * dependencies already get it that way.)
 */
const builtinsWithoutFacade: Plugin = {
  name: 'builtins-without-facade',
  setup(build) {
    build.onResolve({ filter: /^[a-z0-9_:/]+$/ }, (args) => {
      if (args.kind !== 'import-statement' && args.kind !== 'dynamic-import') return undefined;
      if (!BUILTIN.has(args.path)) return undefined;
      return { path: args.path, namespace: 'node-builtin' };
    });
    build.onLoad({ filter: /.*/, namespace: 'node-builtin' }, (args) => ({
      contents: `module.exports = process.getBuiltinModule(${JSON.stringify(args.path)});`,
      loader: 'js',
    }));
  },
};

/** What every bundle of ours is: one ES module tree for Node 24 (the kubectl plugin's too). */
export const NODE_BUNDLE = {
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node24',
  // CommonJS dependencies call require() for Node built-ins; an ES module has no require of its own.
  banner: {
    js: "import { createRequire as __slipstreamCreateRequire } from 'node:module'; const require = __slipstreamCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
} satisfies BuildOptions;

export async function buildBundle(b: Bundle): Promise<void> {
  rmSync(b.dir, { recursive: true, force: true });
  mkdirSync(b.dir, { recursive: true });
  const result = await build({
    entryPoints: Object.fromEntries(Object.entries(b.entries).map(([out, src]) => [out, join(REPO, src)])),
    absWorkingDir: REPO,
    outdir: b.dir,
    outExtension: { '.js': '.mjs' },
    ...NODE_BUNDLE,
    splitting: true,
    minifySyntax: true,
    minifyWhitespace: true,
    // Licences in a file of their own: one non-Latin-1 character in a chunk makes V8 hold its whole
    // source as two-byte text.
    legalComments: 'external',
    sourcemap: 'linked',
    metafile: true,
    plugins: [builtinsWithoutFacade, builtPolicy(b.dir), ownImportMetaUrl(b)],
  });
  writeFileSync(join(b.dir, 'meta.json'), JSON.stringify(result.metafile));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const names = process.argv.slice(2);
  const unknown = names.filter((n) => !BUNDLES.some((b) => b.name === n));
  if (unknown.length > 0) {
    process.stderr.write(
      `usage: node scripts/build.ts [webhook|daemon ...] (unknown: ${unknown.join(' ')})\n`,
    );
    process.exit(2);
  }
  for (const b of BUNDLES.filter((b) => names.length === 0 || names.includes(b.name))) {
    await buildBundle(b);
    process.stdout.write(`${b.name} bundle: ${relative(process.cwd(), b.main)}\n`);
  }
}
