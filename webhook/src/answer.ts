// One review's CPU work, from the body's bytes to the answer's: nesting check and JSON.parse,
// the pure `review`, JSON.stringify. Run on the event loop for small bodies (app.ts) and on the
// review worker for large ones (review-worker.ts); the same function either way.

import type { Policy } from '@slipstream/shared/core/policy';
import { HttpError, parseJsonBody } from './body.ts';
import { type ReviewOutcome, review } from './review.ts';

export type Answer =
  | { ok: true; answer: Uint8Array; outcome: ReviewOutcome }
  | { ok: false; status: number; message: string };

export function answerReview(bytes: Uint8Array, policy: Policy, traceparent?: string): Answer {
  try {
    const body = parseJsonBody(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    const result = review(body, { policy, ...(traceparent ? { traceparent } : {}) });
    if (!result.ok) return { ok: false, status: 400, message: result.error };
    return { ok: true, answer: Buffer.from(JSON.stringify(result.review)), outcome: result.outcome };
  } catch (error) {
    if (error instanceof HttpError) return { ok: false, status: error.status, message: error.message };
    throw error;
  }
}
