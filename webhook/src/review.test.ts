import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { annotationBytes, MAX_ANNOTATION_BYTES, MAX_PORTS } from '@slipstream/shared/core/bounds';
import { HINT_KEYS } from '@slipstream/shared/core/contract';
import { parsePolicy } from '@slipstream/shared/core/policy';
import { describe, expect, it } from 'vitest';
import {
  applyAnswer,
  checkAgainstFixture,
  decodePatch,
  loadFixtures,
} from '../../test/lib/admission-fixtures.ts';
import { review } from './review.ts';

const policy = loadDefaultPolicy();
const TRACE = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
const fixtures = loadFixtures(policy.id);

/** Reviews with the default policy; `null`: without a trace context. */
function ok(body: unknown, traceparent: string | null = TRACE) {
  const result = review(body, { policy, ...(traceparent ? { traceparent } : {}) });
  if (!result.ok) throw new Error(result.error);
  return result;
}

describe('review: recorded AdmissionReviews', () => {
  it('has the fixtures the contract calls for', () => {
    expect(fixtures.length).toBeGreaterThanOrEqual(20);
  });
  for (const fixture of fixtures) {
    it(`${fixture.name}: ${fixture.description}`, () => {
      const { review: answer, outcome } = ok(fixture.review);
      checkAgainstFixture(fixture, answer, TRACE);
      expect(outcome.patched).toBe(fixture.expect.patched);
      expect(outcome.dryRun).toBe(fixture.expect.dryRun ?? false);
      // Idempotence: the patched object, reviewed again, needs nothing.
      const after = applyAnswer(fixture.review.request.object, answer);
      const again = ok(
        { ...fixture.review, request: { ...fixture.review.request, object: after } },
        TRACE.replace('b7', 'c8'),
      );
      expect(again.review.response.patch).toBeUndefined();
    });
  }
});

function service(
  annotations?: Record<string, string>,
  ports: unknown[] = [{ name: 'pg', port: 5432, protocol: 'TCP' }],
) {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'u-1',
      kind: { group: '', version: 'v1', kind: 'Service' },
      operation: 'CREATE',
      namespace: 'db',
      name: 'pg',
      object: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'pg', namespace: 'db', ...(annotations ? { annotations } : {}) },
        spec: { ports },
      },
    },
  };
}

describe('review: envelope', () => {
  it.each([
    ['a string', 'hello'],
    ['null', null],
    ['an array', [1, 2]],
    ['a v1beta1 review', { ...service(), apiVersion: 'admission.k8s.io/v1beta1' }],
    ['another kind', { ...service(), kind: 'TokenReview' }],
    ['no request', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }],
    ['a numeric uid', { ...service(), request: { ...service().request, uid: 7 } }],
    ['an empty uid', { ...service(), request: { ...service().request, uid: '' } }],
  ])('refuses %s as not an AdmissionReview', (_what, body) => {
    const result = review(body, { policy });
    expect(result.ok).toBe(false);
  });

  it('echoes the uid and answers in v1', () => {
    const { review: answer } = ok(service());
    expect(answer).toMatchObject({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: { uid: 'u-1', allowed: true },
    });
  });

  it.each(['DELETE', 'CONNECT', '', 'create'])('allows operation %j without a patch', (operation) => {
    const body = service();
    const { review: answer, outcome } = ok({ ...body, request: { ...body.request, operation } });
    expect(answer.response.patch).toBeUndefined();
    expect(outcome.skipped).toMatch(/is not reviewed/);
  });

  it('allows wrong-typed request fields without a patch', () => {
    const body = service();
    for (const request of [
      { ...body.request, kind: 'Service' },
      { ...body.request, kind: { group: 1, version: 'v1', kind: 'Service' } },
      { ...body.request, object: 'not an object' },
      { ...body.request, object: { metadata: 5, spec: { ports: 'x' } } },
      { ...body.request, dryRun: 'yes' },
    ]) {
      const result = review({ ...body, request }, { policy });
      expect(result.ok).toBe(true);
      if (result.ok) expect(result.review.response.allowed).toBe(true);
    }
  });
});

describe('review: the patch', () => {
  it('writes no trace key when no trace context is given, and still converges', () => {
    const { review: answer, outcome } = ok(service(), null);
    expect(outcome.decisionChanged).toBe(true);
    const after = applyAnswer(service().request.object, answer) as {
      metadata: { annotations: Record<string, string> };
    };
    expect(after.metadata.annotations[HINT_KEYS.trace]).toBeUndefined();
    expect(after.metadata.annotations[HINT_KEYS.offload]).toBe('5432/TCP=20');
  });

  it('drops a stale trace when the decision changes without a trace context', () => {
    const annotations = {
      [HINT_KEYS.offload]: '9999/TCP',
      [HINT_KEYS.trace]: TRACE,
    };
    const { review: answer } = ok(service(annotations), null);
    const ops = decodePatch(answer);
    expect(ops).toContainEqual({ op: 'remove', path: '/metadata/annotations/hints.slipstream.dev~1trace' });
  });

  it('keeps the trace and rewrites only reason/policy when another policy gives the same offload', () => {
    const first = ok(service());
    const patched = applyAnswer(service().request.object, first.review);
    const other = parsePolicy(
      'name: other\nversion: 2\ndefault: { offload: false, reason: nothing by default }\nrules:\n  - name: pg\n    match: { ports: [5432] }\n    offload: true\n    threshold: 20\n    reason: postgres\n',
    );
    const body = service();
    const second = review(
      { ...body, request: { ...body.request, object: patched } },
      { policy: other, traceparent: TRACE.replace('b7', 'd9') },
    );
    if (!second.ok) throw new Error(second.error);
    const ops = decodePatch(second.review);
    expect(ops.map((o) => `${o.op} ${o.path}`).sort()).toEqual([
      'replace /metadata/annotations/hints.slipstream.dev~1policy',
      'replace /metadata/annotations/hints.slipstream.dev~1reason',
    ]);
    expect(second.outcome.decisionChanged).toBe(false);
  });

  it('escapes "~" and "/" in paths of keys it touches', () => {
    const { review: answer } = ok(service({ 'x~y/z': '1' }));
    const paths = decodePatch(answer).map((o) => o.path);
    expect(paths).toContain('/metadata/annotations/hints.slipstream.dev~1offload');
    expect(paths.some((p) => p.includes('x~0y~1z'))).toBe(false);
  });

  it('turns every invalid user value into its own short warning', () => {
    const { review: answer } = ok(
      service({
        'slipstream.dev/acceleration': 'turbo\u0000\u2028',
        'slipstream.dev/packet-threshold': 'x'.repeat(5000),
        'slipstream.dev/ports': 'no-such-port',
      }),
    );
    const warnings = answer.response.warnings ?? [];
    expect(warnings).toHaveLength(3);
    for (const w of warnings) {
      expect(w.length).toBeLessThan(120);
      expect(w).toMatch(/^[\x20-\x7e]+$/);
    }
    expect(warnings.map((w) => w.split(':')[0]).sort()).toEqual([
      'slipstream.dev/acceleration',
      'slipstream.dev/packet-threshold',
      'slipstream.dev/ports',
    ]);
  });

  it('answers an unreadable Service with a warning and no patch', () => {
    const { review: answer, outcome } = ok(service(undefined, [{ port: 70000 }]));
    expect(answer.response.patch).toBeUndefined();
    expect(answer.response.warnings).toHaveLength(1);
    expect(outcome.skipped).toBe('unreadable Service');
  });

  it('keeps a user key named __proto__ as a plain key', () => {
    const body = JSON.parse(
      JSON.stringify(service()).replace(
        '"name":"pg","namespace"',
        '"name":"pg","annotations":{"__proto__":"x"},"namespace"',
      ),
    );
    const { review: answer } = ok(body);
    const after = applyAnswer(body.request.object, answer) as {
      metadata: { annotations: Record<string, string> };
    };
    expect(Object.getOwnPropertyDescriptor(after.metadata.annotations, '__proto__')?.value).toBe('x');
    expect(after.metadata.annotations[HINT_KEYS.offload]).toBe('5432/TCP=20');
  });
});

describe('review: bounded cost per review', () => {
  const manyPorts = (n: number) => Array.from({ length: n }, (_, i) => ({ port: i + 1, protocol: 'TCP' }));

  it(`evaluates up to ${MAX_PORTS} ports`, () => {
    const { review: answer, outcome } = ok(service(undefined, manyPorts(MAX_PORTS)));
    expect(outcome.patched).toBe(true);
    expect(outcome.skipped).toBeUndefined();
    expect(answer.response.patch).toBeDefined();
  });

  it('allows a Service with more ports unchanged, with a warning that says why', () => {
    const { review: answer, outcome } = ok(service(undefined, manyPorts(70_000)));
    expect(answer.response).toEqual({
      uid: 'u-1',
      allowed: true,
      warnings: [
        `slipstream: Service has 70000 ports, more than the ${MAX_PORTS} a review evaluates; not evaluated, no hints written`,
      ],
    });
    expect(outcome).toMatchObject({ patched: false, skipped: 'beyond review bounds', warnings: 1 });
    expect(outcome.decision).toBeUndefined();
  });

  it('allows a Service whose annotations Kubernetes would refuse unchanged, with a warning', () => {
    const annotations: Record<string, string> = {};
    // 20,000 x (16-byte key + 12-byte value) = 560,000 bytes
    for (let i = 0; i < 20_000; i++)
      annotations[`a${String(i).padStart(5, '0')}.example/key`] = 'value-012345';
    expect(annotationBytes(annotations)).toBeGreaterThan(MAX_ANNOTATION_BYTES);
    const { review: answer, outcome } = ok(service(annotations));
    expect(answer.response.patch).toBeUndefined();
    expect(answer.response.warnings).toEqual([
      `slipstream: annotations are ${annotationBytes(annotations)} bytes, over the ${MAX_ANNOTATION_BYTES} Kubernetes accepts; not evaluated, no hints written`,
    ]);
    expect(outcome.skipped).toBe('beyond review bounds');
  });

  it('counts bytes as Kubernetes does: UTF-8 keys plus values', () => {
    expect(annotationBytes({ k: 'é', n: 1 as unknown as string })).toBe(1 + 2);
  });

  it('writes no hints that would take the annotations over the limit (the write would fail)', () => {
    // Just under the limit, so the hints (~150 bytes) push it over.
    const annotations = {
      'example.com/big': 'x'.repeat(MAX_ANNOTATION_BYTES - 'example.com/big'.length - 10),
    };
    const { review: answer, outcome } = ok(service(annotations));
    expect(answer.response.patch).toBeUndefined();
    expect(answer.response.warnings?.[0]).toMatch(/^slipstream: hints would take the annotations over/);
    expect(outcome.patched).toBe(false);
  });

  it('keeps the patch the same when the user has many annotations of their own', () => {
    const annotations: Record<string, string> = { [HINT_KEYS.offload]: '80/TCP' };
    for (let i = 0; i < 5000; i++) annotations[`example.com/k${i}`] = 'v';
    const { review: answer } = ok(service(annotations), null);
    const ops = decodePatch(answer);
    expect(
      ops.map((o) => (o as { path: string }).path).every((p) => p.includes('hints.slipstream.dev')),
    ).toBe(true);
    const after = applyAnswer(service(annotations).request.object, answer) as {
      metadata: { annotations: Record<string, string> };
    };
    expect(Object.keys(after.metadata.annotations).length).toBeGreaterThan(5000);
    expect(after.metadata.annotations[HINT_KEYS.offload]).toBe('5432/TCP=20');
  });
});
