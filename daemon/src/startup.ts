// Start-up checks shared by the daemon and the status command, kept apart from the daemon's wiring so
// that `status` does not load the reconciler and its tracing to run them.

import { stat } from 'node:fs/promises';
import { netnsPath } from './kernel.ts';

/** An operator error found while starting (missing namespace, unreadable source): one line, no stack. */
export class StartupError extends Error {
  override name = 'StartupError';
}

/**
 * Fails fast, with a clear message, when the named network namespace does not exist: libnftables
 * would report it as "no such object" (which `cleanup` would take for "no table") and `ip -n`
 * would fail deep inside the link watcher.
 */
export async function requireNetns(netns: string | undefined): Promise<void> {
  if (netns === undefined) return;
  const path = netnsPath(netns);
  try {
    await stat(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new StartupError(
      code === 'ENOENT'
        ? `network namespace ${JSON.stringify(netns)} does not exist (${path})`
        : `network namespace ${JSON.stringify(netns)} cannot be opened (${path}): ${(error as Error).message}`,
    );
  }
}
