// How the review port speaks TLS: protocol versions and suites, timeouts for connections that go
// silent, and (with --client-ca) which clients may ask for reviews. Every secure context the
// server ever uses (at start, on a certificate reload, from the Secret bootstrap) is built by
// `secureContextOptions`, so a reload cannot fall back to Node's defaults.

import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContextOptions, type TLSSocket } from 'node:tls';

/**
 * Mozilla's "intermediate" configuration, restricted to ECDHE: TLS 1.2 only with ECDHE key
 * exchange and AEAD ciphers (no CBC, SHA-1 MACs, CCM, ARIA, static RSA or DHE, all of which
 * Node's defaults accept); TLS 1.3 with its standard suites (Node's defaults, named here because
 * a cipher list without them would turn TLS 1.3 off). Key-exchange groups stay Node's defaults.
 */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
] as const;
export const TLS13_SUITES = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
] as const;

/** A TCP connection has this long to complete its TLS handshake. */
export const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * A connection has this long after the handshake to start its first request, and a request may
 * go this long without a byte moving (the API server sends its whole review at once).
 */
export const FIRST_REQUEST_TIMEOUT_MS = 10_000;
/** An idle kept-alive connection between reviews: longer than the API server client's 90 s, so the client is the one that closes. */
export const IDLE_TIMEOUT_MS = 120_000;
/** Kubernetes' webhook timeout is at most 30 s; a request that takes longer is dead anyway. */
export const REQUEST_TIMEOUT_MS = 30_000;

export interface TlsMaterial {
  cert: string;
  key: string;
}

/** The options of every secure context: the certificate, the suites, and the client CAs if any. */
export function secureContextOptions(material: TlsMaterial, clientCa?: string): SecureContextOptions {
  return {
    cert: material.cert,
    key: material.key,
    minVersion: 'TLSv1.2',
    ciphers: [...TLS13_SUITES, ...TLS12_CIPHERS].join(':'),
    ...(clientCa !== undefined ? { ca: clientCa } : {}),
  };
}

/** Checks that a certificate and key are PEM and belong together; throws with the reason. */
export function checkTlsMaterial(material: TlsMaterial): void {
  createSecureContext(secureContextOptions(material));
}

/** Checks that a client CA file holds at least one CA certificate; throws with the reason. */
export function checkClientCa(pem: string): void {
  const first = new X509Certificate(pem);
  if (!first.ca) throw new Error(`${first.subject.replace(/\n/g, ', ')} is not a CA certificate`);
  createSecureContext({ ca: pem });
}

export interface ClientAuth {
  /** PEM bundle of the CAs that sign acceptable client certificates. */
  caFile: string;
  /** Names (subject CN or DNS SAN) of which the client certificate must carry one; empty: any. */
  names: readonly string[];
}

/** The names a certificate answers to: its subject CN and DNS subject alternative names. */
function certificateNames(cert: { subject?: { CN?: string | string[] }; subjectaltname?: string }): string[] {
  const cn = cert.subject?.CN;
  const names = Array.isArray(cn) ? [...cn] : cn ? [cn] : [];
  for (const entry of (cert.subjectaltname ?? '').split(', ')) {
    if (entry.startsWith('DNS:')) names.push(entry.slice(4));
  }
  return names;
}

/**
 * Why this connection's client may not ask for reviews, or undefined when it may. The handshake
 * asks every client for a certificate but admits those without (the kubelet's probes have none);
 * reviews are refused here instead.
 */
export function clientRefusal(socket: TLSSocket, names: readonly string[]): string | undefined {
  const cert = socket.getPeerCertificate();
  if (!cert || Object.keys(cert).length === 0) return 'a client certificate is required';
  if (!socket.authorized) {
    return `the client certificate is not accepted (${String(socket.authorizationError ?? 'not signed by --client-ca')})`;
  }
  if (names.length === 0) return undefined;
  const has = certificateNames(cert);
  if (has.some((n) => names.includes(n))) return undefined;
  return `the client certificate names ${JSON.stringify(has.slice(0, 4))}, none of --client-name`;
}
