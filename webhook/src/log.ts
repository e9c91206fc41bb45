// Structured log lines (one JSON object per line on stderr) for lifecycle events: start, reloads,
// shutdown, unexpected errors. Reviews are not logged one by one; their record is the span.

export type Level = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  log(level: Level, msg: string, fields?: Record<string, unknown>): void;
}

const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function createLogger(
  write: (line: string) => void = (line) => process.stderr.write(line),
  minimum: Level = 'info',
): Logger {
  return {
    log(level, msg, fields) {
      if (ORDER[level] < ORDER[minimum]) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
    },
  };
}

/** Keeps lines in memory (tests). */
export function memoryLogger(): Logger & {
  lines: { level: Level; msg: string; fields?: Record<string, unknown> }[];
} {
  const lines: { level: Level; msg: string; fields?: Record<string, unknown> }[] = [];
  return {
    lines,
    log(level, msg, fields) {
      lines.push(fields === undefined ? { level, msg } : { level, msg, fields });
    },
  };
}
