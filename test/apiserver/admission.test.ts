// The admission hook: when it runs, what it gets, how a refusal is answered.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AdmissionDenied, toAdmissionReview } from './admission.ts';
import { FakeApiServer } from './fake-apiserver.ts';
import { applyJsonPatch } from './patch.ts';
import type { Json } from './resources.ts';
import { api, svc } from './wire.ts';

describe('admission', () => {
  let server: FakeApiServer;

  beforeEach(async () => {
    server = await FakeApiServer.start({ historyLimit: 50 });
  });

  afterEach(async () => {
    await server.close();
  });

  it('runs the admission hook on POST and PUT', async () => {
    const seen: string[] = [];
    await server.close();
    server = await FakeApiServer.start({
      onAdmit: (request) => {
        seen.push(`${request.operation} ${request.resource} ${request.namespace ?? ''}/${request.name}`);
        if (request.name === 'forbidden') throw new AdmissionDenied('no thanks', 403);
        if (request.resource !== 'services') return undefined;
        // What a webhook would send back: a JSON Patch, applied as the apiserver does.
        const review = toAdmissionReview(request);
        expect((review.request as Json).operation).toBe(request.operation);
        return applyJsonPatch(request.object, [
          { op: 'add', path: '/metadata/annotations', value: { 'hints.slipstream.dev/offload': 'none' } },
        ]);
      },
    });
    const created = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    expect((created.body.metadata as Json).annotations).toEqual({ 'hints.slipstream.dev/offload': 'none' });
    await api(server, 'PUT', '/api/v1/namespaces/default/services/a', {
      ...created.body,
      metadata: { name: 'a' },
    });
    const denied = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('forbidden'));
    expect(denied.status).toBe(403);
    expect(String(denied.body.message)).toContain('no thanks');
    await api(server, 'POST', '/api/v1/namespaces', { metadata: { name: 'ns1' } });
    expect(seen).toEqual([
      'CREATE services default/a',
      'UPDATE services default/a',
      'CREATE services default/forbidden',
      'CREATE namespaces /ns1',
    ]);
  });

  it('a hook that renames the object, or throws, fails the request with a server error', async () => {
    await server.close();
    server = await FakeApiServer.start({
      onAdmit: (request) => {
        if (request.name === 'boom') throw new Error('webhook crashed');
        return { ...request.object, metadata: { ...(request.object.metadata as Json), name: 'other' } };
      },
    });
    const renamed = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    expect(renamed.body).toMatchObject({
      code: 500,
      message: 'admission changed the name or namespace of the object',
    });
    const crashed = await api(server, 'POST', '/api/v1/namespaces/default/services', svc('boom'));
    expect(crashed.body).toMatchObject({ code: 500, reason: 'InternalError' });
    expect(String(crashed.body.message)).toContain('webhook crashed');
    expect(server.listServices()).toEqual([]);
  });

  it('an UPDATE review carries the old object and UpdateOptions', () => {
    const object = svc('a');
    const review = toAdmissionReview(
      {
        operation: 'UPDATE',
        resource: 'services',
        kind: 'Service',
        namespace: 'default',
        name: 'a',
        object,
        oldObject: svc('a', 'default', 81),
      },
      'uid-1',
    );
    expect(review).toMatchObject({
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      request: {
        uid: 'uid-1',
        operation: 'UPDATE',
        namespace: 'default',
        kind: { group: '', version: 'v1', kind: 'Service' },
        oldObject: { spec: { ports: [{ port: 81 }] } },
        options: { kind: 'UpdateOptions' },
      },
    });
  });
});
