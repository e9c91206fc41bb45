// X.509 for the Secret bootstrap: a CA, the serving certificate it signs, and the checks that say
// whether what a Secret holds can still be used.
//
// Generation goes through the `selfsigned` package, as the in-memory certificate in tls.ts does:
// its `ca` option signs the new certificate with a given CA key instead of self-signing, which is
// all a CA-signed serving certificate needs, so no second X.509 library is added. (It builds on
// @peculiar/x509 and WebCrypto: no OpenSSL binary, no native code. node:crypto only parses
// certificates.) It cannot write subject/authority key identifiers, so every CA gets a subject of
// its own (a timestamp and random suffix): during a rotation the caBundle holds two CAs, and chain
// building picks the issuer by subject name.
//
// Checks use node:crypto's X509Certificate (the same OpenSSL that serves the certificate).

import { createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';

export interface KeyPair {
  /** PEM certificate. */
  cert: string;
  /** PEM private key (PKCS#8). */
  key: string;
}

/** notBefore is set this far back, for clocks (API servers, replicas) that run a little behind. */
export const BACKDATE_MS = 5 * 60_000;

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates in a PEM bundle, each normalised to end with a newline. */
export function splitPemBundle(pem: string): string[] {
  return [...pem.matchAll(PEM_BLOCK)].map((m) => `${m[0]}\n`);
}

/** Parses a PEM certificate, or returns undefined. */
export function parseCertificate(pem: string | undefined): X509Certificate | undefined {
  if (!pem) return undefined;
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

export function notAfter(cert: X509Certificate): number {
  return cert.validToDate.getTime();
}

export function notBefore(cert: X509Certificate): number {
  return cert.validFromDate.getTime();
}

/** Whether `key` (PEM) is the private key of `cert`. */
export function keyMatches(cert: X509Certificate, key: string): boolean {
  try {
    return cert.checkPrivateKey(createPrivateKey(key));
  } catch {
    return false;
  }
}

/** Whether `cert` names `ca` as its issuer and carries its signature. */
export function signedBy(cert: X509Certificate, ca: X509Certificate): boolean {
  try {
    return cert.checkIssued(ca) && cert.verify(ca.publicKey);
  } catch {
    return false;
  }
}

/** The DNS names in the subjectAltName extension. */
export function dnsNamesOf(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '')
    .split(', ')
    .filter((entry) => entry.startsWith('DNS:'))
    .map((entry) => entry.slice(4));
}

/** Why this pair cannot serve as the CA at `now`, or undefined when it can. */
export function caProblem(pair: Partial<KeyPair> | undefined, now: number): string | undefined {
  if (!pair?.cert || !pair.key) return 'missing';
  const cert = parseCertificate(pair.cert);
  if (!cert) return 'the certificate does not parse';
  if (!cert.ca) return 'the certificate is not a CA';
  if (!keyMatches(cert, pair.key)) return 'the key does not belong to the certificate';
  if (notAfter(cert) <= now) return `expired at ${cert.validToDate.toISOString()}`;
  return undefined;
}

async function generate(
  commonName: string,
  options: {
    notBefore: number;
    notAfter: number;
    extensions: NonNullable<Parameters<typeof import('selfsigned').generate>[1]>['extensions'];
    ca?: KeyPair;
  },
): Promise<KeyPair> {
  const selfsigned = await import('selfsigned');
  // CommonJS: Node names its exports; a bundle hands them over as `default`.
  const generate =
    selfsigned.generate ?? (selfsigned as unknown as { default: typeof selfsigned }).default.generate;
  const pems = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(options.notBefore),
    notAfterDate: new Date(options.notAfter),
    ...(options.extensions ? { extensions: options.extensions } : {}),
    ...(options.ca ? { ca: options.ca } : {}),
  });
  return { cert: pems.cert, key: pems.private };
}

/**
 * A P-256 CA valid for `validityMs` from `now` (backdated by BACKDATE_MS), allowed to sign
 * end-entity certificates only (pathLen 0). Its subject is unique: `<name>-ca@<unix seconds>.<random>`.
 */
export async function createCa(options: {
  name: string;
  validityMs: number;
  now?: number;
}): Promise<KeyPair> {
  const now = options.now ?? Date.now();
  const unique = `${Math.floor(now / 1000)}.${randomBytes(4).toString('hex')}`;
  return generate(`${options.name}-ca@${unique}`, {
    notBefore: now - BACKDATE_MS,
    notAfter: now + options.validityMs,
    extensions: [
      { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
      { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    ],
  });
}

/**
 * A P-256 serving certificate for `dnsNames` (the first is also the common name), signed by `ca`,
 * valid for `validityMs` from `now` but never past the CA's own expiry.
 */
export async function issueServingCertificate(
  ca: KeyPair,
  options: { dnsNames: readonly string[]; validityMs: number; now?: number },
): Promise<KeyPair> {
  const now = options.now ?? Date.now();
  const caCert = new X509Certificate(ca.cert);
  const [first] = options.dnsNames;
  if (first === undefined) throw new Error('a serving certificate needs at least one DNS name');
  return generate(first, {
    notBefore: Math.max(now - BACKDATE_MS, notBefore(caCert)),
    notAfter: Math.min(now + options.validityMs, notAfter(caCert)),
    extensions: [
      { name: 'basicConstraints', cA: false, critical: true },
      // ECDSA keys sign the handshake; there is no key encipherment with them.
      { name: 'keyUsage', digitalSignature: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames: options.dnsNames.map((value) => ({ type: 2 as const, value })) },
    ],
    ca,
  });
}
