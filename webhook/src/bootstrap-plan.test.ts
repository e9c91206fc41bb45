// The Secret bootstrap's decisions, with a clock of our own: no API server, no waiting.

import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  type BundleView,
  caBundleOf,
  checkDurations,
  DEFAULT_DURATIONS,
  decodeSecret,
  encodeSecret,
  fingerprints,
  type PlanContext,
  plan,
  type StoredTls,
  type TlsState,
} from './bootstrap-plan.ts';
import { createCa, issueServingCertificate, notAfter, signedBy } from './certs.ts';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const NAMES = [
  'slipstream-webhook.slipstream-system.svc',
  'slipstream-webhook.slipstream-system.svc.cluster.local',
];
const T0 = Date.now();
const UID = 'secret-uid';
const NO_CONFIG: BundleView = { exists: false, trusted: new Set() };

function ctx(now: number, bundle: BundleView = NO_CONFIG, extra: Partial<PlanContext> = {}): PlanContext {
  return {
    now,
    durations: DEFAULT_DURATIONS,
    dnsNames: NAMES,
    caName: 'slipstream-webhook.slipstream-system',
    bundle,
    secretUid: UID,
    ...extra,
  };
}

/** What a Secret written with this state reads back as. */
function roundTrip(state: TlsState): StoredTls {
  const { data, annotations } = encodeSecret(state);
  return decodeSecret(data, annotations);
}

/** The caBundle as written from this state, `since` when its content last changed. */
function bundleFor(state: TlsState, since: number, generation = state.generation): BundleView {
  return {
    exists: true,
    trusted: fingerprints(caBundleOf(state)),
    since,
    source: { uid: UID, generation },
  };
}

const x509 = (pem: string) => new X509Certificate(pem);
const fp = (pem: string) => x509(pem).fingerprint256;

describe('plan: the TLS Secret from nothing', () => {
  it('creates a CA and a serving certificate it signs, for the Service names', async () => {
    const { state, changes } = await plan(undefined, ctx(T0));
    expect(changes).toEqual(['created the CA', 'issued a serving certificate (previous one: none yet)']);
    expect(state.generation).toBe(1);
    expect(state.next).toBeUndefined();
    expect(state.previous).toBeUndefined();
    const serving = x509(state.serving.cert);
    expect(signedBy(serving, x509(state.ca.cert))).toBe(true);
    expect(serving.checkHost(NAMES[0]!)).toBe(NAMES[0]);
    expect(serving.checkHost(NAMES[1]!)).toBe(NAMES[1]);
    expect(notAfter(serving)).toBeGreaterThan(T0 + 89 * DAY);
    expect(notAfter(x509(state.ca.cert))).toBeGreaterThan(T0 + 3649 * DAY);
    expect(caBundleOf(state)).toBe(`${state.ca.cert.trim()}\n`);
  });

  it('leaves a good Secret alone (what it wrote reads back the same)', async () => {
    const { state } = await plan(undefined, ctx(T0));
    const stored = roundTrip(state);
    expect(stored.generation).toBe(1);
    const again = await plan(stored, ctx(T0 + DAY, bundleFor(state, T0)));
    expect(again.changes).toEqual([]);
    expect(again.state).toEqual(state);
  });
});

describe('plan: serving certificate renewal', () => {
  it('re-issues once less than 30 days are left, with the same CA', async () => {
    const { state } = await plan(undefined, ctx(T0));
    const stored = roundTrip(state);
    expect((await plan(stored, ctx(T0 + 59 * DAY))).changes).toEqual([]);
    const renewed = await plan(stored, ctx(T0 + 61 * DAY));
    expect(renewed.changes).toEqual([
      expect.stringMatching(/^issued a serving certificate \(previous one: expires at /),
    ]);
    expect(renewed.state.ca).toEqual(state.ca);
    expect(renewed.state.serving.cert).not.toBe(state.serving.cert);
    expect(renewed.state.generation).toBe(2);
    expect(caBundleOf(renewed.state)).toBe(caBundleOf(state)); // the caBundle does not change
  });

  it('re-issues a certificate that is broken, for other names, or from another CA', async () => {
    const { state } = await plan(undefined, ctx(T0));
    const other = await createCa({ name: 'other', validityMs: DAY, now: T0 });
    const foreign = await issueServingCertificate(other, { dnsNames: NAMES, validityMs: DAY, now: T0 });
    const cases: [Partial<StoredTls>, RegExp][] = [
      [{ cert: 'garbage' }, /does not parse/],
      [{ key: foreign.key }, /key does not belong/],
      [{ cert: foreign.cert, key: foreign.key }, /not signed by the current CA/],
    ];
    for (const [change, reason] of cases) {
      const result = await plan({ ...roundTrip(state), ...change }, ctx(T0));
      expect(result.changes).toEqual([expect.stringMatching(reason)]);
      expect(signedBy(x509(result.state.serving.cert), x509(state.ca.cert))).toBe(true);
    }
    const renamed = await plan(
      roundTrip(state),
      ctx(T0, NO_CONFIG, { dnsNames: ['other.slipstream-system.svc'] }),
    );
    expect(renamed.changes).toEqual([expect.stringMatching(/does not name other\.slipstream-system\.svc/)]);
  });

  it('does not re-issue on every pass a certificate already cut off at the CA expiry', async () => {
    const durations = { ...DEFAULT_DURATIONS, caValidityMs: 20 * DAY, caRenewBeforeMs: 10 * DAY };
    const { state } = await plan(undefined, ctx(T0, NO_CONFIG, { durations }));
    expect(notAfter(x509(state.serving.cert))).toBe(notAfter(x509(state.ca.cert)));
    // 15 days left: under the 30-day renewal mark, but a new one could not last longer.
    const later = await plan(roundTrip(state), ctx(T0 + 5 * DAY, NO_CONFIG, { durations }));
    expect(later.changes).toEqual([]);
  });
});

describe('plan: CA rotation with overlap', () => {
  it('stages the next CA, switches after the overlap in the caBundle, then drops the old one after another', async () => {
    const created = (await plan(undefined, ctx(T0))).state;
    const oldCa = created.ca.cert;

    // One year and a day before the CA expires: nothing yet. One day later: the next CA is staged.
    const tStage = T0 + 3650 * DAY - 364 * DAY;
    expect((await plan(roundTrip(created), ctx(tStage - 2 * DAY, bundleFor(created, T0)))).changes).toEqual([
      expect.stringMatching(/^issued a serving certificate/), // the 90-day one ran out long ago
    ]);
    const staged = await plan(roundTrip(created), ctx(tStage, bundleFor(created, T0)));
    expect(staged.changes).toContainEqual(expect.stringMatching(/^the CA expires at .*: staged the next CA/));
    const next = staged.state.next!;
    expect(next).toBeDefined();
    expect(staged.state.ca.cert).toBe(oldCa); // still signing
    expect(signedBy(x509(staged.state.serving.cert), x509(oldCa))).toBe(true);
    expect([...fingerprints(caBundleOf(staged.state))]).toEqual([fp(oldCa), fp(next.cert)]);

    // The caBundle got [old, next] at tStage. It must hold it for the overlap (24 h) first.
    const stagedStored = roundTrip(staged.state);
    const published = bundleFor(staged.state, tStage);
    expect((await plan(stagedStored, ctx(tStage + 23 * HOUR, published))).changes).toEqual([]);
    // Not when the caBundle lacks the next CA, or was written from another Secret content.
    const notTrusted = await plan(stagedStored, ctx(tStage + 2 * DAY, bundleFor(created, tStage)));
    expect(notTrusted.changes).toEqual([]);
    const older = await plan(stagedStored, ctx(tStage + 2 * DAY, bundleFor(staged.state, tStage, 1)));
    expect(older.changes).toEqual([]);
    const recreated = await plan(
      stagedStored,
      ctx(tStage + 2 * DAY, published, { secretUid: 'another-uid' }),
    );
    expect(recreated.changes).toEqual([]);

    const tSwitch = tStage + 25 * HOUR;
    const switched = await plan(stagedStored, ctx(tSwitch, published));
    expect(switched.changes).toEqual([
      'the next CA has been in the caBundle for the overlap: it signs from now on',
      expect.stringMatching(/^issued a serving certificate \(previous one: not signed by the current CA\)/),
    ]);
    expect(switched.state.ca).toEqual(next);
    expect(switched.state.next).toBeUndefined();
    expect(switched.state.previous).toEqual({ cert: oldCa, since: tSwitch });
    expect(signedBy(x509(switched.state.serving.cert), x509(next.cert))).toBe(true);
    expect([...fingerprints(caBundleOf(switched.state))]).toEqual([fp(next.cert), fp(oldCa)]);

    // The old CA stays trusted for the overlap (replicas still switching), then goes.
    const switchedStored = roundTrip(switched.state);
    expect(switchedStored.previousSince).toBe(tSwitch);
    const bundle = bundleFor(switched.state, tSwitch);
    expect((await plan(switchedStored, ctx(tSwitch + 23 * HOUR, bundle))).changes).toEqual([]);
    const dropped = await plan(switchedStored, ctx(tSwitch + 25 * HOUR, bundle));
    expect(dropped.changes).toEqual(['dropped ca-previous: its overlap is over']);
    expect(dropped.state.previous).toBeUndefined();
    expect(dropped.state.serving).toEqual(switched.state.serving);
    expect([...fingerprints(caBundleOf(dropped.state))]).toEqual([fp(next.cert)]);
  });

  it('switches at once when no webhook configuration exists (nothing can call the webhook)', async () => {
    const created = (await plan(undefined, ctx(T0))).state;
    const tStage = T0 + 3650 * DAY - 300 * DAY;
    const staged = await plan(roundTrip(created), ctx(tStage));
    const switched = await plan(roundTrip(staged.state), ctx(tStage + 1000));
    expect(switched.state.ca).toEqual(staged.state.next);
  });

  it('replaces an unusable CA; the old one, if it still verifies, stays trusted for an overlap', async () => {
    const { state } = await plan(undefined, ctx(T0));
    const other = await createCa({ name: 'x', validityMs: DAY, now: T0 });
    const broken = await plan({ ...roundTrip(state), caKey: other.key }, ctx(T0 + HOUR));
    expect(broken.changes[0]).toBe(
      'the CA is unusable (the key does not belong to the certificate): created a new CA',
    );
    expect(broken.state.ca.cert).not.toBe(state.ca.cert);
    expect(broken.state.previous).toEqual({ cert: state.ca.cert, since: T0 + HOUR });
    expect(signedBy(x509(broken.state.serving.cert), x509(broken.state.ca.cert))).toBe(true);

    // A staged next CA takes over instead of a brand-new one (it is in the caBundle already).
    const next = await createCa({ name: 'x', validityMs: 3650 * DAY, now: T0 });
    const withNext = await plan(
      { ...roundTrip(state), caKey: other.key, nextCaCert: next.cert, nextCaKey: next.key },
      ctx(T0 + HOUR),
    );
    expect(withNext.state.ca).toEqual(next);
  });

  it('throws out unusable next and previous CAs', async () => {
    const { state } = await plan(undefined, ctx(T0));
    const other = await createCa({ name: 'x', validityMs: DAY, now: T0 });
    const result = await plan(
      {
        ...roundTrip(state),
        nextCaCert: state.ca.cert,
        nextCaKey: other.key,
        previousCaCert: state.serving.cert,
      },
      ctx(T0),
    );
    expect(result.changes).toEqual([
      'dropped ca-previous: not a CA certificate',
      'dropped ca-next: the key does not belong to the certificate',
    ]);
    expect(result.state.next).toBeUndefined();
    expect(result.state.previous).toBeUndefined();
  });
});

describe('durations', () => {
  it('accepts the defaults and refuses combinations that cannot work', () => {
    expect(() => checkDurations(DEFAULT_DURATIONS, 60_000)).not.toThrow();
    expect(() => checkDurations({ ...DEFAULT_DURATIONS, certRenewBeforeMs: 90 * DAY }, 60_000)).toThrow(
      /cert renew-before must be shorter than its validity/,
    );
    expect(() => checkDurations({ ...DEFAULT_DURATIONS, caOverlapMs: 200 * DAY }, 60_000)).toThrow(
      /longer than two overlaps/,
    );
    expect(() => checkDurations(DEFAULT_DURATIONS, 20 * DAY)).toThrow(/two check intervals/);
    expect(() => checkDurations({ ...DEFAULT_DURATIONS, caValidityMs: -1 }, 60_000)).toThrow(
      /must be positive/,
    );
  });
});
