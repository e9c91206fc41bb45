import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  BACKDATE_MS,
  caProblem,
  createCa,
  dnsNamesOf,
  issueServingCertificate,
  keyMatches,
  notAfter,
  signedBy,
  splitPemBundle,
} from './certs.ts';

const DAY = 86_400_000;
const NAMES = [
  'slipstream-webhook.slipstream-system.svc',
  'slipstream-webhook.slipstream-system.svc.cluster.local',
];

describe('certificates for the Secret bootstrap', () => {
  it('makes a P-256 CA that may sign end-entity certificates only, with a subject of its own', async () => {
    const now = Date.now();
    const [a, b] = await Promise.all([
      createCa({ name: 'slipstream-webhook', validityMs: 3650 * DAY, now }),
      createCa({ name: 'slipstream-webhook', validityMs: 3650 * DAY, now }),
    ]);
    const cert = new X509Certificate(a.cert);
    expect(cert.ca).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.subject).toMatch(/^CN=slipstream-webhook-ca@\d+\.[0-9a-f]{8}$/);
    expect(cert.subject).not.toBe(new X509Certificate(b.cert).subject);
    expect(cert.validFromDate.getTime()).toBeLessThanOrEqual(now - BACKDATE_MS + 1000);
    expect(Math.abs(notAfter(cert) - (now + 3650 * DAY))).toBeLessThan(1000);
    expect(keyMatches(cert, a.key)).toBe(true);
    expect(keyMatches(cert, b.key)).toBe(false);
    expect(caProblem(a, now)).toBeUndefined();
  });

  it('issues a serving certificate signed by the CA, for the Service names, never outliving the CA', async () => {
    const now = Date.now();
    const ca = await createCa({ name: 'x', validityMs: 10 * DAY, now });
    const other = await createCa({ name: 'x', validityMs: 10 * DAY, now });
    const serving = await issueServingCertificate(ca, { dnsNames: NAMES, validityMs: 90 * DAY, now });
    const cert = new X509Certificate(serving.cert);
    const caCert = new X509Certificate(ca.cert);
    expect(cert.ca).toBe(false);
    expect(signedBy(cert, caCert)).toBe(true);
    expect(signedBy(cert, new X509Certificate(other.cert))).toBe(false);
    expect(dnsNamesOf(cert)).toEqual(NAMES);
    expect(cert.subject).toBe(`CN=${NAMES[0]}`);
    expect(cert.checkHost(NAMES[0]!)).toBe(NAMES[0]);
    expect(cert.keyUsage ?? []).toContain('1.3.6.1.5.5.7.3.1'); // serverAuth
    expect(notAfter(cert)).toBe(notAfter(caCert)); // capped at the CA's 10 days
    expect(keyMatches(cert, serving.key)).toBe(true);
  });

  it('says why a CA cannot be used', async () => {
    const now = Date.now();
    const ca = await createCa({ name: 'x', validityMs: DAY, now });
    const other = await createCa({ name: 'x', validityMs: DAY, now });
    const leaf = await issueServingCertificate(ca, { dnsNames: ['a.b.svc'], validityMs: DAY, now });
    expect(caProblem(undefined, now)).toBe('missing');
    expect(caProblem({ cert: 'nope', key: ca.key }, now)).toBe('the certificate does not parse');
    expect(caProblem(leaf, now)).toBe('the certificate is not a CA');
    expect(caProblem({ cert: ca.cert, key: other.key }, now)).toBe(
      'the key does not belong to the certificate',
    );
    expect(caProblem(ca, now + 2 * DAY)).toMatch(/^expired at /);
  });

  it('splits PEM bundles', async () => {
    const [a, b] = await Promise.all([
      createCa({ name: 'a', validityMs: DAY }),
      createCa({ name: 'b', validityMs: DAY }),
    ]);
    const bundle = `${a.cert.trim()}\n\n${b.cert}`;
    expect(splitPemBundle(bundle)).toEqual([`${a.cert.trim()}\n`, `${b.cert.trim()}\n`]);
    expect(splitPemBundle('')).toEqual([]);
  });
});
