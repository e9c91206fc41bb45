// Keeps a policy file loaded: re-reads it when it changes (through file-watch.ts), and keeps the
// last good policy when a new version does not load.

import { type Policy, PolicyError, parsePolicy } from '../core/policy.ts';
import { type WatchFilesOptions, watchFiles } from './file-watch.ts';
import { loadDefaultPolicy, readPolicyText } from './policy-files.ts';

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
  const text = readPolicyText(path);
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
