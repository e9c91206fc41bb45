// Loads the native addon once, for the context and the monitor.
import { createRequire } from 'node:module';

export interface NativeRunResult {
  rc: number;
  errno: number;
  output: string;
  error: string;
  /** What libnftables printed to the C stderr during the run (captured, not on the process's stderr). */
  stray: string;
}

export interface NativeContext {
  run(commands: string, check: boolean, release: boolean): Promise<NativeRunResult>;
  close(): void;
  /** The netlink port id of the libnftables socket (0 until the first run creates it). */
  portId(): number;
}

export type NativeMonitorEvent =
  | {
      type: 'batch';
      generation: number;
      portId: number;
      pid: number;
      process: string;
      changes: { op: 'add' | 'delete'; kind: string; name: string; count: number }[];
    }
  | { type: 'generation'; seq: number; generation: number }
  | { type: 'flowtable'; seq: number; flags: number; hook: number; priority: number; devices: string[] }
  | { type: 'reply-error'; seq: number; errno: number; message: string }
  | { type: 'overrun' }
  | { type: 'error'; message: string };

export interface NativeMonitor {
  /** Sends NFT_MSG_GETGEN; returns the request's sequence number. */
  requestGeneration(): number;
  /** Sends NFT_MSG_GETFLOWTABLE; returns the request's sequence number. */
  requestFlowtable(family: number, table: string, name: string): number;
  close(): void;
  portId(): number;
}

export interface NativeBatch {
  /** Sends a prepared netlink batch; resolves with the kernel's answer (0 or errno) to each message, by sequence number. */
  send(batch: Buffer, acked: number[]): Promise<{ seq: number; errno: number }[]>;
  close(): void;
  portId(): number;
}

export interface NativeBinding {
  NftBatchNative: new (netns?: string) => NativeBatch;
  NftContextNative: new (netns?: string) => NativeContext;
  NftMonitorNative: new (
    netns: string | undefined,
    family: number,
    table: string,
    rcvbuf: number,
    callback: (event: NativeMonitorEvent) => void,
  ) => NativeMonitor;
}

function loadBinding(): NativeBinding {
  try {
    return createRequire(import.meta.url)('./build/Release/nftables_napi.node') as NativeBinding;
  } catch (err) {
    throw new Error(
      'nftables-napi: cannot load build/Release/nftables_napi.node; it is built by `npm install` ' +
        '(needs libnftables-dev, a C++ toolchain and python3)',
      { cause: err },
    );
  }
}

export const binding = loadBinding();
