// Large reviews (bodies over the gate's largeBytes) are answered on a worker thread, not on the
// event loop: parsing a 1 MiB body and reviewing it takes tens of milliseconds, and a flood of
// them on the event loop held every TLS handshake and /healthz behind it (10.9 s measured). The
// worker runs them one at a time (the gate admits a few at once), under a heap limit of its
// own and at a lower CPU priority (when the machine is busy, the event loop goes first), and is
// started on the first large review and ended when none came for a while, so an ordinary
// webhook never pays for it.

import { Worker } from 'node:worker_threads';
import type { Logger } from '@slipstream/shared/adapters/log';
import type { Policy } from '@slipstream/shared/core/policy';
import type { Answer } from './answer.ts';
import type { Job, JobResult } from './review-worker.ts';

// Source runs (tests, `npm run webhook`) start the TypeScript file; the bundle starts its own
// build of it, beside the chunk this code is in.
const WORKER_URL = new URL(
  import.meta.url.endsWith('.ts') ? './review-worker.ts' : './review-worker.mjs',
  import.meta.url,
);

/** The worker's heap: a 1 MiB body parses into ~15 MB; more than this is not a review. */
export const WORKER_HEAP_MB = 64;
/** How much lower the worker thread's CPU priority is than the event loop's (nice). */
export const WORKER_NICENESS = 10;
/** The worker ends after this long without a large review (its memory goes back). */
export const WORKER_IDLE_MS = 30_000;

interface Pending {
  resolve: (answer: Answer) => void;
  reject: (error: Error) => void;
}

export class LargeReviews {
  readonly #log: Logger;
  readonly #idleMs: number;
  #worker: Worker | undefined;
  #policyId: string | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #idle: NodeJS.Timeout | undefined;

  constructor(options: { log: Logger; idleMs?: number }) {
    this.#log = options.log;
    this.#idleMs = options.idleMs ?? WORKER_IDLE_MS;
  }

  /** Whether the worker is running now. */
  get running(): boolean {
    return this.#worker !== undefined;
  }

  review(bytes: Buffer, policy: Policy, traceparent?: string): Promise<Answer> {
    const worker = this.#start();
    clearTimeout(this.#idle);
    const id = this.#nextId++;
    // Handed over, not copied: a Buffer of its own (a pooled one would take its neighbours along).
    const own =
      bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
        ? bytes
        : Uint8Array.prototype.slice.call(bytes);
    const job: Job = { id, bytes: own, ...(traceparent ? { traceparent } : {}) };
    if (policy.id !== this.#policyId) {
      job.policy = policy;
      this.#policyId = policy.id;
    }
    return new Promise<Answer>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      worker.postMessage(job, [own.buffer as ArrayBuffer]);
    });
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(WORKER_URL, {
      resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB, maxYoungGenerationSizeMb: 8 },
      workerData: { niceness: WORKER_NICENESS },
      stdout: false,
      stderr: false,
    });
    this.#worker = worker;
    this.#policyId = undefined;
    worker.on('message', (reply: JobResult) => {
      const pending = this.#pending.get(reply.id);
      this.#pending.delete(reply.id);
      if ('failed' in reply) pending?.reject(new Error(reply.failed));
      else {
        if (reply.result.ok) reply.result.answer = Buffer.from(reply.result.answer.buffer);
        pending?.resolve(reply.result);
      }
      if (this.#pending.size === 0) {
        clearTimeout(this.#idle);
        this.#idle = setTimeout(() => void this.close(), this.#idleMs);
        this.#idle.unref();
      }
    });
    const fail = (why: string) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      for (const p of this.#pending.values()) p.reject(new Error(`the review worker stopped: ${why}`));
      if (this.#pending.size > 0)
        this.#log.error('the review worker stopped; large reviews in flight failed', { why });
      this.#pending.clear();
    };
    worker.on('error', (error) => fail(error.message));
    worker.on('exit', (code) => fail(`exit code ${code}`));
    worker.unref();
    return worker;
  }

  /** Ends the worker (reviews in flight fail). */
  async close(): Promise<void> {
    clearTimeout(this.#idle);
    const worker = this.#worker;
    if (!worker) return;
    this.#worker = undefined;
    for (const p of this.#pending.values()) p.reject(new Error('the review worker was stopped'));
    this.#pending.clear();
    await worker.terminate();
  }
}
