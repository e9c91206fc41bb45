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
import { createRequire } from 'node:module';
import { getSystemErrorMessage } from 'node:util';

export type NftErrorClass =
  | 'not-supported'
  | 'no-such-object'
  | 'exists'
  | 'busy'
  | 'permission'
  | 'invalid'
  | 'unknown';

export interface NftContextOptions {
  /** Path of a network namespace (e.g. `/run/netns/NAME`): every command runs inside it. */
  netns?: string;
}

export interface RunOptions {
  /**
   * Dry run (libnftables NFT_CTX_DRY_RUN, `nft -c`) for this run only. libnftables still sends
   * the batch to the kernel, without the batch-end message, so the kernel validates every
   * command (e.g. `create` of an existing object fails with class `exists`) and then aborts
   * the transaction: nothing is committed.
   */
  check?: boolean;
}

/** A failed run. `nftMessage` is libnftables' error text, verbatim. */
export class NftError extends Error {
  readonly errorClass: NftErrorClass;
  readonly nftMessage: string;

  constructor(nftMessage: string, errorClass: NftErrorClass, note?: string) {
    const text = nftMessage.trim();
    super(note ? `${text} (${note})` : text);
    this.name = 'NftError';
    this.errorClass = errorClass;
    this.nftMessage = nftMessage;
  }
}

interface NativeRunResult {
  rc: number;
  errno: number;
  output: string;
  error: string;
}

interface NativeContext {
  run(commands: string, check: boolean): Promise<NativeRunResult>;
  close(): void;
}

interface NativeBinding {
  NftContextNative: new (netns?: string) => NativeContext;
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

const binding = loadBinding();

const ERRNO_CLASSES: ReadonlyArray<readonly [RegExp, NftErrorClass]> = [
  [/Operation not supported/i, 'not-supported'],
  [/No such file or directory/i, 'no-such-object'],
  [/File exists/i, 'exists'],
  [/Device or resource busy/i, 'busy'],
  [/Operation not permitted|Permission denied/i, 'permission'],
  [/Invalid argument/i, 'invalid'],
];

/** The first `Error:` line of a libnftables error text (the whole text if there is none). */
function firstErrorLine(message: string): string {
  return message.split('\n').find((line) => /\bError:/.test(line)) ?? message;
}

/**
 * Class of a libnftables error text, from its first `Error:` line: the kernel's errno text
 * when there is one (`Could not process rule: File exists`, ...), otherwise a parser or
 * evaluation error (`syntax error`, `datatype mismatch`, ...), which is `invalid`.
 * Does not apply the flowtable rule (see `NftContext.run`).
 */
export function classifyNftError(message: string): NftErrorClass {
  const line = firstErrorLine(message);
  for (const [pattern, errorClass] of ERRNO_CLASSES) {
    if (pattern.test(line)) return errorClass;
  }
  if (/Could not process rule:/.test(line)) return 'unknown';
  if (/\bError:/.test(line)) return 'invalid';
  return 'unknown';
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
  #closed = false;

  constructor(options: NftContextOptions = {}) {
    this.#native = new binding.NftContextNative(options.netns);
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
    return enqueue(async () => {
      const res = await this.#runNative(text, check);
      if (res.rc === 0) return parseNftOutput(res.output);
      const message = failureText(res);
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

  async #runNative(text: string, check: boolean): Promise<NativeRunResult> {
    try {
      return await this.#native.run(text, check);
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
