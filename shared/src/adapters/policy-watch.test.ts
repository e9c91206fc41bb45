import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { until } from '../../../test/lib/process.ts';
import { tempDir } from '../../../test/lib/temp-dir.ts';
import { PolicyError } from '../core/policy.ts';
import { loadDefaultPolicy } from './policy-files.ts';
import { type PolicyWatch, watchPolicy } from './policy-watch.ts';

const policyText = (name: string, threshold: number) =>
  `name: ${name}\nversion: 1\ndefault: { offload: true, threshold: ${threshold}, reason: everything }\nrules: []\n`;

function watch(path: string | undefined) {
  const events: { kind: 'reload' | 'error'; id: string; message?: string }[] = [];
  const w: PolicyWatch = watchPolicy(path, {
    debounceMs: 20,
    pollMs: 200,
    onReload: (p) => events.push({ kind: 'reload', id: p.id }),
    onError: (error, kept) => events.push({ kind: 'error', id: kept.id, message: error.message }),
  });
  onTestFinished(() => w.close());
  return { w, events };
}

describe('watchPolicy', () => {
  it('serves the shipped default when no file is given', () => {
    const { w } = watch(undefined);
    expect(w.current().id).toBe(loadDefaultPolicy().id);
    expect(w.path).toBeUndefined();
  });

  it('refuses to start on a file that does not load', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'p.yaml'), 'name: [');
    expect(() => watchPolicy(join(dir, 'p.yaml'))).toThrow(PolicyError);
    expect(() => watchPolicy(join(dir, 'missing.yaml'))).toThrow(/cannot read policy/);
  });

  it('switches to a good new file, and keeps the last good policy (saying so) when the new one is bad', async () => {
    const dir = tempDir();
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policyText('first', 10));
    const { w, events } = watch(file);
    expect(w.current().document.name).toBe('first');

    writeFileSync(file, policyText('second', 30));
    await until('the reload', () => w.current().document.name === 'second');
    expect(events.at(-1)).toMatchObject({ kind: 'reload' });

    writeFileSync(file, 'name: third\nversion: 1\ndefault: { offload: maybe }\nrules: []\n');
    await until('the error', () => events.some((e) => e.kind === 'error'));
    expect(w.current().document.name).toBe('second');
    const error = events.find((e) => e.kind === 'error')!;
    expect(error.id).toBe(w.current().id);
    expect(error.message).toContain(file);
    expect(error.message).toMatch(/not a valid policy/);

    // Replaced by rename (how editors and ConfigMap volumes write): picked up too.
    writeFileSync(join(dir, 'tmp'), policyText('fourth', 40));
    renameSync(join(dir, 'tmp'), file);
    await until('the rename', () => w.current().document.name === 'fourth');
  });

  it('keeps the policy while the file is missing, and reports that once', async () => {
    const dir = tempDir();
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, policyText('only', 10));
    const { w, events } = watch(file);
    rmSync(file);
    await until('the error', () => events.some((e) => e.kind === 'error'));
    await new Promise((r) => setTimeout(r, 600)); // several polls
    expect(events.filter((e) => e.kind === 'error')).toHaveLength(1);
    expect(w.current().document.name).toBe('only');
    writeFileSync(file, policyText('back', 10));
    await until('the new file', () => w.current().document.name === 'back');
  });
});
