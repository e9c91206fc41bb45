// The review worker's thread: answers the large reviews the event loop hands it (large-reviews.ts),
// one at a time. A message is { id, bytes, policy? } (the policy only when it changed); the
// answer { id, result } carries the answer's bytes back without copying.

import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { Policy } from '@slipstream/shared/core/policy';
import { type Answer, answerReview } from './answer.ts';

export interface Job {
  id: number;
  bytes: Uint8Array;
  policy?: Policy;
  traceparent?: string;
}

export type JobResult = { id: number; result: Answer } | { id: number; failed: string };

// Large reviews yield the CPU to the event loop: when the machine is busy, /healthz, handshakes and
// small reviews go first. On Linux a thread's id is a process id to setpriority; lowering one's own
// priority needs no privilege. Elsewhere this does nothing.
const niceness = (workerData as { niceness?: unknown } | null)?.niceness;
if (!isMainThread && typeof niceness === 'number') {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').at(-1));
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, niceness);
  } catch {
    // not Linux, or no /proc: the same priority as the event loop
  }
}

let policy: Policy | undefined;
parentPort?.on('message', (job: Job) => {
  if (job.policy) policy = job.policy;
  let reply: JobResult;
  try {
    if (!policy) throw new Error('no policy received');
    const result = answerReview(job.bytes, policy, job.traceparent);
    // Its own buffer, so that handing it over detaches nothing else (small Buffers share a pool).
    if (result.ok) result.answer = new Uint8Array(result.answer);
    reply = { id: job.id, result };
  } catch (error) {
    reply = { id: job.id, failed: error instanceof Error ? error.message : String(error) };
  }
  const transfer = 'result' in reply && reply.result.ok ? [reply.result.answer.buffer as ArrayBuffer] : [];
  parentPort?.postMessage(reply, transfer);
});
