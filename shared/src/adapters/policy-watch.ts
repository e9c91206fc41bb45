// Keeps a policy file loaded: re-reads it when it changes, and keeps the last good policy when a
// new version does not load. Also the file watcher underneath it (`watchFiles`), which the
// webhook reuses for its TLS certificate.
//
// Changes are noticed two ways: fs.watch on the files' directories (which also sees Kubernetes
// ConfigMap/Secret volumes swap their `..data` symlink) and a slow poll, because inotify misses
// some replacements (a directory mounted anew, network filesystems). Either way the files are
// re-read and compared with what was last seen, so events that change nothing do nothing.

import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { dirname } from 'node:path';
import { type Policy, PolicyError, parsePolicy } from '../core/policy.ts';
import { loadDefaultPolicy } from './policy-files.ts';

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

export interface PolicyWatch {
  /** The policy in force: the last one that loaded. */
  current(): Policy;
  /** The file watched, or undefined for the shipped default (which is not watched). */
  path: string | undefined;
  /** Re-reads the file now (SIGHUP). */
  check(): void;
  close(): void;
}

export interface PolicyWatchOptions extends Omit<WatchFilesOptions, 'onError'> {
  /** A new policy is in force. */
  onReload?: (policy: Policy, previous: Policy) => void;
  /** The file changed but did not load; `kept` stays in force. */
  onError?: (error: Error, kept: Policy) => void;
}

/**
 * Loads `path` (or the shipped default policy when undefined) and keeps it current. Throws
 * PolicyError when the first load fails: a component must not start on a policy it cannot read.
 */
export function watchPolicy(path: string | undefined, options: PolicyWatchOptions = {}): PolicyWatch {
  if (path === undefined) {
    const policy = loadDefaultPolicy();
    return { current: () => policy, path: undefined, check() {}, close() {} };
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new PolicyError(`cannot read policy ${path}: ${(error as Error).message}`);
  }
  let policy = parsePolicy(text, path);
  const watcher = watchFiles(
    [path],
    [text],
    ([next]) => {
      try {
        const loaded = parsePolicy(next ?? '', path);
        if (loaded.id === policy.id) return;
        const previous = policy;
        policy = loaded;
        options.onReload?.(loaded, previous);
      } catch (error) {
        options.onError?.(error as Error, policy);
      }
    },
    {
      ...options,
      onError: (error) =>
        options.onError?.(new PolicyError(`cannot read policy ${path}: ${error.message}`), policy),
    },
  );
  return { current: () => policy, path, check: () => watcher.check(), close: () => watcher.close() };
}
