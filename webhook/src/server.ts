// Puts the app on TLS: certificate (files, in-memory self-signed, or handed over later by the
// Secret bootstrap), h2 next to HTTP/1.1 (the API server's Go client uses h2 when offered),
// the TLS policy and timeouts of tls-policy.ts, optional client certificates, listen, and a
// graceful close (stop accepting, let in-flight reviews finish, then drop what is left).

import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import type { Server as HttpServer } from 'node:http';
import { constants, createSecureServer, type Http2SecureServer, type Http2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Tracer } from '@opentelemetry/api';
import { type FileWatch, watchFiles } from '@slipstream/shared/adapters/file-watch';
import type { Logger } from '@slipstream/shared/adapters/log';
import type { Policy } from '@slipstream/shared/core/policy';
import { type AppOptions, createRequestListener, type Request } from './app.ts';
import { type GateLimits, ReviewGate } from './gate.ts';
import { LargeReviews } from './large-reviews.ts';
import type { WebhookMetrics } from './metrics.ts';
import { describeCertificate, selfSignedCertificate, type TlsFiles, watchTlsFiles } from './tls.ts';
import {
  type ClientAuth,
  checkClientCa,
  checkTlsMaterial,
  clientRefusal,
  FIRST_REQUEST_TIMEOUT_MS,
  HANDSHAKE_TIMEOUT_MS,
  IDLE_TIMEOUT_MS,
  REQUEST_TIMEOUT_MS,
  secureContextOptions,
  type TlsMaterial,
} from './tls-policy.ts';

export interface WebhookServerOptions {
  host: string;
  port: number;
  /** Certificate files; absent: a self-signed certificate generated in memory. */
  tls?: TlsFiles;
  /**
   * The certificate comes later, through `setCertificate` (the Secret bootstrap). Until then the
   * server listens with a throwaway self-signed certificate (so /healthz answers) and /readyz
   * answers 503.
   */
  deferCertificate?: boolean;
  /** Reviews only for clients with a certificate from this CA (and, if given, one of these names). */
  clientAuth?: ClientAuth;
  policy: () => Policy;
  log: Logger;
  tracer?: Tracer;
  metrics?: WebhookMetrics;
  /** Concurrency limits (tests lower them). */
  limits?: Partial<GateLimits>;
  /** Timeouts (tests shorten them). */
  timeouts?: { handshakeMs?: number; firstRequestMs?: number; idleMs?: number };
  /** File watching for the certificate (tests shorten it). */
  watch?: { debounceMs?: number; pollMs?: number };
}

export interface WebhookServer {
  server: Http2SecureServer;
  /** `https://host:port` as bound (port 0 resolved). */
  url: string;
  port: number;
  /** The certificate served at start (PEM), e.g. for a test client's `ca`. */
  certificate: string;
  gate: ReviewGate;
  /** The worker thread that answers large reviews. */
  large: LargeReviews;
  /**
   * Serves this certificate from the next handshake on; open connections keep theirs. Throws
   * (keeping the current one) when the pair does not load. With `deferCertificate`, the first call
   * makes the server ready.
   */
  setCertificate(material: TlsMaterial): void;
  /** Counts reviews (and the certificate served) from now on (the metrics are loaded after listening). */
  setMetrics(metrics: WebhookMetrics): void;
  /** What /readyz answers: listening, not closing, and (with `deferCertificate`) a certificate set. */
  readonly ready: boolean;
  /** Stops accepting, waits up to `graceMs` for open requests, then closes every connection. */
  close(graceMs?: number): Promise<void>;
}

function readTlsFiles(files: TlsFiles): TlsMaterial {
  const material = { cert: readFileSync(files.certFile, 'utf8'), key: readFileSync(files.keyFile, 'utf8') };
  checkTlsMaterial(material);
  return material;
}

async function initialCertificate(options: WebhookServerOptions): Promise<TlsMaterial> {
  const { log } = options;
  if (options.tls) {
    const material = readTlsFiles(options.tls);
    log.info('serving the certificate from files', {
      certFile: options.tls.certFile,
      keyFile: options.tls.keyFile,
      ...describeCertificate(material.cert),
    });
    return material;
  }
  if (options.deferCertificate) {
    const material = await selfSignedCertificate();
    log.info(
      'waiting for the serving certificate: a throwaway self-signed one answers until then, /readyz 503',
      describeCertificate(material.cert),
    );
    return material;
  }
  const material = await selfSignedCertificate(
    options.host === '0.0.0.0' || options.host === '::' ? [] : [options.host],
  );
  log.warn(
    'no --tls-cert/--tls-key given: serving a self-signed certificate generated in memory; the API server will not trust it (use files from cert-manager or similar in a cluster)',
    describeCertificate(material.cert),
  );
  return material;
}

function readClientCa(auth: ClientAuth): string {
  const pem = readFileSync(auth.caFile, 'utf8');
  checkClientCa(pem);
  return pem;
}

export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const { log } = options;
  let material = await initialCertificate(options);
  let clientCa = options.clientAuth ? readClientCa(options.clientAuth) : undefined;
  const names = options.clientAuth?.names ?? [];
  const firstRequestMs = options.timeouts?.firstRequestMs ?? FIRST_REQUEST_TIMEOUT_MS;
  const idleMs = options.timeouts?.idleMs ?? IDLE_TIMEOUT_MS;

  let accepting = false;
  let certificateSet = !options.deferCertificate;
  const gate = new ReviewGate(options.limits);
  const large = new LargeReviews({ log });
  // Kept by reference: setMetrics fills in `metrics` for the reviews that come after it.
  const app: AppOptions = {
    policy: options.policy,
    log,
    gate,
    large,
    ready: () => accepting && certificateSet,
    ...(options.tracer ? { tracer: options.tracer } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
    ...(options.clientAuth
      ? { clientRefusal: (req: Request) => clientRefusal(req.socket as TLSSocket, names) }
      : {}),
  };
  const listener = createRequestListener(app);
  let served = material.cert;
  const certificateServed = (cert: string) => {
    served = cert;
    app.metrics?.certificate(cert);
  };
  certificateServed(material.cert);
  const server = createSecureServer(
    {
      ...secureContextOptions(material, clientCa),
      // Every client is asked for a certificate, none is turned away in the handshake: the kubelet's
      // probes have none. Reviews check it (app.ts).
      ...(clientCa !== undefined ? { requestCert: true, rejectUnauthorized: false } : {}),
      allowHTTP1: true,
      handshakeTimeout: options.timeouts?.handshakeMs ?? HANDSHAKE_TIMEOUT_MS,
      // Twice the reviews that may be in flight: a full gate answers 429 itself, rather than the
      // client holding streams back unseen; and yet no connection can open streams without bound.
      settings: { maxConcurrentStreams: 2 * gate.limits.maxInFlight },
    },
    listener,
  );
  const serve = () => server.setSecureContext(secureContextOptions(material, clientCa));

  // HTTP/1.1: `timeout` is the inactivity limit before the first request and within each one,
  // keepAliveTimeout the one between requests. h2: the session gets the first-request limit until
  // its first stream, then the idle one; each stream gets the request timeout.
  // allowHTTP1's fallback reads node:http's settings from this server (Node's types omit them).
  const http1 = server as unknown as Pick<
    HttpServer,
    'timeout' | 'keepAliveTimeout' | 'requestTimeout' | 'headersTimeout' | 'closeIdleConnections'
  >;
  http1.timeout = firstRequestMs;
  http1.keepAliveTimeout = idleMs;
  http1.requestTimeout = REQUEST_TIMEOUT_MS;
  http1.headersTimeout = Math.min(http1.headersTimeout, REQUEST_TIMEOUT_MS);
  const sessions = new Set<Http2Session>();
  server.on('session', (session: Http2Session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    session.setTimeout(firstRequestMs);
    session.once('stream', () => session.setTimeout(idleMs));
  });
  server.on('stream', (stream) =>
    stream.setTimeout(REQUEST_TIMEOUT_MS, () => stream.close(constants.NGHTTP2_CANCEL)),
  );
  // A connection gone silent: an HTTP/1.1 socket is closed, an h2 session told to go away (GOAWAY
  // lets the client retry what the server has not started).
  server.on('timeout', (target: TLSSocket | Http2Session) => {
    if (target instanceof TLSSocket) target.destroy();
    else target.close(() => undefined);
  });
  const sockets = new Set<TLSSocket>();
  server.on('secureConnection', (socket: TLSSocket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  // TLS handshakes that go wrong (port scans, plain HTTP on the TLS port) are not worth a log line each.
  server.on('tlsClientError', () => {});

  server.listen(options.port, options.host);
  await once(server, 'listening');
  accepting = true;
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  const watches: FileWatch[] = [];
  if (options.tls) {
    watches.push(
      watchTlsFiles(
        (next) => {
          material = next;
          serve();
        },
        options.tls,
        material,
        log,
        { ...options.watch, onLoaded: certificateServed },
      ),
    );
  }
  if (options.clientAuth && clientCa !== undefined) {
    const caFile = options.clientAuth.caFile;
    watches.push(
      watchFiles(
        [caFile],
        [clientCa],
        ([pem = '']) => {
          try {
            checkClientCa(pem);
            clientCa = pem;
            serve();
            log.info('client CA reloaded', { caFile, ...describeCertificate(pem) });
          } catch (error) {
            log.error('client CA file changed but does not load; keeping the current one', {
              caFile,
              error: (error as Error).message,
            });
          }
        },
        {
          ...options.watch,
          onError: (error) => log.warn('cannot read the client CA file', { error: error.message }),
        },
      ),
    );
  }

  let closing: Promise<void> | undefined;
  return {
    server,
    url: `https://${host}:${address.port}`,
    port: address.port,
    certificate: material.cert,
    gate,
    large,
    setCertificate(next: TlsMaterial) {
      checkTlsMaterial(next);
      material = next;
      serve();
      certificateSet = true;
      certificateServed(next.cert);
    },
    setMetrics(metrics: WebhookMetrics) {
      app.metrics = metrics;
      metrics.certificate(served);
    },
    get ready() {
      return accepting && certificateSet;
    },
    close(graceMs = 10_000) {
      closing ??= (async () => {
        accepting = false;
        for (const w of watches) w.close();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        // h2 sessions get a GOAWAY (open streams finish); HTTP/1.1 connections go as soon as they
        // are idle (their review answered); the rest at the deadline.
        for (const session of sessions) session.close();
        http1.closeIdleConnections();
        const idle = setInterval(() => http1.closeIdleConnections(), 100);
        const timer = setTimeout(() => {
          for (const socket of sockets) socket.destroy();
          for (const session of sessions) session.destroy();
        }, graceMs);
        await closed;
        clearInterval(idle);
        clearTimeout(timer);
        await large.close();
      })();
      return closing;
    },
  };
}
