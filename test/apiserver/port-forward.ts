// `pods/{name}/portforward` in the API server stand-in, over WebSocket as client-node speaks it
// (what kube-apiserver hands to the kubelet, which dials the port inside the pod's network
// namespace). The protocol is the kubelet's `v4.channel.k8s.io`: binary messages whose first byte
// is the channel (port i: data 2i, errors 2i+1); the server's first message on each channel is the
// port number (2 bytes, little endian). The kubelet's part, "localhost inside the pod", is the
// address a test registered for that pod's port: daemons of several "nodes" run on one host here.

import type http from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { isRecord } from '@slipstream/shared/core/record';
import { WebSocket, WebSocketServer } from 'ws';
import { keyOf } from './resources.ts';
import { StatusError, toStatus } from './status.ts';
import type { ObjectStore } from './store.ts';

/** Where "localhost:PORT inside the pod" is on this host, per pod (`namespace/name`) and port. */
export type PodPorts = Map<string, Map<number, { host: string; port: number }>>;

const PATH = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/;
const PROTOCOL = 'v4.channel.k8s.io';

export interface PortForwardParts {
  token: string;
  store: ObjectStore;
  podPorts: PodPorts;
  /** Counts the request (verb 'other', resource pods) like every other. */
  record(path: string, query: string, status: number): void;
}

/** The server's 'upgrade' listener: port-forward, or the Status the real server answers. */
export function portForwardUpgrade(
  parts: PortForwardParts,
): (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void {
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (offered) => (offered.has(PROTOCOL) ? PROTOCOL : false),
  });
  return (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://fake');
    let target: { host: string; port: number; podPort: number };
    try {
      target = resolve(parts, req, url);
    } catch (error) {
      const status = toStatus(error);
      parts.record(url.pathname, url.search, Number(status.code));
      const text = JSON.stringify(status);
      socket.end(
        `HTTP/1.1 ${status.code} ${String(status.reason)}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`,
      );
      return;
    }
    parts.record(url.pathname, url.search, 101);
    wss.handleUpgrade(req, socket, head, (ws) => forward(ws, target));
  };
}

function resolve(
  parts: PortForwardParts,
  req: http.IncomingMessage,
  url: URL,
): { host: string; port: number; podPort: number } {
  if (parts.token && req.headers.authorization !== `Bearer ${parts.token}`)
    throw new StatusError(401, 'Unauthorized', 'Unauthorized');
  const m = PATH.exec(url.pathname);
  if (!m) throw new StatusError(404, 'NotFound', 'the server could not find the requested resource');
  const [namespace, name] = [decodeURIComponent(m[1]!), decodeURIComponent(m[2]!)];
  const pod = parts.store.get('pods', namespace, name);
  if (!pod) throw new StatusError(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' });
  const ports = url.searchParams.getAll('ports');
  const podPort = Number(ports[0]);
  if (ports.length !== 1 || !Number.isInteger(podPort) || podPort < 1 || podPort > 65535)
    throw new StatusError(400, 'BadRequest', 'query parameter "ports" is required: one port, 1-65535');
  const phase = isRecord(pod.status) ? pod.status.phase : undefined;
  if (phase !== 'Running')
    throw new StatusError(400, 'BadRequest', `pod ${name} is not running (phase ${String(phase)})`);
  const at = parts.podPorts.get(keyOf(namespace, name))?.get(podPort);
  // Nothing listens there: the kubelet's dial would be refused; say so on the error channel.
  return { host: at?.host ?? '127.0.0.1', port: at?.port ?? 0, podPort };
}

function forward(ws: WebSocket, target: { host: string; port: number; podPort: number }): void {
  const preamble = (channel: number) => Buffer.from([channel, target.podPort & 0xff, target.podPort >> 8]);
  ws.send(preamble(0));
  ws.send(preamble(1));
  const fail = (message: string) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(Buffer.concat([Buffer.from([1]), Buffer.from(message)]));
    ws.close(1000);
  };
  if (target.port === 0) {
    fail(
      `error forwarding port ${target.podPort} to pod: dial tcp4 127.0.0.1:${target.podPort}: connect: connection refused`,
    );
    return;
  }
  const tcp: Socket = connect(target.port, target.host);
  tcp.on('error', (error) => fail(`error forwarding port ${target.podPort} to pod: ${error.message}`));
  tcp.on('data', (data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(Buffer.concat([Buffer.from([0]), data]));
  });
  tcp.on('end', () => ws.close(1000));
  ws.on('message', (raw, isBinary) => {
    const data = raw as Buffer; // binaryType 'nodebuffer'
    if (!isBinary || data.length < 1 || data[0] !== 0) return;
    tcp.write(data.subarray(1));
  });
  ws.on('close', () => tcp.end());
}
