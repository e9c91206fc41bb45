// Test support: the recorded AdmissionReviews in test/fixtures/admission/, and how to check an
// answer against a fixture's `expect` (the same check for the pure core and for HTTPS).

import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HINT_KEYS, specHash } from '@slipstream/shared/core/contract';
import { readService } from '@slipstream/shared/core/service';
import fastJsonPatch from 'fast-json-patch';
import { expect } from 'vitest';
import type { AdmissionReviewResponse, JsonPatchOperation } from '../../webhook/src/admission.ts';

export const FIXTURE_DIR = fileURLToPath(new URL('../fixtures/admission/', import.meta.url));

export interface FixtureExpect {
  patched: boolean;
  warnings: number;
  warningIncludes?: string[];
  /** `new`: the patch records the review's traceparent; `kept`: the object's stays; `absent`: none. */
  trace: 'new' | 'kept' | 'absent';
  /** Exact set of patch paths, when the fixture is about the patch's shape. */
  patchPaths?: string[];
  /** Annotations after the patch is applied (the trace key excluded); null: the object has none. */
  annotations: Record<string, string> | null;
  dryRun?: boolean;
}

export interface Fixture {
  name: string;
  description: string;
  expect: FixtureExpect;
  /** The AdmissionReview as the API server sends it. */
  review: { request: { uid: string; object: unknown; operation: string } } & Record<string, unknown>;
}

/** Loads every fixture; `{{POLICY_ID}}` stands for the id of the policy under test, `{{SPEC_HASH}}` for the Service's specHash. */
export function loadFixtures(policyId: string): Fixture[] {
  return readdirSync(FIXTURE_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const text = readFileSync(FIXTURE_DIR + file, 'utf8').replaceAll('{{POLICY_ID}}', policyId);
      // `{{SPEC_HASH}}` stands for the specHash of the Service in the request (hints are not part of it).
      const raw = JSON.parse(text) as Omit<Fixture, 'name'>;
      const read = readService(raw.review.request.object);
      const hashed = read.ok ? text.replaceAll('{{SPEC_HASH}}', specHash(read.value)) : text;
      return { name: file.replace(/\.json$/, ''), ...(JSON.parse(hashed) as Omit<Fixture, 'name'>) };
    });
}

export function decodePatch(review: AdmissionReviewResponse): JsonPatchOperation[] {
  const { patch } = review.response;
  return patch === undefined
    ? []
    : (JSON.parse(Buffer.from(patch, 'base64').toString('utf8')) as JsonPatchOperation[]);
}

/** Applies an answer's patch to a copy of the object the review carried. */
export function applyAnswer(object: unknown, review: AdmissionReviewResponse): unknown {
  const ops = decodePatch(review);
  if (ops.length === 0) return object;
  return fastJsonPatch.applyPatch(structuredClone(object), ops as fastJsonPatch.Operation[], true, false)
    .newDocument;
}

function annotationsOf(object: unknown): Record<string, unknown> | undefined {
  const metadata = (object as { metadata?: { annotations?: Record<string, unknown> } } | null)?.metadata;
  return metadata?.annotations;
}

/** Asserts an answer against the fixture; `traceparent` is the one the review was given (or its span's). */
export function checkAgainstFixture(
  fixture: Fixture,
  review: AdmissionReviewResponse,
  traceparent?: string,
): void {
  const { expect: want } = fixture;
  const object = fixture.review.request.object ?? null;
  expect(review.apiVersion).toBe('admission.k8s.io/v1');
  expect(review.kind).toBe('AdmissionReview');
  expect(review.response.uid).toBe(fixture.review.request.uid);
  expect(review.response.allowed).toBe(true);
  expect(review.response.patch !== undefined).toBe(want.patched);
  if (want.patched) expect(review.response.patchType).toBe('JSONPatch');
  else expect(review.response.patchType).toBeUndefined();

  const warnings = review.response.warnings ?? [];
  expect(warnings).toHaveLength(want.warnings);
  for (const w of warnings) {
    expect(w.length).toBeLessThan(120);
    expect(w).toMatch(/^[\x20-\x7e]+$/);
  }
  for (const part of want.warningIncludes ?? []) expect(warnings.some((w) => w.includes(part))).toBe(true);

  const ops = decodePatch(review);
  for (const op of ops) expect(op.path.startsWith('/metadata/annotations')).toBe(true);
  if (want.patchPaths) expect(ops.map((o) => o.path).sort()).toEqual([...want.patchPaths].sort());

  const after = applyAnswer(object, review);
  const annotations = annotationsOf(after);
  if (want.annotations === null) {
    expect(annotations).toBeUndefined();
  } else {
    const { [HINT_KEYS.trace]: trace, ...rest } = annotations ?? {};
    expect(rest).toEqual(want.annotations);
    const before = annotationsOf(object)?.[HINT_KEYS.trace];
    if (want.trace === 'new') {
      expect(trace).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
      if (traceparent !== undefined) expect(trace).toBe(traceparent);
    } else if (want.trace === 'kept') {
      expect(trace).toBe(before);
    } else {
      expect(trace).toBeUndefined();
    }
  }
  // Everything outside the annotations is untouched.
  if (object !== null && after !== null) {
    const strip = (o: unknown) => {
      const copy = structuredClone(o) as { metadata?: Record<string, unknown> };
      if (copy.metadata) delete copy.metadata.annotations;
      return copy;
    };
    expect(strip(after)).toEqual(strip(object));
  }
}
