// Watches a few files and reports when their contents change: the one file watcher, used by the
// policy reload (policy-watch.ts) and by the webhook's serving-certificate reload.
//
// Changes are noticed two ways: fs.watch on the files' directories (which also sees Kubernetes
// ConfigMap/Secret volumes swap their `..data` symlink) and a slow poll, because inotify misses
// some replacements (a directory mounted anew, network filesystems). Either way the files are
// re-read and compared with what was last seen, so events that change nothing do nothing.

import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { dirname } from 'node:path';

export interface FileWatch {
  /** Re-reads the files now (what a change event does). */
  check(): void;
  close(): void;
}

export interface WatchFilesOptions {
  /** Quiet time after an event before the files are read (writers often write in several steps). */
  debounceMs?: number;
  /** Poll interval; 0 disables polling. */
  pollMs?: number;
  /** A file could not be read (missing mid-replacement, permissions). */
  onError?: (error: Error) => void;
}

/**
 * Calls `onChange` with the files' contents whenever any of them differs from what was last
 * seen. The initial contents count as seen: pass them so that a change between the caller's
 * first read and the watch starting is not missed.
 */
export function watchFiles(
  paths: readonly string[],
  initial: readonly string[],
  onChange: (contents: string[]) => void,
  options: WatchFilesOptions = {},
): FileWatch {
  const debounceMs = options.debounceMs ?? 100;
  const pollMs = options.pollMs ?? 30_000;
  let seen = [...initial];
  let timer: NodeJS.Timeout | undefined;
  let closed = false;
  let lastError = '';

  const check = () => {
    if (closed) return;
    let contents: string[];
    try {
      contents = paths.map((p) => readFileSync(p, 'utf8'));
    } catch (error) {
      // Reported once per distinct error, not on every poll while the file stays unreadable.
      const message = (error as Error).message;
      if (message !== lastError) options.onError?.(error as Error);
      lastError = message;
      return;
    }
    lastError = '';
    if (contents.every((c, i) => c === seen[i])) return;
    seen = contents;
    onChange(contents);
  };
  const schedule = () => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(check, debounceMs);
    timer.unref();
  };

  const watchers: FSWatcher[] = [];
  for (const dir of new Set(paths.map((p) => dirname(p)))) {
    try {
      const watcher = watch(dir, { persistent: false }, schedule);
      watcher.on('error', () => {}); // the directory went away; the poll still runs
      watchers.push(watcher);
    } catch (error) {
      options.onError?.(error as Error);
    }
  }
  const poll = pollMs > 0 ? setInterval(check, pollMs) : undefined;
  poll?.unref();

  return {
    check,
    close() {
      closed = true;
      clearTimeout(timer);
      clearInterval(poll);
      for (const w of watchers) w.close();
    },
  };
}
