import { readdirSync, readFileSync } from 'node:fs';
import { memoryLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { parsePolicy } from '@slipstream/shared/core/policy';
import { describe, expect, it } from 'vitest';
import { decodePatch, loadFixtures } from '../../test/lib/admission-fixtures.ts';
import type { AdmissionReviewResponse } from './admission.ts';
import { LargeReviews, WORKER_NICENESS } from './large-reviews.ts';
import { review } from './review.ts';

const policy = loadDefaultPolicy();
const postgres = loadFixtures(policy.id).find((f) => f.name === 'postgres-create')!;
const bytes = () => Buffer.from(JSON.stringify(postgres.review));

describe('LargeReviews (the review worker thread)', () => {
  it('answers as the event loop would, starts on demand and ends when idle', async () => {
    const large = new LargeReviews({ log: memoryLogger(), idleMs: 200 });
    try {
      expect(large.running).toBe(false);
      const answer = await large.review(bytes(), policy, `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`);
      expect(large.running).toBe(true);
      if (!answer.ok) throw new Error(answer.message);
      const expected = review(postgres.review, {
        policy,
        traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`,
      });
      if (!expected.ok) throw new Error(expected.error);
      expect(JSON.parse(Buffer.from(answer.answer).toString('utf8'))).toEqual(expected.review);
      expect(answer.outcome).toEqual(expected.outcome);
      await new Promise((r) => setTimeout(r, 600));
      expect(large.running).toBe(false);
      // And again after it ended.
      expect((await large.review(bytes(), policy)).ok).toBe(true);
    } finally {
      await large.close();
    }
  });

  it('uses the policy it is given (a reload reaches the worker) and reports bad bodies as 4xx', async () => {
    const large = new LargeReviews({ log: memoryLogger() });
    try {
      const nothing = parsePolicy(
        'name: nothing\nversion: 1\ndefault: { offload: false, reason: off }\nrules: []\n',
        'p',
      );
      const first = await large.review(bytes(), policy);
      const second = await large.review(bytes(), nothing);
      if (!first.ok || !second.ok) throw new Error('not answered');
      const offload = (a: Uint8Array) =>
        (
          decodePatch(JSON.parse(Buffer.from(a).toString('utf8')) as AdmissionReviewResponse)[0] as {
            value: Record<string, string>;
          }
        ).value['hints.slipstream.dev/offload'];
      expect(offload(first.answer)).toBe('5432/TCP=20');
      expect(offload(second.answer)).toBe('none');
      expect(await large.review(Buffer.from('{"kind":'), policy)).toMatchObject({ ok: false, status: 400 });
    } finally {
      await large.close();
    }
  });

  it('runs its thread at a lower CPU priority than the event loop', async () => {
    const large = new LargeReviews({ log: memoryLogger() });
    const niceOf = (stat: string) => Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
    const threads = () =>
      readdirSync('/proc/self/task').map((tid) =>
        niceOf(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')),
      );
    try {
      const before = threads().filter((n) => n === WORKER_NICENESS).length;
      expect((await large.review(bytes(), policy)).ok).toBe(true);
      expect(threads().filter((n) => n === WORKER_NICENESS).length).toBe(before + 1);
      expect(niceOf(readFileSync('/proc/thread-self/stat', 'utf8'))).toBe(0);
    } finally {
      await large.close();
    }
  });
});
