// Watches over HTTP, read from the raw stream: the event format, replay from the history, 410,
// bookmarks, timeouts, and the faults a test injects into open watches.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import type { Json } from './resources.ts';
import { api, eventually, objectOf, openWatch, rvOf, type Stream, svc, typeOf } from './wire.ts';

describe('watches', () => {
  let server: FakeApiServer;
  const streams: Stream[] = [];

  beforeEach(async () => {
    server = await FakeApiServer.start({ historyLimit: 50 });
  });

  afterEach(async () => {
    for (const s of streams.splice(0)) s.close();
    await server.close();
  });

  it('streams watch events as newline-delimited JSON over chunked encoding', async () => {
    const from = server.resourceVersion;
    const watch = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${from}`);
    streams.push(watch);
    expect(watch.status).toBe(200);
    expect(watch.headers.get('transfer-encoding')).toBe('chunked');
    expect(watch.headers.get('content-type')).toBe('application/json');
    const created = await server.createService(svc('a'));
    await server.updateService({
      ...created,
      metadata: { ...(created.metadata as Json), labels: { x: 'y' } },
    });
    await server.deleteService('default', 'a');
    await eventually(() => expect(watch.events.map(typeOf)).toEqual(['ADDED', 'MODIFIED', 'DELETED']));
    const rvs = watch.events.map((e) => rvOf(e.object));
    expect(rvs[0]).toBeGreaterThan(from);
    expect(rvs[1]).toBeGreaterThan(rvs[0] ?? 0);
    expect(rvs[2]).toBeGreaterThan(rvs[1] ?? 0);
    expect(objectOf(watch.events[0]).kind).toBe('Service');

    // A watch from a past resourceVersion replays what followed it, and only that.
    const replay = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${rvs[0]}`);
    streams.push(replay);
    await eventually(() => expect(replay.events.map(typeOf)).toEqual(['MODIFIED', 'DELETED']));

    // Without a resourceVersion: the current state as ADDED, then live events.
    await server.createService(svc('b'));
    const fresh = await openWatch(server, '/api/v1/services?watch=true');
    streams.push(fresh);
    await eventually(() => expect(fresh.events.map(typeOf)).toEqual(['ADDED']));
  });

  it('filters namespaced watches and lists', async () => {
    await server.createNamespace('team');
    const watch = await openWatch(
      server,
      `/api/v1/namespaces/team/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    streams.push(watch);
    await server.createService(svc('other'));
    await server.createService(svc('mine', 'team'));
    await eventually(() => expect(watch.events).toHaveLength(1));
    expect((objectOf(watch.events[0]).metadata as Json).name).toBe('mine');
    const list = await api(server, 'GET', '/api/v1/namespaces/team/services');
    expect((list.body.items as Json[]).map((i) => (i.metadata as Json).name)).toEqual(['mine']);
  });

  it('answers a too-old resourceVersion with a 410 ERROR event, as the real server does', async () => {
    const old = server.resourceVersion;
    await server.createService(svc('a'));
    server.compact();
    const watch = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${old}`);
    expect(watch.status).toBe(200);
    await eventually(() => expect(watch.ended).toBe(true));
    expect(watch.events).toEqual([
      {
        type: 'ERROR',
        object: expect.objectContaining({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 }),
      },
    ]);
    // The history is bounded too: 60 writes with a limit of 50 push the first ones out.
    const before = server.resourceVersion;
    for (let i = 0; i < 60; i++) await server.createService(svc(`s${i}`));
    const tooOld = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${before}`);
    await eventually(() => expect(tooOld.ended).toBe(true));
    expect(objectOf(tooOld.events[0]).code).toBe(410);
    const recent = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion - 5}`,
    );
    streams.push(recent);
    await eventually(() => expect(recent.events).toHaveLength(5));
  });

  it('sends bookmarks only to watches that allow them', async () => {
    const rv = server.resourceVersion;
    const with_ = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`,
    );
    const without = await openWatch(server, `/api/v1/services?watch=true&resourceVersion=${rv}`);
    streams.push(with_, without);
    await server.createNamespace('elsewhere'); // moves the cluster resourceVersion, no Service event
    server.injectBookmark();
    await server.createService(svc('after'));
    await eventually(() => expect(with_.events.map(typeOf)).toEqual(['BOOKMARK', 'ADDED']));
    expect(rvOf(with_.events[0]?.object)).toBe(rv + 1);
    expect(objectOf(with_.events[0]).kind).toBe('Service');
    await eventually(() => expect(without.events.map(typeOf)).toEqual(['ADDED']));
  });

  it('drops watches (reset or clean end), expires them, and holds delivery', async () => {
    const a = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    const b = await openWatch(
      server,
      `/api/v1/namespaces?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    expect(server.openWatches()).toBe(2);
    server.dropWatches('reset', 'services');
    await eventually(() => expect(a.failed).toBeDefined());
    server.dropWatches('end');
    await eventually(() => expect(b.ended).toBe(true));
    expect(server.openWatches()).toBe(0);

    const c = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    streams.push(c);
    server.holdWatches();
    await server.createService(svc('held'));
    expect(c.events).toHaveLength(0);
    server.releaseWatches();
    await eventually(() => expect(c.events.map(typeOf)).toEqual(['ADDED']));
    server.expireWatches();
    await eventually(() => expect(c.ended).toBe(true));
    expect(objectOf(c.events[1]).code).toBe(410);
  });

  it('deletes the Services of a deleted Namespace', async () => {
    await server.createNamespace('gone');
    await server.createService(svc('x', 'gone'));
    const watch = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    streams.push(watch);
    const res = await api(server, 'DELETE', '/api/v1/namespaces/gone');
    expect(res.status).toBe(200);
    await eventually(() => expect(watch.events.map(typeOf)).toEqual(['DELETED']));
    expect(server.listServices()).toHaveLength(0);
  });

  it('ends a watch cleanly after timeoutSeconds, and refuses a resourceVersion that is not a number', async () => {
    const watch = await openWatch(server, '/api/v1/namespaces?watch=true&timeoutSeconds=1');
    await eventually(() => expect(watch.events.length).toBeGreaterThan(0)); // the current Namespaces, as ADDED
    expect(watch.events.every((e) => e.type === 'ADDED')).toBe(true);
    await eventually(() => expect(watch.ended).toBe(true));
    expect(watch.failed).toBeUndefined();
    expect(server.openWatches()).toBe(0);
    const bad = await api(server, 'GET', '/api/v1/services?watch=true&resourceVersion=abc');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ kind: 'Status', reason: 'BadRequest' });
  });

  it('delivers one write to every watch of its resource, in the order written', async () => {
    const rv = server.resourceVersion;
    const [a, b] = await Promise.all([
      openWatch(server, `/api/v1/services?watch=true&resourceVersion=${rv}`),
      openWatch(server, `/api/v1/namespaces/default/services?watch=true&resourceVersion=${rv}`),
    ]);
    streams.push(a, b);
    for (const name of ['x', 'y', 'z']) await server.createService(svc(name));
    const names = (s: Stream) => s.events.map((e) => ((e.object as Json).metadata as Json).name);
    await eventually(() => expect(names(a)).toEqual(['x', 'y', 'z']));
    await eventually(() => expect(names(b)).toEqual(['x', 'y', 'z']));
    expect(a.events.map((e) => rvOf(e.object))).toEqual(b.events.map((e) => rvOf(e.object)));
    expect(objectOf(a.events[0]).apiVersion).toBe('v1');
    expect(typeOf(a.events[0])).toBe('ADDED');
  });
});
