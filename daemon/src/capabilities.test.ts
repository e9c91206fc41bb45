import { describe, expect, it } from 'vitest';
import { flowtableProbeCommands, probeCapabilities } from './capabilities.ts';
import { KernelError } from './kernel.ts';

describe('probeCapabilities', () => {
  it('dry-runs a flowtable and a flow add rule', async () => {
    const calls: { commands: unknown; check?: boolean }[] = [];
    const caps = await probeCapabilities({
      run: async (commands, options) => {
        calls.push({ commands, check: options?.check });
        return null;
      },
    });
    expect(caps).toEqual({ flowtable: true });
    expect(calls).toEqual([{ commands: flowtableProbeCommands(), check: true }]);
    expect(JSON.stringify(calls[0]?.commands)).toContain('"flow":{"op":"add","flowtable":"@ft"}');
  });

  it('reports a kernel without flowtables as degraded, with the reason', async () => {
    const caps = await probeCapabilities({
      run: async () => {
        throw new KernelError('Error: Could not process rule: No such file or directory', 'not-supported');
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
          throw new KernelError('Error: Could not process rule: Operation not permitted', 'permission');
        },
      }),
    ).rejects.toMatchObject({ errorClass: 'permission' });
  });
});
