// Command-line values both components take: durations and HOST:PORT listen addresses, with one
// grammar each and errors that name the flag. Argument splitting itself is node:util's parseArgs.

export class UsageError extends Error {
  override name = 'UsageError';
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d))+$/;

/** Node timers fire after 1 ms when asked to wait longer than this (TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2_147_483_647;

export interface DurationLimits {
  /** Accept `0` (and `0s`): "off" for periods that can be disabled. Default false. */
  allowZero?: boolean;
  /** Refuse longer durations (e.g. MAX_TIMER_MS for anything that becomes a timer). */
  maxMs?: number;
}

/** `500ms`, `1.5s`, `5m`, `1h30m`, `90d` in milliseconds; throws UsageError naming `flag` otherwise. */
export function parseDuration(flag: string, value: string, limits: DurationLimits = {}): number {
  const text = value.trim();
  if (limits.allowZero && text === '0') return 0;
  if (!DURATION.test(text)) {
    throw new UsageError(
      `${flag} ${JSON.stringify(value)} is not a duration like 500ms, 30s, 5m, 1h30m, 90d`,
    );
  }
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/g)) {
    ms += Number(n) * UNITS[unit!]!;
  }
  ms = Math.round(ms);
  if (ms === 0 && !limits.allowZero)
    throw new UsageError(`${flag} ${JSON.stringify(value)} must be positive`);
  if (!Number.isSafeInteger(ms) || (limits.maxMs !== undefined && ms > limits.maxMs)) {
    const most = limits.maxMs === undefined ? '' : ` (at most ${Math.floor(limits.maxMs / 3_600_000)}h)`;
    throw new UsageError(`${flag} ${JSON.stringify(value)} is too long${most}`);
  }
  return ms;
}

export interface HostPort {
  host: string;
  port: number;
}

/** `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all addresses); throws UsageError naming `flag` otherwise. */
export function parseHostPort(flag: string, value: string): HostPort {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port > 65535) {
    throw new UsageError(
      `${flag} ${JSON.stringify(value)} is not HOST:PORT (e.g. 127.0.0.1:9469, [::]:8443)`,
    );
  }
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}
