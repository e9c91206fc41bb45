// Properties of the review over generated Services: idempotence, the user always wins, and the
// patch never leaves /metadata/annotations or touches a key that is not the webhook's.

import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import {
  HINT_KEYS,
  HINT_PREFIX,
  hasUserHints,
  USER_KEYS,
  VALUE_MAX_LENGTH,
} from '@slipstream/shared/core/contract';
import { effectiveDecision } from '@slipstream/shared/core/decide';
import { formatOffload } from '@slipstream/shared/core/hints';
import { readService } from '@slipstream/shared/core/service';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyAnswer, decodePatch } from '../../test/lib/admission-fixtures.ts';
import { review } from './review.ts';

const policy = loadDefaultPolicy();
const RUNS = 400;

const interestingPorts = [53, 80, 123, 443, 3306, 5201, 5432, 6379, 7000, 8080, 9000, 9092, 27017, 50051];
const portArb = fc.record(
  {
    name: fc.oneof(
      fc.constantFrom('http', 'grpc-api', 'redis', 'tcp-x', 'metrics', 'dns', 'web', 'postgres'),
      fc.stringMatching(/^[a-z][a-z0-9-]{0,10}[a-z0-9]$/),
    ),
    port: fc.oneof(fc.constantFrom(...interestingPorts), fc.integer({ min: 1, max: 65535 })),
    protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'),
    appProtocol: fc.constantFrom('grpc', 'kubernetes.io/h2c', 'http', 'ws'),
  },
  { requiredKeys: ['port', 'protocol'] },
);
const portsArb = fc.uniqueArray(portArb, { maxLength: 6, selector: (p) => `${p.port}/${p.protocol}` });

type Threshold = { valid: true; value: number; raw: string } | { valid: false; raw: string };
const thresholdArb: fc.Arbitrary<Threshold> = fc.oneof(
  fc
    .integer({ min: 0, max: 1_000_000 })
    .map((value) => ({ valid: true as const, value, raw: String(value) })),
  fc
    .oneof(
      fc.constantFrom('abc', '-1', '1e12', '1.5', '', '1000001', '0x10', ' 12a'),
      fc.string({ maxLength: 12 }),
    )
    .map((raw) => ({ valid: false as const, raw })),
);

const keyArb = fc.oneof(
  fc.constantFrom(
    'app.kubernetes.io/name',
    'a/b/c',
    'x~y',
    '~1',
    'example.com/owner~team',
    'slipstream.dev/other',
  ),
  fc.string({ minLength: 1, maxLength: 20 }),
  fc.string({ minLength: 1, maxLength: 20, unit: 'binary' }),
);
const hintGarbageArb = fc.dictionary(
  fc.constantFrom(...Object.values(HINT_KEYS), `${HINT_PREFIX}legacy`),
  fc.oneof(
    fc.constantFrom('none', '5432/TCP', '5432/TCP=20', '20', '53/UDP,80/TCP', '53/UDP=0,80/TCP=100'),
    fc.string({ maxLength: 16 }),
  ),
  { maxKeys: 4 },
);

const serviceArb = fc.record({
  type: fc.constantFrom('ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'),
  clusterIP: fc.constantFrom(undefined, 'None', '10.96.0.10'),
  ports: portsArb,
  acceleration: fc.option(
    fc.oneof(fc.constantFrom('enabled', 'disabled', ' disabled ', 'on'), fc.string({ maxLength: 8 })),
  ),
  threshold: fc.option(thresholdArb),
  userPorts: fc.option(
    fc.oneof(fc.constantFrom('http', '5432', '53/UDP', 'grpc-api,9000/TCP'), fc.string({ maxLength: 10 })),
  ),
  others: fc.dictionary(keyArb, fc.string({ maxLength: 30, unit: 'binary' }), { maxKeys: 5 }),
  hints: hintGarbageArb,
  hasAnnotations: fc.boolean(),
  operation: fc.constantFrom('CREATE', 'UPDATE'),
  dryRun: fc.boolean(),
});
type Generated = typeof serviceArb extends fc.Arbitrary<infer T> ? T : never;

function annotationsOf(g: Generated): Record<string, string> | undefined {
  // Spread defines properties, so a generated "__proto__" key stays a plain key.
  const a: Record<string, string> = {
    ...Object.fromEntries(Object.entries(g.others).filter(([k]) => !k.startsWith(HINT_PREFIX))),
    ...g.hints,
  };
  if (g.acceleration !== null) a[USER_KEYS.acceleration] = g.acceleration;
  if (g.threshold !== null) a[USER_KEYS.packetThreshold] = g.threshold.raw;
  if (g.userPorts !== null) a[USER_KEYS.ports] = g.userPorts;
  return g.hasAnnotations || Object.keys(a).length > 0 ? a : undefined;
}

function body(g: Generated, object: unknown = objectOf(g)) {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'prop',
      kind: { group: '', version: 'v1', kind: 'Service' },
      resource: { group: '', version: 'v1', resource: 'services' },
      operation: g.operation,
      namespace: 'ns',
      name: 'svc',
      dryRun: g.dryRun,
      object,
    },
  };
}

function objectOf(g: Generated) {
  const annotations = annotationsOf(g);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'svc', namespace: 'ns', ...(annotations ? { annotations } : {}) },
    spec: { type: g.type, ...(g.clusterIP ? { clusterIP: g.clusterIP } : {}), ports: g.ports },
  };
}

let traceCounter = 0;
function run(b: unknown) {
  const traceparent = `00-${(++traceCounter).toString(16).padStart(32, '0')}-${'1'.repeat(16)}-01`;
  const result = review(b, { policy, traceparent });
  if (!result.ok) throw new Error(result.error);
  return result.review;
}

function hintsAfter(g: Generated) {
  const object = objectOf(g);
  const after = applyAnswer(object, run(body(g, object))) as {
    metadata: { annotations?: Record<string, string> };
  };
  return { object, after, annotations: after.metadata.annotations ?? {} };
}

describe('review properties', () => {
  it('is idempotent: the patched object, reviewed again, gets no patch', () => {
    fc.assert(
      fc.property(serviceArb, (g) => {
        const { after } = hintsAfter(g);
        const again = run(body(g, after));
        expect(again.response.patch).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  });

  it('lets the user win: disabled or any invalid key means none; a valid threshold is every port’s', () => {
    fc.assert(
      fc.property(serviceArb, (g) => {
        const { annotations } = hintsAfter(g);
        const offload = annotations[HINT_KEYS.offload];
        const d = g.type !== 'ExternalName' && g.clusterIP !== 'None';
        if (d && g.acceleration?.trim() === 'disabled') expect(offload).toBe('none');
        if (d && g.threshold !== null && !g.threshold.valid) expect(offload).toBe('none');
        if (g.threshold?.valid && offload !== undefined && offload !== 'none') {
          for (const entry of offload.split(',')) expect(entry.split('=')[1]).toBe(String(g.threshold.value));
        }
        // The threshold lives in each offload entry; the older shared key is never written.
        expect(annotations[HINT_KEYS.packetThreshold]).toBeUndefined();
      }),
      { numRuns: RUNS },
    );
  });

  it('writes only hints the daemon accepts: within the one limit, read back as the same decision', () => {
    fc.assert(
      fc.property(serviceArb, (g) => {
        const { annotations } = hintsAfter(g);
        for (const [key, value] of Object.entries(annotations)) {
          if (key.startsWith(HINT_PREFIX)) expect(value.length, key).toBeLessThanOrEqual(VALUE_MAX_LENGTH);
        }
        if (g.type === 'ExternalName' || g.clusterIP === 'None') return;
        // The daemon's view of the stored object: the user keys (if any) are decided again, else the
        // hints are read; either way the same offload as the hint says.
        const stored = readService({
          metadata: { name: 'svc', namespace: 'ns', annotations },
          spec: { type: g.type, clusterIP: '10.96.0.10', ports: g.ports },
        });
        if (!stored.ok) return;
        const d = effectiveDecision(stored.value, policy);
        expect(formatOffload(d.offload)).toBe(annotations[HINT_KEYS.offload]);
        if (!hasUserHints(stored.value)) expect(d.source).toBe('hints');
      }),
      { numRuns: RUNS },
    );
  });

  it('leaves every annotation outside hints.slipstream.dev/ byte-identical', () => {
    fc.assert(
      fc.property(serviceArb, (g) => {
        const { object, annotations } = hintsAfter(g);
        const before = object.metadata.annotations ?? {};
        const outside = (a: Record<string, string>) =>
          Object.entries(a).filter(([k]) => !k.startsWith(HINT_PREFIX));
        expect(outside(annotations)).toEqual(outside(before));
      }),
      { numRuns: RUNS },
    );
  });

  it('patches only /metadata/annotations, and within it only webhook keys', () => {
    fc.assert(
      fc.property(serviceArb, (g) => {
        const object = objectOf(g);
        const ops = decodePatch(run(body(g, object)));
        for (const op of ops) {
          expect(['add', 'replace', 'remove']).toContain(op.op);
          if (op.path === '/metadata/annotations') {
            expect(op.op).toBe('add');
            expect(object.metadata.annotations).toBeUndefined();
          } else {
            expect(op.path.startsWith('/metadata/annotations/hints.slipstream.dev~1')).toBe(true);
          }
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('answers dry runs exactly like real requests', () => {
    fc.assert(
      fc.property(serviceArb, (g) => {
        const real = review(body({ ...g, dryRun: false }), {
          policy,
          traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`,
        });
        const dry = review(body({ ...g, dryRun: true }), {
          policy,
          traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`,
        });
        expect(dry.ok && dry.review).toEqual(real.ok && real.review);
      }),
      { numRuns: 100 },
    );
  });
});
