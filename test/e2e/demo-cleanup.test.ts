/**
 * `npm run demo` on a kernel with flowtables runs in network namespaces of this host (scripts/demo.sh). This
 * host's kernel has none, so the demo itself runs in the VM (test/kernel/demo.test.ts); here the host path is
 * forced (SLIPSTREAM_DEMO_HOST=1) and interrupted once its daemon runs, to prove that it leaves nothing
 * behind: no namespace, no process, no scratch directory.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, test } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function netnsNames(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter(Boolean);
}

/** Processes whose command line contains `needle`. */
function processesWith(needle: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes(needle)) found.push(`${pid}: ${cmd}`);
    } catch {}
  }
  return found;
}

/** Running: not gone, and not a zombie waiting for its (new) parent to reap it. */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

let child: ChildProcess | undefined;
afterAll(async () => {
  // A failed test still lets the demo clean up after itself.
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child!.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 10_000))]);
  child.kill('SIGKILL');
});

test('an interrupted demo on the host removes its namespaces, processes and files', async () => {
  child = spawn('bash', ['scripts/demo.sh'], {
    cwd: ROOT,
    env: { ...process.env, SLIPSTREAM_DEMO_HOST: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
  const prefix = `slipstream-demo-${child.pid}-`;
  // The daemon is started before this line; its scratch directory is in its command line.
  const deadline = Date.now() + 25_000;
  let daemon: string | undefined;
  while (!(out.includes('starting the real daemon') && daemon)) {
    expect(Date.now() < deadline, `the demo did not get to its daemon:\n${out}`).toBe(true);
    daemon = processesWith('daemon/src/main.ts --services /tmp/slipstream-demo.')[0];
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const work = /--services (\/tmp\/slipstream-demo\.[^/ ]+)\//.exec(daemon)?.[1];
  expect(work && existsSync(work), daemon).toBe(true);
  const ours = netnsNames().filter((n) => n.startsWith(prefix));
  expect(ours.sort(), out).toEqual([`${prefix}client`, `${prefix}node`, `${prefix}server`]);
  // The iperf3 server daemonizes itself (it is no child of the demo), in the server pod's namespace.
  const servers = execFileSync('ip', ['netns', 'pids', `${prefix}server`], { encoding: 'utf8' }).trim();
  expect(servers, 'iperf3 -s in the server namespace').not.toBe('');

  child.kill('SIGINT');
  expect(await exited, out).toBe(130);
  expect(netnsNames().filter((n) => n.startsWith(prefix))).toEqual([]);
  expect(processesWith(work!)).toEqual([]);
  for (const pid of servers.split('\n')) expect(alive(Number(pid)), `iperf3 ${pid} still runs`).toBe(false);
  expect(existsSync(work!), `${work} is left behind`).toBe(false);
}, 40_000);
