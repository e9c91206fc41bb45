// The network side of the API server stand-in, and its outages: an HTTP(S) listener on
// 127.0.0.1 that can go down (listener closed, every connection destroyed: clients get
// ECONNREFUSED) and come back on the same port, while the state it serves is kept, like an
// apiserver restart with etcd intact. (The faults of open watches are in watch.ts; a request can
// be held back or failed through `beforeHandle`, routing.ts.)

import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;
type UpgradeHandler = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void;

export class Listener {
  /** TCP connections accepted so far. */
  connections = 0;
  readonly #handler: Handler;
  readonly #onUpgrade: UpgradeHandler | undefined;
  readonly #tls: { key: string; cert: string } | undefined;
  readonly #sockets = new Set<Socket>();
  #port: number;
  #server: http.Server | undefined;
  /** Called when going down, before the connections are destroyed. */
  readonly #onDown: () => void;

  constructor(options: {
    handler: Handler;
    /** Requests that ask for a protocol upgrade (WebSocket). */
    onUpgrade?: UpgradeHandler;
    tls?: { key: string; cert: string } | undefined;
    port?: number | undefined;
    onDown?: () => void;
  }) {
    this.#handler = options.handler;
    this.#onUpgrade = options.onUpgrade;
    this.#tls = options.tls;
    this.#port = options.port ?? 0;
    this.#onDown = options.onDown ?? (() => {});
  }

  get port(): number {
    return this.#port;
  }

  get isDown(): boolean {
    return this.#server === undefined;
  }

  /** Closes the listener and every connection: clients get ECONNREFUSED until comeBack(). */
  async goDown(): Promise<void> {
    const server = this.#server;
    if (!server) return;
    this.#server = undefined;
    this.#onDown();
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Listens (again) on the same port; the first call picks a free one unless a port was given. */
  async comeBack(): Promise<void> {
    if (this.#server) return;
    const server = this.#tls
      ? https.createServer({ key: this.#tls.key, cert: this.#tls.cert }, this.#handler)
      : http.createServer(this.#handler);
    server.keepAliveTimeout = 30_000;
    if (this.#onUpgrade) server.on('upgrade', this.#onUpgrade);
    server.on('connection', (socket: Socket) => {
      this.connections++;
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    if (address && typeof address === 'object') this.#port = address.port;
    this.#server = server;
  }
}
