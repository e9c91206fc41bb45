// The bundles validate policies with code Ajv generated at build time (scripts/build.ts), the
// sources with the schema compiled at run time: both must accept and refuse the same documents,
// with the same messages, and the bundled default policy must be the shipped file.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtPolicy, NODE_BUNDLE } from '../../../scripts/build.ts';
import { defaultPolicyDocument } from '../adapters/default-policy.ts';
import * as source from '../adapters/policy-files.ts';
import { compilePolicy } from './policy.ts';

type PolicyFiles = typeof source & { compilePolicy: typeof compilePolicy };

const dir = mkdtempSync(join(tmpdir(), 'slipstream-policy-bundle-'));
let bundled: PolicyFiles;
let bundledInputs: string[];

beforeAll(async () => {
  // policy-files.ts, bundled as the webhook and the daemon bundle it, with compilePolicy exposed.
  const here = new URL('../', import.meta.url).pathname;
  const result = await build({
    stdin: {
      contents: `export * from '${here}adapters/policy-files.ts'; export { compilePolicy } from '${here}core/policy.ts';`,
      resolveDir: here,
      loader: 'ts',
    },
    outfile: join(dir, 'policy.mjs'),
    ...NODE_BUNDLE,
    metafile: true,
    plugins: [builtPolicy(dir)],
  });
  bundledInputs = Object.keys(result.metafile.inputs);
  bundled = (await import(pathToFileURL(join(dir, 'policy.mjs')).href)) as PolicyFiles;
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The id of the compiled policy, or the error it was refused with. */
function outcome(compile: typeof compilePolicy, document: unknown): string {
  try {
    return compile(structuredClone(document), 'test.yaml').id;
  } catch (error) {
    return `${(error as Error).name}: ${(error as Error).message}`;
  }
}

const base = defaultPolicyDocument() as Record<string, unknown>;
const rule = (match: unknown, extra: Record<string, unknown> = {}) => ({
  ...base,
  rules: [{ name: 'a', match, offload: true, reason: 'x', ...extra }],
});

describe('the bundled policy validator', () => {
  it('holds the shipped default policy, already parsed', () => {
    expect(bundled.loadDefaultPolicy().id).toBe(source.loadDefaultPolicy().id);
    expect(bundled.loadDefaultPolicy().document).toEqual(source.loadDefaultPolicy().document);
    // The path of the shipped file, found from the bundle's own location (as in the image).
    expect(bundled.DEFAULT_POLICY_PATH).toBe(source.DEFAULT_POLICY_PATH);
  });

  it('holds no schema compiler: only the generated code and its runtime helper', () => {
    expect(bundledInputs.filter((p) => p.includes('/ajv/'))).toEqual([
      'node_modules/ajv/dist/runtime/ucs2length.js',
    ]);
  });

  it.each([
    ['the default policy', base],
    ['a list', [1, 2]],
    ['no rules', { ...base, rules: undefined }],
    ['an unknown field', { ...base, extra: 1 }],
    ['an empty match', rule({})],
    ['a port out of range', rule({ ports: [0, 65536] })],
    ['a bad range', rule({ ports: ['1-2-3'] })],
    ['an inverted range', rule({ ports: ['90-80'] })],
    ['a protocol', rule({ protocols: ['ICMP'] })],
    ['a port-name word with a space', rule({ portNames: ['a b'] })],
    ['a threshold too high', rule({ ports: [80] }, { threshold: 2_000_000 })],
    ['a float threshold', rule({ ports: [80] }, { threshold: 1.5 })],
    // maxLength counts code points (Ajv's ucs2length runtime helper, bundled with the generated code).
    ['63 emoji as a name', { ...base, name: '😀'.repeat(63) }],
    ['64 emoji as a name', { ...base, name: '😀'.repeat(64) }],
    ['a version too long', { ...base, version: 'v'.repeat(64) }],
    ['many errors at once', { name: '', version: [], default: {}, rules: [{}, { name: 'UPPER' }] }],
  ])('decides %s as the source validator does', (_what, document) => {
    expect(outcome(bundled.compilePolicy, document)).toBe(outcome(compilePolicy, document));
  });

  it('decides mutated policies as the source validator does', () => {
    const value = fc.oneof(
      fc.anything({ maxDepth: 2 }),
      fc.constantFrom('TCP', 'UDP', 'SCTP', '80-90', 'grpc', '', 0, 1, 65535, 65536, -1, true),
    );
    const paths = [
      ['name'],
      ['version'],
      ['defaultThreshold'],
      ['default', 'offload'],
      ['default', 'threshold'],
      ['default', 'protocols'],
      ['rules', 0, 'name'],
      ['rules', 0, 'match', 'ports'],
      ['rules', 0, 'match', 'ports', 0],
      ['rules', 1, 'match', 'portNames', 0],
      ['rules', 2, 'match'],
      ['rules', 3, 'offload'],
      ['rules', 3, 'extra'],
    ] as const;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(...paths), value), { minLength: 1, maxLength: 4 }),
        (edits) => {
          const document = structuredClone(base) as Record<string | number, unknown>;
          for (const [path, v] of edits) {
            let at = document;
            for (const key of path.slice(0, -1)) {
              if (typeof at[key] !== 'object' || at[key] === null) at[key] = {};
              at = at[key] as Record<string | number, unknown>;
            }
            at[path.at(-1)!] = v;
          }
          expect(outcome(bundled.compilePolicy, document)).toBe(outcome(compilePolicy, document));
        },
      ),
      { numRuns: 500 },
    );
  });
});
