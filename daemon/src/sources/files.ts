// Embedded mode (`--services DIR`): Services and Namespaces from manifests in a directory.
//
// Reads every *.yaml, *.yml and *.json file directly in DIR (not subdirectories; names that
// start with a dot are skipped, which also skips the `..data` directories of a mounted
// ConfigMap while still following its top-level symlinks), parsed by manifests.ts. Namespaces
// that no manifest declares are assumed to exist without labels.
//
// Changes are followed with fs.watch on DIR (debounced) plus a slow periodic rescan in case the
// file system drops events. A rescan stats every file and re-reads only those whose inode, size,
// mtime or ctime changed (and re-parses only when the bytes changed). A file that fails to parse
// keeps its last good content and is logged once per distinct error; a deleted file removes
// its objects. When two files declare the same Service, the file that sorts last wins.
// What one file may cost is bounded: its size here (maxFileBytes), its objects, nesting and
// aliases in manifests.ts; a file past a bound fails alone, named in the log and fileErrors().

import { createHash } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join, resolve } from 'node:path';
import { type Logger, stderrLogger } from '@slipstream/shared/adapters/log';
import { isRecord } from '@slipstream/shared/core/record';
import { type Namespace, type Service, serviceKey } from '@slipstream/shared/core/service';
import { type ManifestContent, parseManifests } from './manifests.ts';
import {
  ChangeEmitter,
  type Rejected,
  type ServiceSource,
  type Snapshot,
  type SourceChange,
} from './source.ts';

export const MANIFEST_EXTENSIONS: ReadonlySet<string> = new Set(['.yaml', '.yml', '.json']);

export interface FileSourceOptions {
  dir: string;
  /** Quiet time after the last change event before the directory is rescanned (default 100 ms). */
  debounceMs?: number;
  /** Safety-net rescan period (default 30 s; 0 disables). */
  rescanIntervalMs?: number;
  /** Larger files are refused (default 16 MiB). */
  maxFileBytes?: number;
  log?: Logger;
}

interface FileEntry {
  stamp: string;
  hash: string;
  content: ManifestContent;
  /** The current parse error; the content is then the last good one. */
  error?: string;
}

const EMPTY: ManifestContent = { services: [], namespaces: [], rejected: [], ignored: 0 };

/** Objects that did not change keep their identity (the reconciler memoizes Services by identity). */
function keepIdentity(previous: ManifestContent, next: ManifestContent): void {
  const services = new Map(previous.services.map((s) => [serviceKey(s), s]));
  next.services = next.services.map((s) => {
    const old = services.get(serviceKey(s));
    return old && JSON.stringify(old) === JSON.stringify(s) ? old : s;
  });
  const namespaces = new Map(previous.namespaces.map((n) => [n.name, n]));
  next.namespaces = next.namespaces.map((n) => {
    const old = namespaces.get(n.name);
    return old && JSON.stringify(old) === JSON.stringify(n) ? old : n;
  });
}

function errorCode(error: unknown): string | undefined {
  return isRecord(error) && typeof error.code === 'string' ? error.code : undefined;
}

function sameNamespaces(a: Map<string, Namespace>, b: Map<string, Namespace>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, ns] of a) {
    const other = b.get(name);
    if (!other || JSON.stringify(other.labels) !== JSON.stringify(ns.labels)) return false;
  }
  return true;
}

export class FileSource implements ServiceSource {
  readonly dir: string;
  readonly #debounceMs: number;
  readonly #maxWaitMs: number;
  readonly #rescanIntervalMs: number;
  readonly #maxFileBytes: number;
  readonly #log: Logger;
  readonly #emitter: ChangeEmitter;

  readonly #files = new Map<string, FileEntry>();
  #snapshot: Snapshot = { services: [], namespaces: new Map(), rejected: [] };
  #synced = false;
  #started = false;
  #stopped = false;

  #watcher: FSWatcher | undefined;
  #dirIno: bigint | undefined;
  #dirError: string | undefined;
  #debounceTimer: NodeJS.Timeout | undefined;
  #firstEventAt: number | undefined;
  #interval: NodeJS.Timeout | undefined;
  #scanning: Promise<void> | undefined;
  #rescanRequested = false;
  readonly #duplicatesLogged = new Set<string>();

  constructor(options: FileSourceOptions) {
    this.dir = resolve(options.dir);
    this.#debounceMs = options.debounceMs ?? 100;
    this.#maxWaitMs = Math.max(this.#debounceMs * 5, 500);
    this.#rescanIntervalMs = options.rescanIntervalMs ?? 30_000;
    this.#maxFileBytes = options.maxFileBytes ?? 16 * 1024 * 1024;
    this.#log = options.log ?? stderrLogger;
    this.#emitter = new ChangeEmitter(this.#log);
  }

  get synced(): boolean {
    return this.#synced;
  }

  onChange(listener: (change: SourceChange) => void): void {
    this.#emitter.add(listener);
  }

  snapshot(): Snapshot {
    return this.#snapshot;
  }

  /** Files whose last read failed, with the error (their last good content is still in use). */
  fileErrors(): { file: string; error: string }[] {
    const out: { file: string; error: string }[] = [];
    for (const [file, entry] of this.#files) if (entry.error) out.push({ file, error: entry.error });
    return out;
  }

  async start(): Promise<void> {
    if (this.#stopped) throw new Error('FileSource was stopped');
    if (this.#started) throw new Error('FileSource was already started');
    this.#started = true;
    const info = await stat(this.dir, { bigint: true }).catch((error: unknown) => {
      throw new Error(`--services ${this.dir}: ${error instanceof Error ? error.message : String(error)}`);
    });
    if (!info.isDirectory()) throw new Error(`--services ${this.dir}: not a directory`);
    this.#watch(info.ino); // before the first scan, so that no change falls between the two
    await this.#scan();
    this.#synced = true;
    const s = this.#snapshot;
    this.#log.info(`loaded ${s.services.length} Services and ${s.namespaces.size} Namespaces`, {
      dir: this.dir,
      files: this.#files.size,
      rejected: s.rejected.length,
    });
    if (this.#rescanIntervalMs > 0) {
      this.#interval = setInterval(() => void this.#scan(), this.#rescanIntervalMs);
      this.#interval.unref();
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher?.close();
    this.#watcher = undefined;
    clearTimeout(this.#debounceTimer);
    clearInterval(this.#interval);
    await this.#scanning;
  }

  /** Rescans now (tests, or a SIGHUP handler). */
  async rescan(): Promise<void> {
    await this.#scan();
  }

  #watch(ino: bigint): void {
    this.#watcher?.close();
    this.#dirIno = ino;
    try {
      const watcher = watch(this.dir, { persistent: false }, () => this.#schedule());
      watcher.on('error', (error) => {
        this.#log.warn('watching the services directory failed; relying on periodic rescans', {
          dir: this.dir,
          error: error.message,
        });
        watcher.close();
        if (this.#watcher === watcher) this.#watcher = undefined;
      });
      this.#watcher = watcher;
    } catch (error) {
      this.#watcher = undefined;
      this.#log.warn('cannot watch the services directory; relying on periodic rescans', {
        dir: this.dir,
        error: String(error),
      });
    }
  }

  #schedule(): void {
    if (this.#stopped) return;
    const now = Date.now();
    this.#firstEventAt ??= now;
    clearTimeout(this.#debounceTimer);
    const wait = Math.max(0, Math.min(this.#debounceMs, this.#firstEventAt + this.#maxWaitMs - now));
    this.#debounceTimer = setTimeout(() => {
      this.#firstEventAt = undefined;
      void this.#scan();
    }, wait);
  }

  #scan(): Promise<void> {
    if (this.#scanning) {
      this.#rescanRequested = true;
      return this.#scanning;
    }
    const run = async (): Promise<void> => {
      do {
        this.#rescanRequested = false;
        try {
          await this.#scanOnce();
        } catch (error) {
          this.#log.error('rescanning the services directory failed', {
            dir: this.dir,
            error: String(error),
          });
        }
      } while (this.#rescanRequested && !this.#stopped);
    };
    this.#scanning = run().finally(() => {
      this.#scanning = undefined;
    });
    return this.#scanning;
  }

  async #scanOnce(): Promise<void> {
    let names: string[];
    try {
      const dirInfo = await stat(this.dir, { bigint: true });
      if (!this.#stopped && (this.#watcher === undefined || dirInfo.ino !== this.#dirIno))
        this.#watch(dirInfo.ino);
      names = (await readdir(this.dir, { withFileTypes: true })).map((d) => d.name);
      if (this.#dirError) this.#log.info('the services directory is readable again', { dir: this.dir });
      this.#dirError = undefined;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (this.#dirError !== message) {
        this.#log.warn('cannot read the services directory; keeping what was loaded', {
          dir: this.dir,
          error: message,
        });
      }
      this.#dirError = message;
      return;
    }

    let changed = false;
    const seen = new Set<string>();
    for (const name of names.sort()) {
      if (name.startsWith('.') || !MANIFEST_EXTENSIONS.has(extname(name).toLowerCase())) continue;
      const path = join(this.dir, name);
      const result = await this.#readFile(path);
      if (result === 'gone') continue;
      seen.add(path);
      if (result === 'changed') changed = true;
    }
    for (const path of [...this.#files.keys()]) {
      if (seen.has(path)) continue;
      const entry = this.#files.get(path);
      this.#files.delete(path);
      if (entry && entry.content !== EMPTY) changed = true;
      this.#log.info('manifest file removed', { file: path });
    }
    if (changed && !this.#stopped) this.#rebuild();
  }

  async #readFile(path: string): Promise<'gone' | 'same' | 'changed'> {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(path, { bigint: true });
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return 'gone';
      return this.#fileFailed(path, '', '', error instanceof Error ? error.message : String(error));
    }
    if (!info.isFile()) return 'gone';
    const stamp = `${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
    const entry = this.#files.get(path);
    if (entry && entry.stamp === stamp) return 'same';
    if (info.size > BigInt(this.#maxFileBytes)) {
      return this.#fileFailed(path, stamp, '', `file is larger than ${this.#maxFileBytes} bytes`);
    }
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (error) {
      if (errorCode(error) === 'ENOENT') return 'gone';
      return this.#fileFailed(path, stamp, '', error instanceof Error ? error.message : String(error));
    }
    const hash = createHash('sha256').update(text).digest('base64');
    if (entry && entry.hash === hash) {
      entry.stamp = stamp;
      return 'same';
    }
    const parsed = parseManifests(text, path);
    if (!parsed.ok) return this.#fileFailed(path, stamp, hash, parsed.error);
    if (entry?.error) this.#log.info('manifest file is readable again', { file: path });
    if (entry) keepIdentity(entry.content, parsed.content);
    this.#files.set(path, { stamp, hash, content: parsed.content });
    return 'changed';
  }

  /** Keeps the file's last good content and logs the error once. */
  #fileFailed(path: string, stamp: string, hash: string, error: string): 'same' {
    const entry = this.#files.get(path);
    const hadContent = entry !== undefined && entry.content !== EMPTY;
    if (entry?.error !== error) {
      this.#log.warn(
        hadContent ? 'cannot read manifest file; keeping its last good content' : 'cannot read manifest file',
        {
          file: path,
          error,
        },
      );
    }
    if (entry) {
      entry.stamp = stamp;
      entry.hash = hash;
      entry.error = error;
    } else {
      this.#files.set(path, { stamp, hash, content: EMPTY, error });
    }
    return 'same';
  }

  #rebuild(): void {
    const byKey = new Map<string, Service>();
    const from = new Map<string, string>();
    const declared = new Map<string, Namespace>();
    const rejected: Rejected[] = [];
    for (const path of [...this.#files.keys()].sort()) {
      const content = this.#files.get(path)?.content ?? EMPTY;
      for (const service of content.services) {
        const key = serviceKey(service);
        const previous = from.get(key);
        if (previous !== undefined && previous !== path) {
          const note = `${key}:${previous}:${path}`;
          if (!this.#duplicatesLogged.has(note)) {
            this.#duplicatesLogged.add(note);
            this.#log.warn(`Service ${key} is declared in two files; the later one wins`, {
              ignored: previous,
              used: path,
            });
          }
        }
        byKey.delete(key); // keep "last wins" also in iteration order
        byKey.set(key, service);
        from.set(key, path);
      }
      for (const namespace of content.namespaces) declared.set(namespace.name, namespace);
      rejected.push(...content.rejected);
    }
    const namespaces = new Map(declared);
    for (const service of byKey.values()) {
      if (!namespaces.has(service.namespace))
        namespaces.set(service.namespace, { name: service.namespace, labels: {} });
    }

    const old = this.#snapshot;
    // Compared with the last snapshot's list, in order: no second map by key kept beside it (the
    // order follows the files, so it moves only when a Service does).
    const services = [...byKey.values()];
    const servicesChanged =
      services.length !== old.services.length || services.some((s, i) => s !== old.services[i]);
    const rejectedChanged = JSON.stringify(rejected) !== JSON.stringify(old.rejected);
    const namespacesChanged = !sameNamespaces(namespaces, old.namespaces);
    if (!servicesChanged && !rejectedChanged && !namespacesChanged) return;
    this.#snapshot = {
      services: servicesChanged ? services : old.services,
      namespaces: namespacesChanged ? namespaces : old.namespaces,
      rejected: rejectedChanged ? rejected : old.rejected,
    };
    if (!this.#synced) return; // start() reports the initial load
    // A file is re-read as a whole: the loop takes the snapshot again.
    if (namespacesChanged) this.#emitter.emit({ trigger: 'namespace' });
    if (servicesChanged || rejectedChanged) this.#emitter.emit({ trigger: 'service' });
  }
}
