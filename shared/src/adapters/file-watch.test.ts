import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { until } from '../../../test/lib/process.ts';
import { tempDir } from '../../../test/lib/temp-dir.ts';
import { type FileWatch, watchFiles } from './file-watch.ts';

function track(w: FileWatch): FileWatch {
  onTestFinished(() => w.close());
  return w;
}

describe('watchFiles', () => {
  it('reports only real content changes', () => {
    const file = join(tempDir(), 'f');
    writeFileSync(file, 'one');
    const seen: string[][] = [];
    const w = track(watchFiles([file], ['one'], (c) => seen.push(c), { debounceMs: 10, pollMs: 0 }));
    writeFileSync(file, 'one'); // same bytes: nothing to report
    w.check();
    expect(seen).toEqual([]);
    writeFileSync(file, 'two');
    w.check();
    expect(seen).toEqual([['two']]);
    w.check();
    expect(seen).toEqual([['two']]);
  });

  it('notices a write and a rename into place without being asked, and hands over every file', async () => {
    const dir = tempDir();
    const [a, b] = [join(dir, 'a'), join(dir, 'b')];
    writeFileSync(a, 'a1');
    writeFileSync(b, 'b1');
    const seen: string[][] = [];
    track(watchFiles([a, b], ['a1', 'b1'], (c) => seen.push(c), { debounceMs: 10, pollMs: 0 }));
    writeFileSync(b, 'b2');
    await until('the write', () => seen.length === 1);
    expect(seen).toEqual([['a1', 'b2']]);
    writeFileSync(join(dir, 'tmp'), 'a2');
    renameSync(join(dir, 'tmp'), a);
    await until('the rename', () => seen.length === 2);
    expect(seen[1]).toEqual(['a2', 'b2']);
  });

  it('polls too (for changes fs.watch misses)', async () => {
    const dir = tempDir();
    const file = join(dir, 'f');
    writeFileSync(file, 'one');
    const seen: string[][] = [];
    // The file already differs from `initial` and nothing writes it: only the poll can notice.
    const w = track(watchFiles([file], ['two'], (c) => seen.push(c), { debounceMs: 10_000, pollMs: 50 }));
    await until('the poll', () => seen.length === 1);
    expect(seen).toEqual([['one']]);
    w.close();
    writeFileSync(file, 'three');
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toHaveLength(1); // closed: nothing more
  });

  it('reports a read error once while it lasts, keeps the last contents, and recovers', () => {
    const file = join(tempDir(), 'f');
    writeFileSync(file, 'one');
    const seen: string[][] = [];
    const errors: string[] = [];
    const w = track(
      watchFiles([file], ['one'], (c) => seen.push(c), {
        debounceMs: 10,
        pollMs: 0,
        onError: (e) => errors.push(e.message),
      }),
    );
    rmSync(file);
    w.check();
    w.check();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/ENOENT/);
    writeFileSync(file, 'one'); // back as it was: not a change
    w.check();
    expect(seen).toEqual([]);
    writeFileSync(file, 'two');
    w.check();
    expect(seen).toEqual([['two']]);
  });
});
