// Process-level behaviour both components share, set up before anything else runs:
// - SIGUSR1 never opens the Node inspector (a debugger port on a root process in the host network
//   is an open door): it is logged and ignored. The npm scripts, the image and the manifests also
//   pass --disable-sigusr1, so the inspector cannot start before this handler exists either.
// - Node's own warnings are logged as structured lines, not as free text on stderr.
// - SIGHUP runs the component's reload (documented per component), never terminates.

import type { Logger } from './log.ts';

export function guardProcess(logger: Logger, onHangup?: () => void): void {
  process.on('SIGUSR1', () => {
    logger.warn('SIGUSR1 ignored: this process never opens an inspector');
  });
  process.removeAllListeners('warning');
  process.on('warning', (warning) => {
    logger.warn('node warning', { name: warning.name, warning: warning.message });
  });
  process.on('SIGHUP', () => {
    logger.info('SIGHUP: reloading');
    onHangup?.();
  });
}
