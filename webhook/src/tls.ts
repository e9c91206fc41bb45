// The serving certificate: from files (reloaded when they change), or, when none is given, a
// self-signed one generated in memory at start. How it is served: tls-policy.ts.
//
// Generation uses the `selfsigned` package: node:crypto can make key pairs but has no API to
// issue an X.509 certificate (X509Certificate only parses), so the alternative would be
// hand-written ASN.1/DER. selfsigned is maintained, builds on WebCrypto with @peculiar/x509
// (no OpenSSL binary, no native code), and is loaded only when it is needed.

import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { type FileWatch, watchFiles } from '@slipstream/shared/adapters/file-watch';
import type { Logger } from '@slipstream/shared/adapters/log';
import { checkTlsMaterial, type TlsMaterial } from './tls-policy.ts';

/** A P-256 certificate for localhost, the loopback addresses and this host's name, valid one year. */
export async function selfSignedCertificate(names: readonly string[] = []): Promise<TlsMaterial> {
  const selfsigned = await import('selfsigned');
  // CommonJS: Node names its exports; a bundle hands them over as `default`.
  const generate =
    selfsigned.generate ?? (selfsigned as unknown as { default: typeof selfsigned }).default.generate;
  const dnsNames = [...new Set(['localhost', hostname(), ...names.filter((n) => isIP(n) === 0)])];
  const ips = [...new Set(['127.0.0.1', '::1', ...names.filter((n) => isIP(n) !== 0)])];
  const pems = await generate([{ name: 'commonName', value: 'slipstream-webhook' }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(Date.now() - 5 * 60_000),
    notAfterDate: new Date(Date.now() + 365 * 24 * 3600_000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      {
        name: 'subjectAltName',
        altNames: [
          ...dnsNames.map((value) => ({ type: 2 as const, value })),
          ...ips.map((ip) => ({ type: 7 as const, ip })),
        ],
      },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/** SHA-256 fingerprint and expiry of the first certificate in a PEM bundle, for log lines. */
export function describeCertificate(pem: string): {
  fingerprint256: string;
  validTo: string;
  subject: string;
} {
  const cert = new X509Certificate(pem);
  return { fingerprint256: cert.fingerprint256, validTo: cert.validTo, subject: cert.subject };
}

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

/**
 * Hands the certificate to `serve` when its files change (the server swaps its secure context:
 * connections already open keep their session, new handshakes get the new certificate). A pair
 * that does not load (written half-way, key and certificate from different pairs) keeps the
 * current one in service until a later change completes it.
 */
export function watchTlsFiles(
  serve: (material: TlsMaterial) => void,
  files: TlsFiles,
  initial: TlsMaterial,
  log: Logger,
  options: { debounceMs?: number; pollMs?: number; onLoaded?: (cert: string) => void } = {},
): FileWatch {
  const { onLoaded, ...watch } = options;
  return watchFiles(
    [files.certFile, files.keyFile],
    [initial.cert, initial.key],
    ([cert = '', key = '']) => {
      try {
        checkTlsMaterial({ cert, key });
        serve({ cert, key });
        onLoaded?.(cert);
        log.info('TLS certificate reloaded', {
          certFile: files.certFile,
          ...describeCertificate(cert),
        });
      } catch (error) {
        log.error('TLS certificate files changed but do not load; keeping the current certificate', {
          certFile: files.certFile,
          keyFile: files.keyFile,
          error: (error as Error).message,
        });
      }
    },
    {
      ...watch,
      onError: (error) =>
        log.warn('cannot read the TLS certificate files; keeping the current certificate', {
          error: error.message,
        }),
    },
  );
}
