// Recorded decisions through both components' cores: the webhook's review() (the AdmissionReview
// the API server sends on CREATE) and the daemon's effectiveDecision() on the Service as stored,
// with the webhook's hints and without them. The public manifests (test/fixtures/public) pin what
// the default policy decides for real Services; the admission fixtures (test/fixtures/admission,
// the fail-closed and hint-limit cases among them) pin that the daemon never disagrees with, or
// refuses, a hint the webhook wrote.

import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { HINT_KEYS, hasUserHints, VALUE_MAX_LENGTH } from '@slipstream/shared/core/contract';
import { decide, effectiveDecision } from '@slipstream/shared/core/decide';
import { formatOffload } from '@slipstream/shared/core/hints';
import { portKey, readService, type Service } from '@slipstream/shared/core/service';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { review } from '../../webhook/src/review.ts';
import { applyAnswer, loadFixtures } from '../lib/admission-fixtures.ts';

const policy = loadDefaultPolicy();
const PUBLIC = fileURLToPath(new URL('../fixtures/public/', import.meta.url));

interface Entry {
  file: string;
  source: { repo: string; path: string; commit: string };
  service: { metadata: { name: string; namespace?: string; annotations?: Record<string, string> } };
  expect: { offload: string; rules: Record<string, string> };
}

function publicEntries(): Entry[] {
  return readdirSync(PUBLIC)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((file) => {
      const doc = parse(readFileSync(PUBLIC + file, 'utf8')) as { entries: Omit<Entry, 'file'>[] };
      return doc.entries.map((e) => ({ file, ...e }));
    });
}

/** A CREATE AdmissionReview as kube-apiserver sends it: defaults applied, no ClusterIP yet. */
function createReview(service: Entry['service'], uid: string) {
  const object = structuredClone(service) as Entry['service'] & { spec: { ports?: { protocol?: string }[] } };
  object.metadata.namespace ??= 'default';
  for (const p of object.spec.ports ?? []) p.protocol ??= 'TCP';
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Service' },
      resource: { group: '', version: 'v1', resource: 'services' },
      name: object.metadata.name,
      namespace: object.metadata.namespace,
      operation: 'CREATE',
      object,
      oldObject: null,
      dryRun: false,
    },
  };
}

/** The object as the API server stores it: the patch applied and a ClusterIP allocated. */
function stored(object: unknown, clusterIP = '10.96.100.1'): Service {
  const copy = structuredClone(object) as { spec: { clusterIP?: string } };
  copy.spec.clusterIP ??= clusterIP;
  const read = readService(copy);
  if (!read.ok) throw new Error(read.error);
  return read.value;
}

function withoutHints(service: Service): Service {
  const annotations = Object.fromEntries(
    Object.entries(service.annotations).filter(([key]) => !key.startsWith('hints.slipstream.dev/')),
  );
  return { ...service, annotations };
}

describe('public Service manifests', () => {
  const entries = publicEntries();

  it('are recorded from the projects the contract names, each with its source', () => {
    expect(new Set(entries.map((e) => e.source.repo))).toEqual(
      new Set([
        'kubernetes/ingress-nginx',
        'argoproj/argo-cd',
        'prometheus-operator/kube-prometheus',
        'istio/istio',
        'kubernetes/examples',
        'jaegertracing/jaeger-kubernetes',
      ]),
    );
    for (const e of entries) {
      expect(e.source.path, e.file).toMatch(/\.ya?ml$/);
      expect(e.source.commit, e.file).toMatch(/^[0-9a-f]{40}$/);
    }
  });

  for (const [i, e] of entries.entries()) {
    const name = `${e.file}: ${e.service.metadata.name} (${e.source.repo}/${e.source.path})`;
    it(`${name} → ${e.expect.offload}`, () => {
      // The webhook.
      const body = createReview(e.service, `public-${i}`);
      const result = review(body, { policy });
      if (!result.ok) throw new Error(result.error);
      expect(result.review.response.warnings).toBeUndefined();
      const object = applyAnswer(body.request.object, result.review) as {
        metadata: { annotations: Record<string, string> };
      };
      const hints = object.metadata.annotations;
      expect(hints[HINT_KEYS.offload]).toBe(e.expect.offload);
      expect(hints[HINT_KEYS.packetThreshold]).toBeUndefined();

      // The daemon, reading the webhook's hints.
      const service = stored(object);
      const hinted = effectiveDecision(service, policy);
      expect(formatOffload(hinted.offload)).toBe(e.expect.offload);
      if (service.noClusterIPReason === undefined) expect(hinted.source).toBe('hints');

      // The daemon deciding alone: the same ports and thresholds, each decided by the recorded rule.
      const local = decide(withoutHints(service), policy);
      expect(formatOffload(local.offload)).toBe(e.expect.offload);
      expect(Object.fromEntries(local.ports.map((p) => [portKey(p), p.rule]))).toEqual(e.expect.rules);
      // The reason states each offloaded port's own threshold.
      for (const o of local.offload) {
        expect(local.reason).toContain(`${portKey(o)} offload after ${o.threshold} packets`);
      }
    });
  }
});

describe('admission fixtures, read back by the daemon', () => {
  for (const fixture of loadFixtures(policy.id)) {
    const { request } = fixture.review as { request: { object: unknown; kind?: { kind?: string } } };
    if (request.kind?.kind !== 'Service' || !readService(request.object).ok || !fixture.expect.patched)
      continue;
    it(`${fixture.name}: the daemon agrees with the hint the webhook wrote`, () => {
      const result = review(fixture.review, { policy });
      if (!result.ok) throw new Error(result.error);
      const object = applyAnswer(request.object, result.review) as {
        metadata: { annotations: Record<string, string> };
      };
      const hints = object.metadata.annotations;
      for (const [key, value] of Object.entries(hints)) {
        if (key.startsWith('hints.slipstream.dev/'))
          expect(value.length).toBeLessThanOrEqual(VALUE_MAX_LENGTH);
      }
      const service = stored(object, '10.96.100.2');
      const d = effectiveDecision(service, policy);
      expect(formatOffload(d.offload)).toBe(hints[HINT_KEYS.offload]);
      if (!hasUserHints(service) && service.noClusterIPReason === undefined) expect(d.source).toBe('hints');
    });
  }
});
