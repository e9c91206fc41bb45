// The review worker's thread: answers the large reviews the event loop hands it (large-reviews.ts),
// one at a time. A message is { id, bytes, policy? } (the policy only when it changed); the
// answer { id, result } carries the answer's bytes back without copying.

import { parentPort } from 'node:worker_threads';
import type { Policy } from '@slipstream/shared/core/policy';
import { type Answer, answerReview } from './answer.ts';

export interface Job {
  id: number;
  bytes: Uint8Array;
  policy?: Policy;
  traceparent?: string;
}

export type JobResult = { id: number; result: Answer } | { id: number; failed: string };

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
