// Puts the app on HTTPS: certificate (files, in-memory self-signed, or handed over later by the
// Secret bootstrap), policy source, listen, and a graceful close (stop accepting, let in-flight
// reviews finish, then drop what is left).

import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Tracer } from '@opentelemetry/api';
import type { FileWatch } from '@slipstream/shared/adapters/file-watch';
import type { Logger } from '@slipstream/shared/adapters/log';
import type { Policy } from '@slipstream/shared/core/policy';
import { type AppOptions, createRequestListener } from './app.ts';
import type { WebhookMetrics } from './metrics.ts';
import {
  checkTlsMaterial,
  describeCertificate,
  selfSignedCertificate,
  type TlsFiles,
  type TlsMaterial,
  watchTlsFiles,
} from './tls.ts';

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
  policy: () => Policy;
  log: Logger;
  tracer?: Tracer;
  metrics?: WebhookMetrics;
  /** File watching for the certificate (tests shorten it). */
  watch?: { debounceMs?: number; pollMs?: number };
}

export interface WebhookServer {
  server: Server;
  /** `https://host:port` as bound (port 0 resolved). */
  url: string;
  port: number;
  /** The certificate served at start (PEM), e.g. for a test client's `ca`. */
  certificate: string;
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

/** Kubernetes' webhook timeout is at most 30 s; a request that takes longer is dead anyway. */
const REQUEST_TIMEOUT_MS = 30_000;
/** Longer than the API server client's idle timeout (90 s), so it is the client that closes idle connections. */
const KEEP_ALIVE_TIMEOUT_MS = 120_000;

function readTlsFiles(files: TlsFiles): TlsMaterial {
  const material = { cert: readFileSync(files.certFile, 'utf8'), key: readFileSync(files.keyFile, 'utf8') };
  checkTlsMaterial(material);
  return material;
}

export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const { log } = options;
  let material: TlsMaterial;
  if (options.tls) {
    material = readTlsFiles(options.tls);
    log.info('serving the certificate from files', {
      certFile: options.tls.certFile,
      keyFile: options.tls.keyFile,
      ...describeCertificate(material.cert),
    });
  } else if (options.deferCertificate) {
    material = await selfSignedCertificate();
    log.info(
      'waiting for the serving certificate: a throwaway self-signed one answers until then, /readyz 503',
      describeCertificate(material.cert),
    );
  } else {
    material = await selfSignedCertificate(
      options.host === '0.0.0.0' || options.host === '::' ? [] : [options.host],
    );
    log.warn(
      'no --tls-cert/--tls-key given: serving a self-signed certificate generated in memory; the API server will not trust it (use files from cert-manager or similar in a cluster)',
      describeCertificate(material.cert),
    );
  }

  let accepting = false;
  let certificateSet = !options.deferCertificate;
  // Kept by reference: setMetrics fills in `metrics` for the reviews that come after it.
  const app: AppOptions = {
    policy: options.policy,
    log,
    ready: () => accepting && certificateSet,
    ...(options.tracer ? { tracer: options.tracer } : {}),
    ...(options.metrics ? { metrics: options.metrics } : {}),
  };
  const listener = createRequestListener(app);
  let served = material.cert;
  const certificateServed = (cert: string) => {
    served = cert;
    app.metrics?.certificate(cert);
  };
  certificateServed(material.cert);
  const server = createServer({ cert: material.cert, key: material.key, minVersion: 'TLSv1.2' }, listener);
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = Math.min(server.headersTimeout, REQUEST_TIMEOUT_MS);
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // TLS handshakes that go wrong (port scans, plain HTTP on the TLS port) are not worth a log line each.
  server.on('tlsClientError', () => {});

  server.listen(options.port, options.host);
  await once(server, 'listening');
  accepting = true;
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  let certWatch: FileWatch | undefined;
  if (options.tls) {
    certWatch = watchTlsFiles(server, options.tls, material, log, {
      ...options.watch,
      onLoaded: certificateServed,
    });
  }

  let closing: Promise<void> | undefined;
  return {
    server,
    url: `https://${host}:${address.port}`,
    port: address.port,
    certificate: material.cert,
    setCertificate(next: TlsMaterial) {
      checkTlsMaterial(next);
      server.setSecureContext({ cert: next.cert, key: next.key, minVersion: 'TLSv1.2' });
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
        certWatch?.close();
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        // Keep-alive connections go as soon as they are idle (their review answered), the rest at the deadline.
        server.closeIdleConnections();
        const idle = setInterval(() => server.closeIdleConnections(), 100);
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        await closed;
        clearInterval(idle);
        clearTimeout(timer);
      })();
      return closing;
    },
  };
}
