import { describe, expect, it } from 'vitest';
import { flowtableProbe, probeCapabilities } from './capabilities.ts';
import { kernelError } from './kernel.ts';

describe('probeCapabilities', () => {
  it('dry-runs a flowtable with a flow add rule, then with the counter flag', async () => {
    const calls: { commands: unknown; check?: boolean }[] = [];
    const caps = await probeCapabilities({
      run: async (commands, options) => {
        calls.push({ commands, check: options?.check });
        return null;
      },
    });
    expect(caps).toEqual({ flowtable: true, flowtableCounter: true });
    expect(calls).toEqual([
      { commands: flowtableProbe(false), check: true },
      { commands: flowtableProbe(true), check: true },
    ]);
    expect(calls[0]?.commands).toContain('flow add @ft');
    expect(calls[1]?.commands).toContain('counter; }');
  });

  it('offloads without the counter flag where the kernel lacks it, saying what is lost', async () => {
    const caps = await probeCapabilities({
      run: async (commands) => {
        if (String(commands).includes('counter;')) {
          throw kernelError('Error: Could not process rule: Operation not supported', 'not-supported');
        }
        return null;
      },
    });
    expect(caps).toMatchObject({ flowtable: true, flowtableCounter: false });
    expect(caps.reason).toMatch(/counter flag/);
  });

  it('reports a kernel without flowtables as degraded, with the reason', async () => {
    const caps = await probeCapabilities({
      run: async () => {
        throw kernelError('Error: Could not process rule: No such file or directory', 'not-supported');
      },
    });
    expect(caps).toEqual({
      flowtable: false,
      reason: 'flowtable probe failed: Error: Could not process rule: No such file or directory',
    });
  });

  it('fails when nf_tables cannot be used at all', async () => {
    await expect(
      probeCapabilities({
        run: async () => {
          throw kernelError('Error: Could not process rule: Operation not permitted', 'permission');
        },
      }),
    ).rejects.toMatchObject({ errorClass: 'permission' });
  });
});
