import { describe, expect, it } from 'vitest';
import { createLogger, LogOnce, memoryLogger } from './log.ts';

describe('createLogger', () => {
  it('writes one JSON object per line, with time, level, msg and fields', () => {
    const lines: string[] = [];
    const log = createLogger({ write: (l) => lines.push(l) });
    log.info('sync', { services: 3 });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.endsWith('\n')).toBe(true);
    const parsed = JSON.parse(lines[0]!);
    expect(parsed).toMatchObject({ level: 'info', msg: 'sync', services: 3 });
    expect(Number.isNaN(Date.parse(parsed.time))).toBe(false);
  });

  it('drops lines below the minimum level', () => {
    const lines: string[] = [];
    const log = createLogger({ write: (l) => lines.push(l), minimum: 'warn' });
    log.debug('a');
    log.info('b');
    log.warn('c');
    log.error('d');
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(['c', 'd']);
  });

  it('keeps the line when a field cannot be serialized', () => {
    const lines: string[] = [];
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    createLogger({ write: (l) => lines.push(l) }).error('odd', { cyclic });
    expect(JSON.parse(lines[0]!).msg).toBe('odd');
  });
});

describe('LogOnce', () => {
  it('logs a condition once per distinct text, again after clear', () => {
    const mem = memoryLogger();
    const once = new LogOnce();
    const report = (text: string) => once.report('shop/db', text, () => mem.warn(text));
    expect(report('bad ClusterIP')).toBe(true);
    expect(report('bad ClusterIP')).toBe(false);
    expect(report('bad port')).toBe(true);
    once.clear('shop/db');
    expect(report('bad port')).toBe(true);
    expect(mem.lines.map((l) => l.msg)).toEqual(['bad ClusterIP', 'bad port', 'bad port']);
  });

  it('forgets keys that are not retained', () => {
    const once = new LogOnce();
    once.report('a', 'x', () => {});
    once.report('b', 'x', () => {});
    once.retain((k) => k === 'a');
    expect(once.size).toBe(1);
  });
});
