import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, Proc, run, until } from './process.ts';

const dir = mkdtempSync(join(tmpdir(), 'slipstream-proc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, source: string): string {
  const path = join(dir, `${name}.mjs`);
  writeFileSync(path, source);
  return path;
}

describe('Proc and run', () => {
  it('collects stdout, parses stderr lines (JSON or raw, a last line without newline too), and the exit', async () => {
    const path = script(
      'exit3',
      `process.stdout.write('out');
       process.stderr.write(JSON.stringify({ level: 'info', msg: 'one' }) + '\\nnot json\\n');
       process.stderr.write('{"msg":"last"}', () => process.exit(3));`,
    );
    const r = await run(path, []);
    expect(r).toMatchObject({ code: 3, signal: null, stdout: 'out' });
    expect(r.logs).toEqual([{ level: 'info', msg: 'one' }, { raw: 'not json' }, { msg: 'last' }]);
  });

  it('passes the arguments and exactly the environment given', async () => {
    const path = script(
      'env',
      `console.error(JSON.stringify({ argv: process.argv.slice(2), x: process.env.X ?? null, path: process.env.PATH ?? null }));`,
    );
    const r = await run(path, ['a', 'b'], { env: { X: '1', PATH: undefined } });
    expect(r.logs).toEqual([{ argv: ['a', 'b'], x: '1', path: null }]);
  });

  it('waitForLog resolves when the line is written, and stop() ends the process', async () => {
    const path = script(
      'later',
      `setTimeout(() => console.error(JSON.stringify({ msg: 'ready', n: 1 })), 100); setInterval(() => {}, 1000);`,
    );
    const p = new Proc(path, [], { name: 'later' });
    const line = await p.waitForLog('ready', (l) => l.msg === 'ready');
    expect(line).toEqual({ msg: 'ready', n: 1 });
    expect(p.running).toBe(true);
    expect(await p.stop()).toEqual({ code: null, signal: 'SIGTERM' });
    expect(p.running).toBe(false);
    expect(p.exitStatus).toEqual({ code: null, signal: 'SIGTERM' });
  });

  it('waitForLog fails, naming the process and its exit, when it exits first; and at its bound', async () => {
    const quits = new Proc(script('quits', `console.error('bye'); process.exit(4);`), [], { name: 'quits' });
    await expect(quits.waitForLog('ready', (l) => l.msg === 'ready')).rejects.toThrow(
      /^quits exited \(4\) before ready\nbye/,
    );
    const silent = new Proc(script('silent', 'setInterval(() => {}, 1000);'), [], { name: 'silent' });
    await expect(silent.waitForLog('ready', () => false, 200)).rejects.toThrow(
      'timed out waiting for silent: ready',
    );
    await silent.stop();
  });

  it('exit() kills a process that does not exit within the bound, and says so', async () => {
    const p = new Proc(script('stuck', 'setInterval(() => {}, 1000);'), [], { name: 'stuck' });
    await expect(p.exit(200)).rejects.toThrow('stuck did not exit within 200 ms');
    expect(await p.exited).toEqual({ code: null, signal: 'SIGKILL' });
  });
});

describe('until and freePort', () => {
  it('until returns the first truthy value, and fails at its bound with the context', async () => {
    let n = 0;
    expect(await until('three', () => (++n >= 3 ? n : undefined))).toBe(3);
    await expect(
      until(
        'never',
        () => false,
        () => 'the context',
        100,
      ),
    ).rejects.toThrow('timed out waiting for never\nthe context');
  });

  it('freePort gives a port that can be listened on', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const path = script(
      'listen',
      `import { createServer } from 'node:net'; const s = createServer().listen(${port}, '127.0.0.1', () => { console.error('{"msg":"up"}'); s.close(); });`,
    );
    const r = await run(path, []);
    expect(r).toMatchObject({ code: 0, logs: [{ msg: 'up' }] });
  });
});
