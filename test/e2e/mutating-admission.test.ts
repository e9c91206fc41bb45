// The e2e suite's stand-in for kube-apiserver's mutating admission (mutating-admission.ts), checked
// on its own against small in-process HTTPS webhooks whose answers the tests choose: rules,
// certificate verification, the answer checks, failurePolicy and reinvocation (its selectors:
// test/lib/label-selector.test.ts). A harness that got these wrong would let
// control-plane.test.ts pass for the wrong reasons.

import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdmissionDenied, type AdmissionRequest } from '../apiserver/admission.ts';
import { FakeApiServer, type Json } from '../apiserver/fake-apiserver.ts';
import { selfSignedCertificate } from '../apiserver/tls.ts';
import {
  MutatingAdmission,
  type MutatingWebhook,
  type MutatingWebhookConfiguration,
  type RequestAttributes,
  ruleMatches,
} from './mutating-admission.ts';

describe('rules (the API server rules.Matcher)', () => {
  const create: RequestAttributes = {
    operation: 'CREATE',
    group: '',
    version: 'v1',
    resource: 'services',
    subresource: '',
    namespace: 'shop',
  };
  const base = { apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE', 'UPDATE'] };
  it.each<[string, Parameters<typeof ruleMatches>[0], RequestAttributes, boolean]>([
    ['the deployed rule', { ...base, resources: ['services'], scope: 'Namespaced' }, create, true],
    ['another operation', { ...base, resources: ['services'] }, { ...create, operation: 'DELETE' }, false],
    [
      'operation *',
      { ...base, operations: ['*'], resources: ['services'] },
      { ...create, operation: 'DELETE' },
      true,
    ],
    ['another resource', { ...base, resources: ['pods'] }, create, false],
    ['resource *', { ...base, resources: ['*'] }, create, true],
    ['* excludes subresources', { ...base, resources: ['*'] }, { ...create, subresource: 'status' }, false],
    [
      'services/* includes status',
      { ...base, resources: ['services/*'] },
      { ...create, subresource: 'status' },
      true,
    ],
    [
      'services excludes status',
      { ...base, resources: ['services'] },
      { ...create, subresource: 'status' },
      false,
    ],
    ['*/status', { ...base, resources: ['*/status'] }, { ...create, subresource: 'status' }, true],
    ['another group', { ...base, apiGroups: ['apps'], resources: ['services'] }, create, false],
    [
      'Cluster scope on a namespaced object',
      { ...base, resources: ['services'], scope: 'Cluster' },
      create,
      false,
    ],
    [
      'Namespaced scope on a Namespace object',
      { ...base, resources: ['namespaces'], scope: 'Namespaced' },
      { ...create, resource: 'namespaces', namespace: 'shop' },
      false,
    ],
  ])('%s', (_name, rule, attributes, expected) => {
    expect(ruleMatches(rule, attributes)).toBe(expected);
  });
});

type Answer = (review: { request: { uid: string; object: Json } }) => { status?: number; body: unknown };

// Certificates come from the openssl CLI (test/apiserver/tls.ts); without it these are skipped.
const material = selfSignedCertificate();
const other = selfSignedCertificate();

describe.skipIf(!material || !other)('calling webhooks', () => {
  let server: https.Server;
  let answer: Answer = () => ({ body: {} });
  const seen: { url: string; uid: string }[] = [];
  let url: string;

  beforeAll(async () => {
    server = https.createServer(material!, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const review = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        seen.push({ url: req.url ?? '', uid: review.request.uid });
        const { status = 200, body } = answer(review);
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/mutate`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  const ok =
    (patch?: unknown[]): Answer =>
    (review) => ({
      body: {
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        response: {
          uid: review.request.uid,
          allowed: true,
          ...(patch
            ? { patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64') }
            : {}),
        },
      },
    });
  const annotate = (key: string) => [{ op: 'add', path: '/metadata/annotations', value: { [key]: 'yes' } }];

  function configuration(name: string, webhook: Partial<MutatingWebhook> = {}): MutatingWebhookConfiguration {
    return {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name },
      webhooks: [
        {
          name: `${name}.example.com`,
          clientConfig: { url, caBundle: Buffer.from(material!.cert).toString('base64') },
          rules: [{ apiGroups: [''], apiVersions: ['v1'], resources: ['services'], operations: ['CREATE'] }],
          failurePolicy: 'Ignore',
          admissionReviewVersions: ['v1'],
          sideEffects: 'None',
          timeoutSeconds: 3,
          ...webhook,
        },
      ],
    };
  }

  const request = (): AdmissionRequest => ({
    operation: 'CREATE',
    resource: 'services',
    kind: 'Service',
    namespace: 'shop',
    name: 'db',
    object: { apiVersion: 'v1', kind: 'Service', metadata: { name: 'db', namespace: 'shop' }, spec: {} },
  });

  const admission = (...configurations: MutatingWebhookConfiguration[]) =>
    new MutatingAdmission({
      namespaceLabels: () => ({ 'kubernetes.io/metadata.name': 'shop' }),
      configurations,
    });

  it('sends a v1 AdmissionReview with ?timeout=Ns, verifies the answer and applies the patch', async () => {
    answer = ok(annotate('a'));
    const a = admission(configuration('one'));
    const object = await a.admit(request());
    expect((object.metadata as Json).annotations).toEqual({ a: 'yes' });
    expect(seen.at(-1)).toEqual({ url: '/mutate?timeout=3s', uid: a.calls[0]!.uid });
    expect(a.calls[0]!.review).toMatchObject({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' });
    expect(a.calls[0]!.outcome).toBe('patched');
    a.close();
  });

  it.each<[string, Answer, RegExp]>([
    [
      'a foreign uid',
      (r) => ok()({ request: { ...r.request, uid: 'someone-else' } }),
      /expected response\.uid=".*", got "someone-else"/,
    ],
    [
      'a patch without patchType',
      (r) => ({
        body: {
          apiVersion: 'admission.k8s.io/v1',
          kind: 'AdmissionReview',
          response: { uid: r.request.uid, allowed: true, patch: 'W10=' },
        },
      }),
      /response\.patch but not response\.patchType/,
    ],
    [
      'a v1beta1 answer',
      (r) => ({ body: { ...(ok()(r).body as Json), apiVersion: 'admission.k8s.io/v1beta1' } }),
      /expected webhook response of admission\.k8s\.io\/v1/,
    ],
    ['HTTP 500', () => ({ status: 500, body: { error: 'boom' } }), /HTTP 500/],
  ])('Ignore: %s is a failed call, and the object is admitted unchanged', async (_name, reply, error) => {
    answer = reply;
    const a = admission(configuration('one'));
    const req = request();
    expect(await a.admit(req)).toEqual(req.object);
    expect(a.calls[0]).toMatchObject({ outcome: 'ignored-error', error: expect.stringMatching(error) });
    a.close();
  });

  it('the certificate is verified against caBundle: a different CA fails the call', async () => {
    answer = ok(annotate('a'));
    const wrongCa = configuration('one', {
      clientConfig: { url, caBundle: Buffer.from(other!.cert).toString('base64') },
    });
    const a = admission(wrongCa);
    const req = request();
    expect(await a.admit(req)).toEqual(req.object);
    expect(a.calls[0]!.error).toMatch(/certificate|self.signed/i);
    a.close();
  });

  it('Fail: a failed call refuses the request with 500', async () => {
    answer = () => ({ status: 500, body: {} });
    const a = admission(configuration('one', { failurePolicy: 'Fail' }));
    await expect(a.admit(request())).rejects.toMatchObject({ name: 'AdmissionDenied', code: 500 });
    expect(a.calls[0]!.outcome).toBe('failed');
    a.close();
  });

  it('a patch that does not apply fails the request even with Ignore', async () => {
    answer = ok([{ op: 'replace', path: '/metadata/nope', value: 1 }]);
    const a = admission(configuration('one'));
    await expect(a.admit(request())).rejects.toBeInstanceOf(AdmissionDenied);
    expect(a.calls[0]!.outcome).toBe('failed');
    a.close();
  });

  it('allowed: false refuses with the webhook status, whatever the failure policy', async () => {
    answer = (r) => ({
      body: {
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        response: { uid: r.request.uid, allowed: false, status: { code: 403, message: 'no' } },
      },
    });
    const a = admission(configuration('one'));
    await expect(a.admit(request())).rejects.toMatchObject({ code: 403, message: 'no' });
    a.close();
  });

  it('through the stand-in: Fail gives the client a 500 Status, and nothing is stored', async () => {
    answer = () => ({ status: 500, body: {} });
    const a = admission(configuration('one', { failurePolicy: 'Fail' }));
    const apiserver = await FakeApiServer.start({ onAdmit: a.hook, token: '' });
    try {
      await apiserver.createNamespace('shop');
      const res = await fetch(`${apiserver.url}/api/v1/namespaces/shop/services`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ metadata: { name: 'db' }, spec: { ports: [{ port: 5432 }] } }),
      });
      expect(res.status).toBe(500);
      expect(String(((await res.json()) as Json).message)).toContain(
        'failed calling webhook "one.example.com"',
      );
      expect(apiserver.getService('shop', 'db')).toBeUndefined();
    } finally {
      await apiserver.close();
      a.close();
    }
  });

  it('ordering by configuration name; IfNeeded webhooks run again once after a later change, Never ones do not', async () => {
    // Each webhook adds its own annotation once (so it changes the object on its first call only).
    answer = (r) => {
      const path = seen.at(-1)!.url.split('?')[0]!;
      const key = path.slice(1);
      const annotations = ((r.request.object.metadata as Json).annotations ?? {}) as Record<string, string>;
      if (annotations[key]) return ok()(r);
      return ok(
        Object.keys(annotations).length === 0
          ? annotate(key)
          : [{ op: 'add', path: `/metadata/annotations/${key}`, value: 'yes' }],
      )(r);
    };
    const at = (path: string) => ({
      clientConfig: {
        url: url.replace('/mutate', path),
        caBundle: Buffer.from(material!.cert).toString('base64'),
      },
    });
    const a = admission(
      configuration('c', { ...at('/c'), reinvocationPolicy: 'Never' }),
      configuration('a', { ...at('/a'), reinvocationPolicy: 'IfNeeded' }),
      configuration('b', { ...at('/b'), reinvocationPolicy: 'IfNeeded' }),
    );
    const object = await a.admit(request());
    expect((object.metadata as Json).annotations).toEqual({ a: 'yes', b: 'yes', c: 'yes' });
    expect(a.calls.map((c) => `${c.configuration}${c.round}:${c.outcome}`)).toEqual([
      'a1:patched',
      'b1:patched',
      'c1:patched',
      // b changed the object after a, c after both: both IfNeeded webhooks are reinvoked, once.
      'a2:unchanged',
      'b2:unchanged',
    ]);
    a.close();
  });

  it('a single webhook that patches is not reinvoked for its own change', async () => {
    answer = ok(annotate('a'));
    const a = admission(configuration('one', { reinvocationPolicy: 'IfNeeded' }));
    await a.admit(request());
    expect(a.calls.map((c) => c.round)).toEqual([1]);
    a.close();
  });

  it('namespaceSelector and objectSelector skip the call', async () => {
    answer = ok(annotate('a'));
    const a = admission(
      configuration('ns', {
        namespaceSelector: {
          matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['shop'] }],
        },
      }),
      configuration('obj', { objectSelector: { matchLabels: { pick: 'me' } } }),
    );
    await a.admit(request());
    expect(a.calls).toEqual([]);
    expect(a.skipped.map((s) => s.why).sort()).toEqual(['namespaceSelector', 'objectSelector']);
    a.close();
  });
});
