/**
 * nftables-napi: libnftables (libnftables.so.1) from Node, through an N-API addon.
 *
 * - `NftContext.run()` takes nft text or a libnftables JSON object and runs it with
 *   `nft_run_cmd_from_buffer` on a libuv worker thread. One `run` call is one libnftables
 *   invocation and so ONE atomic kernel transaction (one netlink batch) for all its commands:
 *   either every command commits or none does.
 * - Output is libnftables' JSON output mode, parsed. Failures reject with `NftError`.
 * - Runs are serialized: per context (a libnftables ctx is not thread-safe) and, because
 *   libnftables also keeps process-global state, across all contexts of the process.
 */
import { getSystemErrorMessage } from 'node:util';
import { binding, type NativeContext, type NativeRunResult } from './binding.ts';
import { classifyNftError, firstErrorLine, NftError, type NftErrorClass } from './errors.ts';

export { NftBatch, type SetElement, type SetElementsOp } from './batch.ts';
export { type MonitorEvent, NftMonitor, type TableChange } from './monitor.ts';
export { classifyNftError, NftError, type NftErrorClass };

export interface NftContextOptions {
  /** Path of a network namespace (e.g. `/run/netns/NAME`): every command runs inside it. */
  netns?: string;
  /**
   * Receives what libnftables printed straight to the C stderr during a run (e.g. "Operation not
   * permitted (you must be root)"): captured so that it never reaches the process's stderr as a
   * stray unstructured line. Failed runs also carry it in their NftError message.
   */
  onStray?: (text: string) => void;
}

export interface RunOptions {
  /**
   * Dry run (libnftables NFT_CTX_DRY_RUN, `nft -c`) for this run only. libnftables still sends
   * the batch to the kernel, without the batch-end message, so the kernel validates every
   * command (e.g. `create` of an existing object fails with class `exists`) and then aborts
   * the transaction: nothing is committed.
   */
  check?: boolean;
  /**
   * Free libnftables' context after this run (the next run opens a new one) and return freed
   * native memory to the kernel (malloc_trim). libnftables otherwise keeps its cache, every
   * object and element it listed or checked (~1 KB per map element), until a later run sees a
   * new generation: a listing of 100,000 elements stays resident. The port id changes with it.
   */
  release?: boolean;
}

const FLOWTABLE_TEXT = /\bflowtables?\b|\bflow\s+(?:add|offload)\b/i;
const FLOWTABLE_JSON = /"(?:flowtable|flow)"\s*:/;

/**
 * Whether the failing part of a run is a flowtable or a `flow add` statement: the text under
 * the carets of the first error (nft text input), or, when libnftables echoes no command (JSON
 * input), the whole input.
 */
export function involvesFlowtable(message: string, commands: string): boolean {
  const lines = message.split('\n');
  const at = lines.findIndex((line) => /\bError:/.test(line));
  const echoed = at >= 0 ? lines[at + 1] : undefined;
  const carets = at >= 0 ? lines[at + 2] : undefined;
  if (echoed !== undefined && echoed.trim() !== '' && carets !== undefined && /^\s*\^/.test(carets)) {
    const start = carets.indexOf('^');
    const end = carets.lastIndexOf('^') + 1;
    return FLOWTABLE_TEXT.test(echoed.slice(start, end));
  }
  return FLOWTABLE_TEXT.test(commands) || FLOWTABLE_JSON.test(commands);
}

/**
 * Output of one run: null when empty; the parsed document; several documents (one per
 * listing command, one per line) merged into one `{nftables: [metainfo, ...items]}`; if the
 * output is not JSON at all (a few commands print text even in JSON mode), the raw text.
 */
export function parseNftOutput(text: string): unknown {
  const trimmed = text.trim();
  if (trimmed === '') return null;
  try {
    return JSON.parse(trimmed);
  } catch {
    // several documents, or not JSON
  }
  let docs: unknown[];
  try {
    docs = trimmed
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as unknown);
  } catch {
    return trimmed;
  }
  const arrays = docs.map((doc) =>
    typeof doc === 'object' && doc !== null && Array.isArray((doc as { nftables?: unknown }).nftables)
      ? ((doc as { nftables: unknown[] }).nftables as unknown[])
      : undefined,
  );
  if (arrays.some((a) => a === undefined)) return docs;
  const merged: unknown[] = [];
  let sawMetainfo = false;
  for (const items of arrays as unknown[][]) {
    for (const item of items) {
      const isMeta = typeof item === 'object' && item !== null && 'metainfo' in item;
      if (isMeta && sawMetainfo) continue;
      if (isMeta) sawMetainfo = true;
      merged.push(item);
    }
  }
  return { nftables: merged };
}

// One queue for the whole process: runs of one context must be serialized (the libnftables
// ctx is not thread-safe), and runs of different contexts too (libnftables' interface cache
// and one-time initialisation are process-global). Queuing here rather than blocking on the
// native mutex keeps libuv pool threads free for other work.
let queueTail: Promise<void> = Promise.resolve();
function enqueue<T>(job: () => Promise<T>): Promise<T> {
  const result = queueTail.then(job);
  queueTail = result.then(
    () => undefined,
    () => undefined,
  );
  return result;
}

const PROBE_TABLE = '__nftables_napi_probe';
const FLOWTABLE_PROBE =
  `add table inet ${PROBE_TABLE}\n` + `add flowtable inet ${PROBE_TABLE} ft { hook ingress priority 0; }\n`;
/** Kernel flowtable support; kernel modules are global, so one answer serves every namespace. */
let flowtableSupport: boolean | undefined;

function serialize(commands: string | object): string {
  if (typeof commands === 'string') return commands;
  if (typeof commands !== 'object' || commands === null) {
    throw new TypeError('commands must be nft text or a libnftables JSON object');
  }
  return JSON.stringify(commands);
}

function failureText(res: NativeRunResult): string {
  if (res.error.trim() !== '') return res.error;
  const reason = res.errno > 0 ? getSystemErrorMessage(-res.errno) : 'no error text';
  return `Error: libnftables failed (rc ${res.rc}): ${reason}`;
}

export class NftContext {
  readonly #native: NativeContext;
  readonly #onStray: ((text: string) => void) | undefined;
  #closed = false;

  constructor(options: NftContextOptions = {}) {
    this.#native = new binding.NftContextNative(options.netns);
    this.#onStray = options.onStray;
  }

  /**
   * The netlink port id of this context's libnftables socket (0 before the first run): nf_tables
   * change events carry the committing socket's port id, so a monitor can tell this context's
   * commits from anyone else's.
   */
  get portId(): number {
    return this.#native.portId();
  }

  /**
   * Runs nft text or a libnftables JSON object (`{nftables: [...]}`) as one atomic transaction.
   * Resolves with the parsed JSON output, or null when there is none. Rejects with NftError.
   *
   * A `No such file or directory` from the kernel on a flowtable or `flow add` command is
   * ambiguous (a kernel without flowtable support answers the same): the context then asks the
   * kernel once, with a dry-run flowtable probe, and reports `not-supported` when the kernel
   * lacks flowtables, `no-such-object` otherwise.
   */
  run(commands: string | object, options: RunOptions = {}): Promise<unknown> {
    let text: string;
    try {
      text = serialize(commands);
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#closed) return Promise.reject(new Error('NftContext is closed'));
    const check = options.check === true;
    const release = options.release === true;
    return enqueue(async () => {
      const res = await this.#runNative(text, check, release);
      const stray = res.stray.trim();
      if (stray !== '') this.#onStray?.(stray);
      if (res.rc === 0) return parseNftOutput(res.output);
      const message = stray === '' ? failureText(res) : `${failureText(res).trimEnd()}\n${stray}`;
      const errorClass = classifyNftError(message);
      if (
        errorClass === 'no-such-object' &&
        /Could not process rule:/.test(firstErrorLine(message)) &&
        involvesFlowtable(message, text) &&
        (await this.#probeFlowtables()) === false
      ) {
        throw new NftError(message, 'not-supported', 'this kernel has no nf_tables flowtable support');
      }
      throw new NftError(message, errorClass);
    });
  }

  /**
   * Whether the kernel supports nf_tables flowtables (answer cached per process), or null when
   * the dry-run probe fails for another reason. Commits nothing.
   */
  flowtablesSupported(): Promise<boolean | null> {
    if (this.#closed) return Promise.reject(new Error('NftContext is closed'));
    return enqueue(async () => (await this.#probeFlowtables()) ?? null);
  }

  /**
   * Stops accepting runs. Runs already accepted still complete; the libnftables context (and its
   * netlink socket) is freed after them.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    void enqueue(async () => this.#native.close());
  }

  async #runNative(text: string, check: boolean, release = false): Promise<NativeRunResult> {
    try {
      return await this.#native.run(text, check, release);
    } catch (err) {
      // Setting up the run failed (namespace, netlink socket): not an nft error text.
      const message = err instanceof Error ? err.message : String(err);
      throw new NftError(message, classifyNftError(message));
    }
  }

  /** Must be called from inside a queued job. */
  async #probeFlowtables(): Promise<boolean | undefined> {
    if (flowtableSupport !== undefined) return flowtableSupport;
    let res: NativeRunResult;
    try {
      res = await this.#runNative(FLOWTABLE_PROBE, true);
    } catch {
      return undefined;
    }
    if (res.rc === 0) flowtableSupport = true;
    else if (classifyNftError(res.error) === 'no-such-object') flowtableSupport = false;
    return flowtableSupport;
  }
}
