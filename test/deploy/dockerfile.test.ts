// No Docker engine runs here, so the image definition is checked by reading it: every COPY source
// exists and survives .dockerignore, the stages are Node 24 on Debian bookworm, the build stage can
// compile the N-API addon, the runtime stage has what the daemon shells out to, and the manifests'
// commands and working directory match what the image contains.

import { existsSync, readFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BUNDLES, DAEMON, WEBHOOK } from '../../scripts/build.ts';
import { REPO, render, TARGETS } from './manifests.ts';
import { container, daemonSet, webhookDeployment } from './workloads.ts';

interface Instruction {
  keyword: string;
  args: string;
}

interface Stage {
  image: string;
  name: string | undefined;
  instructions: Instruction[];
}

function instructions(text: string): Instruction[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (current === '' && (line === '' || line.startsWith('#'))) continue;
    if (line.startsWith('#')) continue; // comment inside a continued instruction
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push(current + line);
    current = '';
  }
  if (current !== '') logical.push(current);
  return logical.map((l) => {
    const space = l.search(/\s/);
    return { keyword: l.slice(0, space).toUpperCase(), args: l.slice(space + 1).trim() };
  });
}

function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const ins of instructions(text)) {
    if (ins.keyword === 'ARG' && stages.length === 0) {
      const [name, value] = ins.args.split('=', 2);
      args.set(name!, value ?? '');
    } else if (ins.keyword === 'FROM') {
      const [ref, as, name] = ins.args.split(/\s+/);
      const image = ref!.replace(/\$\{(\w+)\}|\$(\w+)/g, (_m, a, b) => args.get(a ?? b) ?? '');
      stages.push({ image, name: as?.toUpperCase() === 'AS' ? name : undefined, instructions: [] });
    } else {
      stages.at(-1)?.instructions.push(ins);
    }
  }
  return { args, stages };
}

/** COPY/ADD words split into --flags, sources and destination. */
function copyParts(args: string): { flags: Map<string, string>; sources: string[]; dest: string } {
  const words = args.startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/);
  const flags = new Map<string, string>();
  while (words[0]?.startsWith('--')) {
    const [key, value] = words.shift()!.slice(2).split('=', 2);
    flags.set(key!, value ?? '');
  }
  return { flags, sources: words.slice(0, -1), dest: words.at(-1)! };
}

/** .dockerignore semantics: Go filepath.Match plus `**`, a match on a parent excludes its contents. */
function dockerignore(text: string): (path: string) => boolean {
  const patterns = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const glob = (negate ? l.slice(1) : l).replace(/^\/+/, '').replace(/\/+$/, '');
      let source = '';
      for (let i = 0; i < glob.length; i++) {
        const ch = glob[i]!;
        if (ch === '*' && glob[i + 1] === '*') {
          source += glob[i + 2] === '/' ? '(?:.*/)?' : '.*';
          i += glob[i + 2] === '/' ? 2 : 1;
        } else if (ch === '*') source += '[^/]*';
        else if (ch === '?') source += '[^/]';
        else source += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      return { negate, regex: new RegExp(`^${source}$`) };
    });
  return (path) => {
    const parts = path
      .replace(/^\.?\/+/, '')
      .replace(/\/+$/, '')
      .split('/');
    let excluded = false;
    for (const { negate, regex } of patterns) {
      for (let n = 1; n <= parts.length; n++) {
        if (regex.test(parts.slice(0, n).join('/'))) {
          excluded = !negate;
          break;
        }
      }
    }
    return excluded;
  };
}

const dockerfile = () => parseDockerfile(readFileSync(join(REPO, 'Dockerfile'), 'utf8'));
const ignored = () => dockerignore(readFileSync(join(REPO, '.dockerignore'), 'utf8'));
const stage = (name: string): Stage => {
  const found = dockerfile().stages.find((s) => s.name === name);
  if (!found) throw new Error(`no stage ${name}`);
  return found;
};
const runs = (s: Stage) => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
const aptPackages = (s: Stage) =>
  runs(s).flatMap((r) =>
    [...r.matchAll(/apt-get install ([^&;|]+)/g)].flatMap((m) =>
      m[1]!.split(/\s+/).filter((w) => w && !w.startsWith('-')),
    ),
  );

describe('Dockerfile', () => {
  it('builds every stage from node:24-bookworm-slim', () => {
    const { args, stages } = dockerfile();
    expect(args.get('NODE_IMAGE')).toBe('node:24-bookworm-slim');
    expect(stages.map((s) => s.name)).toEqual(['build', 'bundle', 'runtime']);
    for (const s of stages) expect(s.image, s.name).toBe('node:24-bookworm-slim');
  });

  it('targets the Node major the project requires', () => {
    const engines = (
      JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { engines: { node: string } }
    ).engines;
    expect(engines.node).toBe('>=24');
    expect(dockerfile().args.get('NODE_IMAGE')).toMatch(/^node:24-/);
  });

  it('copies only paths that exist in the repository and that .dockerignore keeps', () => {
    const isIgnored = ignored();
    const sources = dockerfile()
      .stages.flatMap((s) => s.instructions)
      .filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')
      .map((i) => copyParts(i.args))
      .filter((c) => !c.flags.has('from'))
      .flatMap((c) => c.sources);
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) {
      expect(source, 'no globs: each COPY source is a literal path').not.toMatch(/[*?[]/);
      expect(existsSync(join(REPO, source)), `${source} exists`).toBe(true);
      expect(isIgnored(source), `${source} is not excluded by .dockerignore`).toBe(false);
    }
  });

  it('copies from earlier stages only', () => {
    const { stages } = dockerfile();
    stages.forEach((s, index) => {
      for (const i of s.instructions.filter((x) => x.keyword === 'COPY')) {
        const from = copyParts(i.args).flags.get('from');
        if (from !== undefined) expect(stages.slice(0, index).map((x) => x.name)).toContain(from);
      }
    });
  });

  it('builds the N-API addon in the build stage: toolchain, libnftables-dev, npm ci', () => {
    const build = stage('build');
    expect(aptPackages(build)).toEqual(expect.arrayContaining(['python3', 'make', 'g++', 'libnftables-dev']));
    expect(runs(build).some((r) => /\bnpm ci\b/.test(r))).toBe(true);
    // The addon's sources are in place before npm ci runs.
    const order = build.instructions.map((i) =>
      i.keyword === 'COPY' ? copyParts(i.args).sources.join(' ') : i.args,
    );
    const addon = order.findIndex((x) => x.includes('shared/nftables-napi'));
    const install = order.findIndex((x) => /\bnpm ci\b/.test(x));
    expect(addon).toBeGreaterThanOrEqual(0);
    expect(addon).toBeLessThan(install);
    // npm ci needs the lockfile and the workspace manifests.
    for (const needed of [
      'package.json',
      'package-lock.json',
      'shared/package.json',
      'webhook/package.json',
      'daemon/package.json',
    ]) {
      expect(order.slice(0, install).join(' '), needed).toContain(needed);
    }
  });

  it('installs only what runs in the runtime stage: libnftables1, iproute2 and conntrack', () => {
    const packages = aptPackages(stage('runtime'));
    expect(packages.sort()).toEqual(['conntrack', 'iproute2', 'libnftables1']);
  });

  it('runs as uid 65532 by default', () => {
    const users = stage('runtime').instructions.filter((i) => i.keyword === 'USER');
    expect(users.at(-1)?.args).toMatch(/^65532(:65532)?$/);
  });

  it('keeps node_modules, build output and .git out of the build context', () => {
    const isIgnored = ignored();
    for (const path of [
      'node_modules',
      'node_modules/express/index.js',
      'shared/nftables-napi/node_modules/x',
      '.git/HEAD',
    ]) {
      expect(isIgnored(path), path).toBe(true);
    }
    for (const path of ['shared/nftables-napi/build/Release/nftables.node', 'build/x']) {
      expect(isIgnored(path), path).toBe(true);
    }
    for (const path of [
      'package.json',
      'shared/src/core/contract.ts',
      'shared/policy/default.yaml',
      'webhook/src/main.ts',
    ]) {
      expect(isIgnored(path), path).toBe(false);
    }
  });

  it('contains what the manifests run: /app as working directory, both bundles beside the sources', () => {
    const runtime = stage('runtime');
    const workdir = runtime.instructions.filter((i) => i.keyword === 'WORKDIR').at(-1)?.args;
    const copies = runtime.instructions.filter((i) => i.keyword === 'COPY').map((i) => copyParts(i.args));
    const copiedFromBuild = copies.find((c) => c.flags.get('from') === 'build');
    expect(copiedFromBuild?.sources).toEqual([workdir]);
    const buildWorkdir = stage('build')
      .instructions.filter((i) => i.keyword === 'WORKDIR')
      .at(-1)?.args;
    expect(buildWorkdir).toBe(workdir);
    const objects = render(TARGETS.base);
    const script = (c: { command?: string[] }) => c.command?.at(-1) ?? '';

    // Each component's script is its bundle: built by `npm run build` in the bundle stage (into the
    // directory scripts/build.ts writes), after the sources it bundles, and copied from there. The
    // build stage's copy of the repository (the addon, the shipped policy) lies around it.
    const bundle = stage('bundle');
    const steps = bundle.instructions.map((i) =>
      i.keyword === 'COPY' ? copyParts(i.args).sources.join(' ') : i.args,
    );
    const built = steps.findIndex((x) => /\bnpm run build\b/.test(x));
    expect(built).toBeGreaterThan(steps.indexOf('shared/'));
    expect(bundle.instructions.filter((i) => i.keyword === 'WORKDIR').at(-1)?.args).toBe(workdir);
    const scripts = (
      JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
    ).scripts;
    expect(scripts.build).toBe('node scripts/build.ts');
    const fromBundle = copies.filter((c) => c.flags.get('from') === 'bundle');
    for (const [b, workload] of [
      [WEBHOOK, container(webhookDeployment(objects), 'webhook')],
      [DAEMON, container(daemonSet(objects), 'daemon')],
    ] as const) {
      expect(workload.workingDir, b.name).toBe(workdir);
      expect(workload.command?.[0], b.name).toBe('node');
      const buildDir = relative(REPO, b.dir);
      expect(script(workload), b.name).toBe(`${buildDir}/${basename(b.main)}`);
      expect(built, b.name).toBeGreaterThan(steps.indexOf(`${b.name}/`));
      const copied = fromBundle.find((c) => c.sources[0] === `${workdir}/${buildDir}`);
      expect(copied?.dest, b.name).toBe(buildDir);
    }
    expect(fromBundle).toHaveLength(BUNDLES.length);
  });

  it('runs by default exactly what the webhook Deployment runs', () => {
    const cmd =
      stage('runtime')
        .instructions.filter((i) => i.keyword === 'CMD')
        .at(-1)?.args ?? '';
    expect(JSON.parse(cmd)).toEqual(container(webhookDeployment(render(TARGETS.base)), 'webhook').command);
  });
});
