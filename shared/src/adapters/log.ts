// The one logger of both components: one JSON object per line on stderr, so that a cluster's log
// pipeline parses every line. Reviews and syncs are not logged one by one when nothing happens;
// their record is the span (and the metrics).

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  /** Where lines go (default: stderr). */
  write?: (line: string) => void;
  /** Lines below this level are dropped (default: info). */
  minimum?: Level;
}

function fromLevel(emit: (level: Level, msg: string, fields?: Fields) => void): Logger {
  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
  };
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const minimum = ORDER[options.minimum ?? 'info'];
  return fromLevel((level, msg, fields) => {
    if (ORDER[level] < minimum) return;
    let line: string;
    try {
      line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields });
    } catch {
      // A field that cannot be serialized (a cycle, a BigInt) must not lose the line.
      line = JSON.stringify({ time: new Date().toISOString(), level, msg, fields: String(fields) });
    }
    write(`${line}\n`);
  });
}

export const stderrLogger: Logger = createLogger();

export const silentLogger: Logger = fromLevel(() => {});

export interface LogLine {
  level: Level;
  msg: string;
  fields?: Fields;
}

/** Keeps lines in memory (tests). */
export function memoryLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  return {
    lines,
    ...fromLevel((level, msg, fields) => {
      lines.push(fields === undefined ? { level, msg } : { level, msg, fields });
    }),
  };
}

/**
 * Logs a condition once per distinct value: `once.report(key, text, log)` logs when `text` is new
 * for `key` (a Service, a file, a device), and stays silent while it repeats; `clear(key)` forgets
 * it, so the next report logs again. One line per change of a thing, never one per sync or retry.
 */
export class LogOnce {
  readonly #seen = new Map<string, string>();

  /** True when this is new for `key` (and `log` was called). */
  report(key: string, text: string, log: () => void): boolean {
    if (this.#seen.get(key) === text) return false;
    this.#seen.set(key, text);
    log();
    return true;
  }

  clear(key: string): boolean {
    return this.#seen.delete(key);
  }

  /** Forgets every key not in `keep` (things that went away). */
  retain(keep: (key: string) => boolean): void {
    for (const key of this.#seen.keys()) if (!keep(key)) this.#seen.delete(key);
  }

  get size(): number {
    return this.#seen.size;
  }
}
