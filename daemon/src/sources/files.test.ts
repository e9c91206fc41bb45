import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type LogLine, memoryLogger } from '@slipstream/shared/adapters/log';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FileSource, type FileSourceOptions } from './files.ts';
import { MAX_OBJECTS } from './manifests.ts';
import type { Trigger } from './source.ts';

const eventually = (fn: () => void | Promise<void>) => vi.waitFor(fn, { timeout: 15_000, interval: 10 });

// The same manifests feed the parser's tests (manifests.test.ts) and these.
const FIXTURES = fileURLToPath(new URL('../../../test/fixtures/manifests/', import.meta.url));
const NAMESPACES = readFileSync(join(FIXTURES, 'namespaces.yaml'), 'utf8');
const SERVICES = readFileSync(join(FIXTURES, 'services.yaml'), 'utf8');
const LIST = readFileSync(join(FIXTURES, 'list.json'), 'utf8');

function names(source: FileSource): string[] {
  return source
    .snapshot()
    .services.map((s) => `${s.namespace}/${s.name}`)
    .sort();
}

describe('FileSource', () => {
  let dir: string;
  let logger: ReturnType<typeof memoryLogger>;
  let logs: LogLine[];
  let sources: FileSource[];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'slipstream-files-'));
    logger = memoryLogger();
    logs = logger.lines;
    sources = [];
  });

  afterEach(async () => {
    for (const source of sources) await source.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function make(options: Partial<FileSourceOptions> = {}): { source: FileSource; triggers: Trigger[] } {
    // No periodic rescan: every change below must be noticed through fs.watch.
    const source = new FileSource({
      dir,
      debounceMs: 20,
      rescanIntervalMs: 0,
      log: logger,
      ...options,
    });
    sources.push(source);
    const triggers: Trigger[] = [];
    source.onChange((c) => triggers.push(c.trigger));
    return { source, triggers };
  }

  it('loads a directory: multi-document YAML, a JSON List, declared and assumed namespaces', async () => {
    writeFileSync(join(dir, 'namespaces.yaml'), NAMESPACES);
    writeFileSync(join(dir, 'services.yml'), SERVICES);
    writeFileSync(join(dir, 'list.json'), LIST);
    writeFileSync(join(dir, 'README.md'), '# not a manifest\nkind: Service');
    writeFileSync(join(dir, '.hidden.yaml'), SERVICES.replaceAll('shop', 'hidden'));
    const { source, triggers } = make();
    expect(source.synced).toBe(false);
    await source.start();
    expect(source.synced).toBe(true);
    expect(names(source)).toEqual(['cache/redis', 'legacy/old', 'shop/dns', 'shop/postgres']);
    const snapshot = source.snapshot();
    expect([...snapshot.namespaces.keys()].sort()).toEqual(['cache', 'legacy', 'shop']);
    expect(snapshot.namespaces.get('cache')).toEqual({ name: 'cache', labels: {} }); // assumed
    expect(snapshot.namespaces.get('legacy')?.labels).toEqual({ 'slipstream.dev/acceleration': 'disabled' });
    const dns = snapshot.services.find((s) => s.name === 'dns');
    expect(dns?.ports).toEqual([
      { name: 'dns', port: 53, protocol: 'UDP' },
      { name: 'dns-tcp', port: 53, protocol: 'TCP' },
    ]);
    expect(dns?.clusterIPs).toEqual(['10.96.0.53']);
    expect(source.snapshot()).toBe(snapshot);
    expect(triggers).toEqual([]);
    expect(logs.find((l) => l.level === 'info')?.msg).toMatch(/loaded 4 Services and 3 Namespaces/);
  });

  it('follows added, modified and deleted files', async () => {
    writeFileSync(join(dir, 'services.yaml'), SERVICES);
    const { source, triggers } = make();
    await source.start();
    const first = source.snapshot();

    writeFileSync(join(dir, 'list.json'), LIST);
    await eventually(() =>
      expect(names(source)).toEqual(['cache/redis', 'legacy/old', 'shop/dns', 'shop/postgres']),
    );
    expect(triggers).toContain('service');
    expect(triggers).toContain('namespace'); // cache and legacy are assumed now
    const second = source.snapshot();
    expect(second).not.toBe(first);
    // Unchanged Services keep their identity across snapshots.
    expect(second.services.find((s) => s.name === 'postgres')).toBe(
      first.services.find((s) => s.name === 'postgres'),
    );

    writeFileSync(join(dir, 'services.yaml'), SERVICES.replace('port: 5432', 'port: 5433'));
    await eventually(() =>
      expect(source.snapshot().services.find((s) => s.name === 'postgres')?.ports[0]?.port).toBe(5433),
    );

    unlinkSync(join(dir, 'list.json'));
    await eventually(() => expect(names(source)).toEqual(['shop/dns', 'shop/postgres']));
    expect([...source.snapshot().namespaces.keys()]).toEqual(['shop']);

    // An editor's atomic save: write a temporary file, rename it over the original.
    writeFileSync(join(dir, '.services.yaml.tmp'), SERVICES.replace('name: dns\n', 'name: resolver\n'));
    renameSync(join(dir, '.services.yaml.tmp'), join(dir, 'services.yaml'));
    await eventually(() => expect(names(source)).toEqual(['shop/postgres', 'shop/resolver']));
  });

  it('keeps the identity of unchanged Services in a changed file, and ignores comment-only edits', async () => {
    writeFileSync(join(dir, 'services.yaml'), SERVICES);
    const { source, triggers } = make();
    await source.start();
    const before = source.snapshot();
    const dns = before.services.find((s) => s.name === 'dns');
    writeFileSync(join(dir, 'services.yaml'), SERVICES.replace('port: 5432', 'port: 5433'));
    await eventually(() =>
      expect(source.snapshot().services.find((s) => s.name === 'postgres')?.ports[0]?.port).toBe(5433),
    );
    expect(source.snapshot().services.find((s) => s.name === 'dns')).toBe(dns);

    triggers.length = 0;
    const current = source.snapshot();
    writeFileSync(
      join(dir, 'services.yaml'),
      `# a new comment\n${SERVICES.replace('port: 5432', 'port: 5433')}`,
    );
    await source.rescan();
    expect(source.snapshot()).toBe(current);
    expect(triggers).toEqual([]);
  });

  it('fires only "namespace" for a namespace label change', async () => {
    writeFileSync(join(dir, 'namespaces.yaml'), NAMESPACES);
    writeFileSync(join(dir, 'services.yaml'), SERVICES);
    const { source, triggers } = make();
    await source.start();
    const services = source.snapshot().services;
    writeFileSync(
      join(dir, 'namespaces.yaml'),
      NAMESPACES.replace('name: shop', 'name: shop\n  labels: { team: a }'),
    );
    await eventually(() => expect(source.snapshot().namespaces.get('shop')?.labels).toEqual({ team: 'a' }));
    expect(new Set(triggers)).toEqual(new Set(['namespace']));
    expect(source.snapshot().services).toBe(services);
  });

  it('keeps the last good content of a file that stops parsing, and logs it once', async () => {
    writeFileSync(join(dir, 'services.yaml'), SERVICES);
    const { source, triggers } = make();
    await source.start();
    const good = source.snapshot();

    writeFileSync(join(dir, 'services.yaml'), `${SERVICES}\nkind: [broken\n`);
    await eventually(() => expect(source.fileErrors()).toHaveLength(1));
    expect(source.snapshot()).toBe(good);
    const warnings = () => logs.filter((l) => l.level === 'warn');
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]?.msg).toMatch(/keeping its last good content/);
    expect(warnings()[0]?.fields?.file).toBe(join(dir, 'services.yaml'));
    expect(String(warnings()[0]?.fields?.error)).not.toBe('');

    // Touched again with the same broken content: no second log line.
    writeFileSync(join(dir, 'services.yaml'), `${SERVICES}\nkind: [broken\n`);
    await source.rescan();
    expect(warnings()).toHaveLength(1);
    expect(triggers).toEqual([]);

    // A broken new file has no content to keep, and is logged too.
    writeFileSync(join(dir, 'new.yaml'), 'a: b: c');
    await eventually(() => expect(source.fileErrors()).toHaveLength(2));
    expect(warnings()).toHaveLength(2);

    writeFileSync(join(dir, 'services.yaml'), SERVICES.replace('name: dns\n', 'name: fixed\n'));
    await eventually(() => expect(names(source)).toEqual(['shop/fixed', 'shop/postgres']));
    expect(source.fileErrors().map((e) => e.file)).toEqual([join(dir, 'new.yaml')]);
    expect(logs.some((l) => l.level === 'info' && l.msg.includes('readable again'))).toBe(true);
  });

  it('bounds what one file may cost: an oversized file or one of too many objects fails alone, named', async () => {
    writeFileSync(join(dir, 'services.yaml'), SERVICES);
    writeFileSync(join(dir, 'big.yaml'), `${SERVICES.replaceAll('shop', 'big')}\n# ${'x'.repeat(9000)}\n`);
    const many = Array(MAX_OBJECTS + 1).fill(
      '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"n"}}',
    );
    writeFileSync(join(dir, 'many.yaml'), many.join('\n---\n'));
    const { source } = make({ maxFileBytes: 8192 });
    await source.start();
    expect(names(source)).toEqual(['shop/dns', 'shop/postgres']);
    const errors = new Map(source.fileErrors().map((e) => [e.file, e.error]));
    expect(errors.get(join(dir, 'big.yaml'))).toBe('file is larger than 8192 bytes');
    expect(errors.get(join(dir, 'many.yaml'))).toBe('file is larger than 8192 bytes');
    const named = logs.filter((l) => l.level === 'warn').map((l) => l.fields?.file);
    expect(named.sort()).toEqual([join(dir, 'big.yaml'), join(dir, 'many.yaml')]);

    const roomy = make({ maxFileBytes: 16 * 1024 * 1024 }).source;
    await roomy.start();
    expect(names(roomy)).toEqual(['big/dns', 'big/postgres', 'shop/dns', 'shop/postgres']);
    expect(roomy.fileErrors()).toEqual([
      {
        file: join(dir, 'many.yaml'),
        error: `more than ${MAX_OBJECTS} objects (documents and List items) in one file; split it`,
      },
    ]);
  });

  it('lets the later file win for a Service declared twice, and falls back when it goes', async () => {
    writeFileSync(join(dir, 'a.yaml'), SERVICES);
    writeFileSync(join(dir, 'b.yaml'), SERVICES.replace('port: 5432', 'port: 6432'));
    const { source } = make();
    await source.start();
    expect(source.snapshot().services.find((s) => s.name === 'postgres')?.ports[0]?.port).toBe(6432);
    expect(logs.some((l) => l.level === 'warn' && l.msg.includes('declared in two files'))).toBe(true);
    unlinkSync(join(dir, 'b.yaml'));
    await eventually(() =>
      expect(source.snapshot().services.find((s) => s.name === 'postgres')?.ports[0]?.port).toBe(5432),
    );
  });

  it('follows a ConfigMap-style volume (..data symlink swap)', async () => {
    const v1 = join(dir, '..2024_01');
    mkdirSync(v1);
    writeFileSync(join(v1, 'services.yaml'), SERVICES);
    symlinkSync('..2024_01', join(dir, '..data'));
    symlinkSync('..data/services.yaml', join(dir, 'services.yaml'));
    const { source } = make();
    await source.start();
    expect(names(source)).toEqual(['shop/dns', 'shop/postgres']);

    const v2 = join(dir, '..2024_02');
    mkdirSync(v2);
    writeFileSync(join(v2, 'services.yaml'), SERVICES.replace('name: postgres', 'name: pg'));
    symlinkSync('..2024_02', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    await eventually(() => expect(names(source)).toEqual(['shop/dns', 'shop/pg']));
  });

  it('refuses to start on a missing directory', async () => {
    const { source } = make({ dir: join(dir, 'nope') });
    await expect(source.start()).rejects.toThrow(/nope/);
  });

  it('keeps what it had when the directory disappears', async () => {
    const sub = join(dir, 'manifests');
    mkdirSync(sub);
    writeFileSync(join(sub, 'services.yaml'), SERVICES);
    const { source } = make({ dir: sub });
    await source.start();
    rmSync(sub, { recursive: true });
    await source.rescan();
    expect(names(source)).toEqual(['shop/dns', 'shop/postgres']);
    expect(logs.some((l) => l.level === 'warn' && l.msg.includes('cannot read the services directory'))).toBe(
      true,
    );
    mkdirSync(sub);
    writeFileSync(join(sub, 'other.yaml'), LIST);
    await source.rescan();
    expect(names(source)).toEqual(['cache/redis', 'legacy/old']);
  });
});
