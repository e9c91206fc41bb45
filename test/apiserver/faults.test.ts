// Outages: the listener goes down (connections refused) and comes back on the same port, the
// state kept.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import { Listener } from './faults.ts';
import type { Json } from './resources.ts';
import { api, eventually, openWatch, svc } from './wire.ts';

describe('outages', () => {
  let server: FakeApiServer;

  beforeEach(async () => {
    server = await FakeApiServer.start({ historyLimit: 50 });
  });

  afterEach(async () => {
    await server.close();
  });

  it('goes down (connections refused), keeps state and accepts direct writes, and comes back on the same port', async () => {
    await server.createService(svc('before'));
    const watch = await openWatch(
      server,
      `/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`,
    );
    const port = server.port;
    await server.goDown();
    await eventually(() => expect(watch.failed ?? watch.ended).toBeTruthy());
    await expect(fetch(`${server.url}/api/v1/services`)).rejects.toThrow();
    await server.createService(svc('during'));
    await server.comeBack();
    expect(server.port).toBe(port);
    const list = await api(server, 'GET', '/api/v1/services');
    expect((list.body.items as Json[]).map((i) => (i.metadata as Json).name)).toEqual(['before', 'during']);
  });
});

describe('Listener', () => {
  it('counts connections, refuses them while down, and keeps its port', async () => {
    const listener = new Listener({ handler: (_req, res) => res.end('hi') });
    await listener.comeBack();
    const url = `http://127.0.0.1:${listener.port}/`;
    try {
      expect(await (await fetch(url)).text()).toBe('hi');
      expect(listener.connections).toBe(1);
      const port = listener.port;
      await listener.goDown();
      expect(listener.isDown).toBe(true);
      await expect(fetch(url)).rejects.toThrow();
      await listener.comeBack();
      expect(listener.port).toBe(port);
      expect(await (await fetch(url)).text()).toBe('hi');
    } finally {
      await listener.goDown();
    }
  });
});
