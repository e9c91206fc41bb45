// The production bundle (what the image and the benchmark run): built by esbuild, started with the
// Deployment's command, it finds the shipped policy and its review worker, and answers reviews of
// every size.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildBundle, WEBHOOK } from '../scripts/build.ts';
import { decodePatch, loadFixtures } from '../test/lib/admission-fixtures.ts';
import { postReview } from '../test/lib/webhook-client.ts';
import { productionEntry, spawnWebhook } from '../test/lib/webhook-process.ts';
import type { AdmissionReviewResponse } from './src/admission.ts';
import { review } from './src/review.ts';

const policy = loadDefaultPolicy();

/** The answer with its patch decoded and the trace context (a new one per process) left out. */
function comparable(answer: unknown) {
  const review = answer as AdmissionReviewResponse;
  const ops = decodePatch(review).map((op) => {
    const value = (op as { value?: unknown }).value;
    if (typeof value !== 'object' || value === null) return op;
    const { 'hints.slipstream.dev/trace': _trace, ...rest } = value as Record<string, unknown>;
    return { ...op, value: rest };
  });
  return { ...review.response, patch: ops };
}
const postgres = loadFixtures(policy.id).find((f) => f.name === 'postgres-create')!;

describe('npm run build', () => {
  beforeAll(async () => {
    await buildBundle(WEBHOOK);
  }, 60_000);

  it('writes the entry point and the review worker, and the Deployment runs the entry point', () => {
    expect(existsSync(WEBHOOK.main)).toBe(true);
    expect(existsSync(WEBHOOK.main.replace('main.mjs', 'review-worker.mjs'))).toBe(true);
    expect(productionEntry().at(-1)).toBe(WEBHOOK.main);
  });

  it('imports no Node built-in as an ES module (each would build a facade that reads every export)', () => {
    const meta = JSON.parse(readFileSync(join(WEBHOOK.dir, 'meta.json'), 'utf8')) as {
      outputs: Record<string, { imports: { path: string; kind: string; external?: boolean }[] }>;
    };
    const esmImports = Object.values(meta.outputs).flatMap((o) =>
      o.imports.filter((i) => i.external && i.kind !== 'require-call').map((i) => i.path),
    );
    expect(esmImports).toEqual([]);
  });

  it('runs as production does: the shipped policy, small reviews on the event loop, large ones on the worker', async () => {
    const webhook = await spawnWebhook([], {}, 20_000, productionEntry());
    try {
      const small = await postReview(webhook.url, postgres.review);
      expect(small.status).toBe(200);
      const expected = review(postgres.review, { policy });
      if (!expected.ok) throw new Error(expected.error);
      expect(comparable(small.json)).toEqual(comparable(expected.review));

      // Over the gate's 64 KiB: answered by the worker thread, the same answer.
      const object = postgres.review.request.object as { metadata: Record<string, unknown> };
      const padded = {
        ...postgres.review,
        request: {
          ...postgres.review.request,
          object: {
            ...object,
            metadata: { ...object.metadata, managedFields: [{ manager: 'x'.repeat(100_000) }] },
          },
        },
      };
      const large = await postReview(webhook.url, padded);
      expect(large.status).toBe(200);
      const expectedLarge = review(padded, { policy });
      if (!expectedLarge.ok) throw new Error(expectedLarge.error);
      expect(comparable(large.json)).toEqual(comparable(expectedLarge.review));
      expect((large.json as AdmissionReviewResponse).response.patch).toBeDefined();
    } finally {
      expect(await webhook.stop()).toBe(0);
    }
  }, 30_000);
});
