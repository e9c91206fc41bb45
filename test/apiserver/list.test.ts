// Lists over HTTP: the list objects kube-apiserver sends, and limit/continue paging.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import type { Json } from './resources.ts';
import { api, namesOf, rvOf, type Stream, svc } from './wire.ts';

describe('lists', () => {
  let server: FakeApiServer;
  const streams: Stream[] = [];

  beforeEach(async () => {
    server = await FakeApiServer.start({ historyLimit: 50 });
  });

  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await server.close();
  });

  it('lists like the real server: ServiceList, resourceVersion, items without kind', async () => {
    await api(server, 'POST', '/api/v1/namespaces/default/services', svc('a'));
    const list = await api(server, 'GET', '/api/v1/services');
    expect(list.status).toBe(200);
    expect(list.body.kind).toBe('ServiceList');
    expect(list.body.apiVersion).toBe('v1');
    expect(rvOf(list.body)).toBe(server.resourceVersion);
    const items = list.body.items as Json[];
    expect(items).toHaveLength(1);
    expect(items[0]?.kind).toBeUndefined();
    const ns = await api(server, 'GET', '/api/v1/namespaces');
    expect(ns.body.kind).toBe('NamespaceList');
    expect((ns.body.items as Json[]).map((n) => (n.metadata as Json).name)).toContain('kube-system');
  });

  it('pages lists over a consistent snapshot, and expires continue tokens on compaction', async () => {
    for (const name of ['a', 'b', 'c', 'd', 'e']) await server.createService(svc(name));
    const first = await api(server, 'GET', '/api/v1/services?limit=2');
    const meta = first.body.metadata as Json;
    expect(meta.continue).toEqual(expect.any(String));
    expect(meta.remainingItemCount).toBe(3);
    await server.deleteService('default', 'e'); // after the snapshot: not seen by this list
    const second = await api(server, 'GET', `/api/v1/services?limit=2&continue=${meta.continue}`);
    const third = await api(
      server,
      'GET',
      `/api/v1/services?limit=2&continue=${(second.body.metadata as Json).continue}`,
    );
    expect((third.body.metadata as Json).continue).toBeUndefined();
    const names = [first, second, third].flatMap((p) =>
      (p.body.items as Json[]).map((i) => (i.metadata as Json).name),
    );
    expect(names).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(rvOf(second.body)).toBe(rvOf(first.body));

    const again = await api(server, 'GET', '/api/v1/services?limit=2');
    server.compact();
    const expired = await api(
      server,
      'GET',
      `/api/v1/services?limit=2&continue=${(again.body.metadata as Json).continue}`,
    );
    expect(expired.status).toBe(410);
    expect(expired.body).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });
  });

  it('lists one namespace, and refuses a continue token of another list', async () => {
    await server.createNamespace('team');
    for (const name of ['a', 'b', 'c']) await server.createService(svc(name, 'team'));
    await server.createService(svc('other'));
    const team = await api(server, 'GET', '/api/v1/namespaces/team/services?limit=2');
    expect(namesOf(team.body)).toEqual(['a', 'b']);
    const token = (team.body.metadata as Json).continue;
    const wrong = await api(server, 'GET', `/api/v1/services?limit=2&continue=${token}`);
    expect(wrong.body).toMatchObject({ kind: 'Status', reason: 'Expired', code: 410 });
    // A token is good for one page only.
    const reused = await api(server, 'GET', `/api/v1/namespaces/team/services?limit=2&continue=${token}`);
    expect(reused.status).toBe(410);
    const all = await api(server, 'GET', '/api/v1/namespaces/team/services');
    expect(namesOf(all.body)).toEqual(['a', 'b', 'c']);
    expect((all.body.metadata as Json).continue).toBeUndefined();
    expect(rvOf(all.body)).toBe(server.resourceVersion);
  });
});
