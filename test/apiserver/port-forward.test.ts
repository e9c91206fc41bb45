// pods/{name}/portforward through the real client-node PortForward: bytes both ways to what the
// pod's port is registered at, the errors the real server gives, and pods listed by label.

import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { PassThrough } from 'node:stream';
import { CoreV1Api, KubeConfig, PortForward } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.ts';
import { api } from './wire.ts';

function pod(name: string, labels: Record<string, string>, phase = 'Running') {
  return {
    metadata: { name, namespace: 'default', labels },
    spec: { nodeName: `node-${name}`, containers: [{ name: 'c', image: 'i' }] },
    status: { phase },
  };
}

describe('pods: port-forward and labelled lists', () => {
  let server: FakeApiServer;
  let echo: Server;
  let echoPort: number;
  let kc: KubeConfig;

  beforeEach(async () => {
    server = await FakeApiServer.start();
    // An upper-casing echo: what "the pod" serves on its port.
    echo = createServer((socket) => socket.on('data', (d) => socket.write(d.toString().toUpperCase())));
    echo.listen(0, '127.0.0.1');
    await once(echo, 'listening');
    echoPort = (echo.address() as { port: number }).port;
    kc = new KubeConfig();
    kc.loadFromString(server.kubeconfig());
  });

  afterEach(async () => {
    echo.close();
    await server.close();
  });

  /** Opens a forward, sends `text`, and collects what comes back until `until` holds or the socket closes. */
  async function exchange(name: string, port: number, text: string) {
    const output = new PassThrough();
    const errors = new PassThrough();
    const input = new PassThrough();
    const ws = await new PortForward(kc).portForward('default', name, [port], output, errors, input);
    let out = '';
    let err = '';
    output.on('data', (d: Buffer) => {
      out += d.toString();
    });
    errors.on('data', (d: Buffer) => {
      err += d.toString();
    });
    input.write(text);
    const socket = ws as unknown as { close(): void; once(event: string, cb: () => void): void };
    const closed = new Promise<void>((resolve) => socket.once('close', resolve));
    const deadline = Date.now() + 5000;
    while (out.length < text.length && err === '' && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    socket.close();
    await closed;
    return { out, err };
  }

  it('carries bytes both ways to the address registered for the pod port', async () => {
    await server.createPod(pod('daemon-a', { app: 'd' }), { 9469: echoPort });
    expect(await exchange('daemon-a', 9469, 'hello')).toEqual({ out: 'HELLO', err: '' });
    expect(
      server.requests.some((r) => r.path.endsWith('/pods/daemon-a/portforward') && r.status === 101),
    ).toBe(true);
  });

  it('a port nothing listens on: the error channel says so', async () => {
    await server.createPod(pod('daemon-b', { app: 'd' }), { 9469: echoPort });
    const { out, err } = await exchange('daemon-b', 9999, 'x');
    expect(out).toBe('');
    expect(err).toMatch(/error forwarding port 9999 to pod: .*connection refused/);
  });

  it('refuses a missing pod, a pod not running, a missing token and a plain GET, as the real server does', async () => {
    await server.createPod(pod('pending', {}, 'Pending'));
    const pf = new PortForward(kc);
    const sink = () => new PassThrough();
    await expect(pf.portForward('default', 'nope', [1], sink(), sink(), sink())).rejects.toThrow(/404/);
    await expect(pf.portForward('default', 'pending', [1], sink(), sink(), sink())).rejects.toThrow(/400/);
    const anonymous = new KubeConfig();
    anonymous.loadFromClusterAndUser(
      { name: 'c', server: server.url, skipTLSVerify: true },
      { name: 'nobody' },
    );
    await expect(
      new PortForward(anonymous).portForward('default', 'pending', [1], sink(), sink(), sink()),
    ).rejects.toThrow(/401/);
    const plain = await api(server, 'GET', '/api/v1/namespaces/default/pods/pending/portforward?ports=1');
    expect(plain.status).toBe(400);
    expect(plain.body.message).toBe('Upgrade request required');
  });

  it('lists pods by label selector through CoreV1Api', async () => {
    await server.createPod(pod('daemon-a', { 'app.kubernetes.io/component': 'daemon' }));
    await server.createPod(pod('webhook-a', { 'app.kubernetes.io/component': 'webhook' }));
    const core = kc.makeApiClient(CoreV1Api);
    const list = await core.listNamespacedPod({
      namespace: 'default',
      labelSelector: 'app.kubernetes.io/component=daemon',
    });
    expect(list.items.map((p) => [p.metadata?.name, p.spec?.nodeName, p.status?.phase])).toEqual([
      ['daemon-a', 'node-daemon-a', 'Running'],
    ]);
    const bad = await api(server, 'GET', '/api/v1/namespaces/default/pods?labelSelector=a%3Db%3Dc');
    expect(bad.status).toBe(400);
  });
});
