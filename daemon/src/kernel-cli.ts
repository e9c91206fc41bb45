// An NftRunner that shells out to the nft CLI (`ip netns exec NS nft -j -f FILE`), with the same
// contract as nftables-napi's NftContext.run. The daemon's kernel edge is nftables-napi; this
// runner exists for tests (an independent observer of the kernel, and a fallback when the addon
// is not built) and for debugging on hosts without the addon.

import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { classifyNftError } from 'nftables-napi/errors';
import { kernelError, type NftRunner } from './kernel.ts';

function exec(file: string, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    execFile(file, args, { maxBuffer: 512 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ stdout, stderr, code });
    });
  });
}

/** Runs `nft` (inside `ip netns exec NAME` when a namespace name is given). */
export function nft(netns: string | undefined, args: string[]) {
  return netns ? exec('ip', ['netns', 'exec', netns, 'nft', ...args]) : exec('nft', args);
}

export class CliRunner implements NftRunner {
  readonly #netns: string | undefined;

  /** `netns`: a namespace name as `ip netns` knows it. */
  constructor(netns?: string) {
    this.#netns = netns;
  }

  async run(commands: string | object, options: { check?: boolean } = {}): Promise<unknown> {
    const text = typeof commands === 'string' ? commands : JSON.stringify(commands);
    // nft cannot read /dev/stdin from Node's stdio (a socket): pass a file.
    const dir = await mkdtemp(join(tmpdir(), 'slipstream-nft-'));
    try {
      const file = join(dir, 'commands');
      await writeFile(file, text);
      const args = ['-j', ...(options.check ? ['-c'] : []), '-f', file];
      const { stdout, stderr, code } = await nft(this.#netns, args);
      if (code !== 0) throw kernelError(stderr || `nft exited with ${code}`, classifyNftError(stderr));
      const out = stdout.trim();
      return out === '' ? null : (JSON.parse(out) as unknown);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  close(): void {}
}
