// The Secret bootstrap end to end: real HTTPS servers, real client-node, the API server stand-in
// (test/apiserver). Clients verify the webhook the way kube-apiserver does: trusting only the
// caBundle written into the MutatingWebhookConfiguration, and checking the Service's DNS name.

import { X509Certificate } from 'node:crypto';
import { Agent, request } from 'node:https';
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls';
import { KubeConfig } from '@kubernetes/client-node';
import { memoryLogger } from '@slipstream/shared/adapters/log';
import { loadDefaultPolicy } from '@slipstream/shared/adapters/policy-files';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FakeApiServer, type Json, type RequestRecord } from '../../test/apiserver/fake-apiserver.ts';
import { loadFixtures } from '../../test/lib/admission-fixtures.ts';
import { send } from '../../test/lib/webhook-client.ts';
import type { AdmissionReviewResponse } from './admission.ts';
import { TlsBootstrap } from './bootstrap.ts';
import { ANNOTATIONS, type TlsDurations } from './bootstrap-plan.ts';
import { createCa, issueServingCertificate } from './certs.ts';
import { startWebhookServer, type WebhookServer } from './server.ts';

const policy = loadDefaultPolicy();
const fixture = loadFixtures(policy.id).find((f) => f.name === 'postgres-create')!;
const NS = 'slipstream-system';
const SECRET = 'slipstream-webhook-tls';
const CONFIG = 'slipstream';
const SERVICE_DNS = `slipstream-webhook.${NS}.svc`;

const eventually = <T>(fn: () => T | Promise<T>, timeout = 20_000) =>
  vi.waitFor(fn, { timeout, interval: 25 });

/** The MutatingWebhookConfiguration as deploy/base ships it: no caBundle. */
function webhookConfiguration(hooks = 1): Json {
  return {
    metadata: { name: CONFIG, labels: { 'app.kubernetes.io/name': 'slipstream' } },
    webhooks: Array.from({ length: hooks }, (_, i) => ({
      name: i === 0 ? 'service-hints.slipstream.dev' : `extra-${i}.slipstream.dev`,
      admissionReviewVersions: ['v1'],
      clientConfig: { service: { name: 'slipstream-webhook', namespace: NS, path: '/mutate', port: 443 } },
      rules: [
        { apiGroups: [''], apiVersions: ['v1'], resources: ['services'], operations: ['CREATE', 'UPDATE'] },
      ],
      failurePolicy: 'Ignore',
      sideEffects: 'None',
      timeoutSeconds: 3,
    })),
  };
}

interface Replica {
  server: WebhookServer;
  bootstrap: TlsBootstrap;
  log: ReturnType<typeof memoryLogger>;
  close(): Promise<void>;
}

const open: Replica[] = [];
const apis: FakeApiServer[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((r) => r.close()));
  await Promise.all(apis.splice(0).map((a) => a.close()));
});

async function cluster(hooks = 1): Promise<FakeApiServer> {
  const api = await FakeApiServer.start({ namespaces: ['default', 'kube-system', NS] });
  apis.push(api);
  await api.createMutatingWebhookConfiguration(webhookConfiguration(hooks));
  return api;
}

async function replica(
  api: FakeApiServer,
  options: { durations?: Partial<TlsDurations>; checkIntervalMs?: number; start?: boolean } = {},
): Promise<Replica> {
  const log = memoryLogger();
  const server = await startWebhookServer({
    host: '127.0.0.1',
    port: 0,
    policy: () => policy,
    log,
    deferCertificate: true,
  });
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromString(api.kubeconfig());
  const bootstrap = new TlsBootstrap({
    kubeConfig,
    secret: { namespace: NS, name: SECRET },
    webhookConfig: CONFIG,
    log,
    onCertificate: (material) => server.setCertificate(material),
    checkIntervalMs: options.checkIntervalMs ?? 100,
    backoff: { initialMs: 50, maxMs: 400 },
    requestTimeoutMs: 5_000,
    ...(options.durations ? { durations: options.durations } : {}),
  });
  if (options.start !== false) bootstrap.start();
  const r: Replica = {
    server,
    bootstrap,
    log,
    close: async () => {
      await bootstrap.stop();
      await server.close(500);
    },
  };
  open.push(r);
  return r;
}

/** The caBundle the API server would trust (all webhooks carry the same one), '' when none is written. */
function caBundle(api: FakeApiServer): string {
  const bundles = api.caBundles(CONFIG) ?? [];
  expect(new Set(bundles).size).toBe(1);
  return bundles[0] ?? '';
}

function caSubjects(bundle: string): string[] {
  return (bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (pem) => new X509Certificate(pem).subject,
  );
}

interface Reviewed {
  status: number;
  uid: string | undefined;
  /** Of the certificate this connection was served. */
  fingerprint: string;
  issuer: string;
  /** Our side of the connection: equal ports mean the same connection. */
  localPort: number;
}

/** How the API server checks the webhook: trusting only `ca` (a caBundle), expecting the Service's name. */
function verifying(ca: string) {
  return {
    ca,
    servername: SERVICE_DNS,
    checkServerIdentity: (_host: string, cert: PeerCertificate) => checkServerIdentity(SERVICE_DNS, cert),
  };
}

/** A keep-alive client with one connection. (The TLS options go on the agent: given per request, Node does not reuse the socket.) */
function keepAliveAgent(ca: string): Agent {
  return new Agent({ keepAlive: true, maxSockets: 1, ...verifying(ca) });
}

/**
 * POST /mutate as the API server does (see `verifying`), over a new connection, or over `agent`'s
 * (which carries its own caBundle). Rejects on any TLS failure.
 */
function review(url: string, ca: string, agent?: Agent): Promise<Reviewed> {
  const body = JSON.stringify(fixture.review);
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/mutate?timeout=10s`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        ...(agent ? { agent } : { agent: false, ...verifying(ca) }),
        timeout: 10_000,
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        const peer = socket.getPeerCertificate();
        const localPort = socket.localPort ?? 0;
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => {
          let uid: string | undefined;
          try {
            uid = (JSON.parse(text) as AdmissionReviewResponse).response.uid;
          } catch {
            uid = undefined;
          }
          resolve({
            status: res.statusCode ?? 0,
            uid,
            fingerprint: peer.fingerprint256,
            issuer: `CN=${String(peer.issuer?.CN)}`,
            localPort,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(body);
  });
}

async function readyz(server: WebhookServer): Promise<number> {
  return (await send(server.url, { method: 'GET', path: '/readyz' })).status;
}

/** Reviews against every replica over new connections, each trusting the caBundle as it is at that moment, until stopped. */
function keepReviewing(api: FakeApiServer, replicas: Replica[]) {
  const failures: string[] = [];
  let ok = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const r of replicas) {
        try {
          const answer = await review(r.server.url, caBundle(api));
          if (answer.status === 200 && answer.uid === fixture.review.request.uid) ok++;
          else failures.push(`HTTP ${answer.status}`);
        } catch (error) {
          failures.push((error as Error).message);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  return {
    failures,
    get ok() {
      return ok;
    },
    async stop() {
      running = false;
      await loop;
    },
  };
}

/** Holds each matching request until `count` of them have arrived, so that they race for real. */
function barrier(api: FakeApiServer, match: (r: RequestRecord) => boolean, count = 2) {
  const waiting: (() => void)[] = [];
  api.beforeHandle = async (record) => {
    if (!match(record)) return;
    if (waiting.length + 1 >= count) {
      for (const release of waiting.splice(0)) release();
      api.beforeHandle = undefined;
      return;
    }
    await new Promise<void>((resolve) => {
      waiting.push(resolve);
      setTimeout(resolve, 10_000); // never deadlock a broken test
    });
  };
}

describe('TLS bootstrap through a Secret', () => {
  it('from nothing: creates the Secret, writes the caBundle, serves a certificate that verifies against it', async () => {
    const api = await cluster(2);
    const r = await replica(api);
    await r.bootstrap.whenServing();
    expect(await readyz(r.server)).toBe(200);
    await eventually(() => expect(caBundle(api)).not.toBe(''));

    const secret = api.getSecret(NS, SECRET)!;
    expect(secret.type).toBe('kubernetes.io/tls');
    expect((secret.metadata as Json).labels).toMatchObject({
      'app.kubernetes.io/managed-by': 'slipstream-webhook',
    });
    const data = api.secretData(NS, SECRET)!;
    expect(Object.keys(data).sort()).toEqual(['ca.crt', 'ca.key', 'tls.crt', 'tls.key']);
    const bundle = caBundle(api);
    expect(bundle).toBe(`${data['ca.crt']!.trim()}\n`);
    expect(api.caBundles(CONFIG)).toHaveLength(2); // every webhook of the configuration
    const annotations = api.getMutatingWebhookConfiguration(CONFIG)!.metadata as { annotations: Json };
    expect(annotations.annotations[ANNOTATIONS.bundleSource]).toBe(`${(secret.metadata as Json).uid}/1`);

    const answer = await review(r.server.url, bundle);
    expect(answer.status).toBe(200);
    expect(answer.uid).toBe(fixture.review.request.uid);
    expect(answer.fingerprint).toBe(new X509Certificate(data['tls.crt']!).fingerprint256);

    // The check is real: another CA, or another name, is refused.
    const other = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log: memoryLogger(),
    });
    try {
      await expect(review(r.server.url, other.certificate)).rejects.toThrow();
    } finally {
      await other.close(100);
    }
    const wrongName = new Promise((resolve, reject) => {
      const req = request(`${r.server.url}/healthz`, {
        ca: bundle,
        servername: 'elsewhere.slipstream-system.svc',
        checkServerIdentity: (_h, cert) => checkServerIdentity('elsewhere.slipstream-system.svc', cert),
        agent: false,
      });
      req.on('response', resolve).on('error', reject).end();
    });
    await expect(wrongName).rejects.toThrow(/does not match certificate's altnames/);

    // Writes: one create, one caBundle patch (JSON Patch with a resourceVersion test), no list or watch.
    // (A request's status is recorded when its response has gone out: wait for that.)
    await eventually(() => {
      expect(api.requests.filter((q) => q.verb === 'create').map((q) => [q.resource, q.status])).toEqual([
        ['secrets', 201],
      ]);
      expect(
        api.requests.filter((q) => q.verb === 'patch').map((q) => [q.resource, q.contentType, q.status]),
      ).toEqual([['mutatingwebhookconfigurations', 'application/json-patch+json', 200]]);
    });
    expect(api.requests.some((q) => q.verb === 'list' || q.verb === 'watch' || q.verb === 'update')).toBe(
      false,
    );
  });

  it('two replicas at once: the Secret is created once, both serve certificates that verify against the caBundle', async () => {
    const api = await cluster();
    barrier(api, (q) => q.verb === 'create' && q.resource === 'secrets');
    const [a, b] = await Promise.all([replica(api), replica(api)]);
    await Promise.all([a.bootstrap.whenServing(), b.bootstrap.whenServing()]);
    await eventually(() => expect(caBundle(api)).not.toBe(''));

    await eventually(() => {
      const creates = api.requests.filter((q) => q.verb === 'create' && q.resource === 'secrets');
      expect(creates.map((q) => q.status).sort()).toEqual([201, 409]); // both tried; one won
    });
    const tls = api.secretData(NS, SECRET)!['tls.crt']!;
    expect(a.bootstrap.serving?.cert).toBe(tls);
    expect(b.bootstrap.serving?.cert).toBe(tls);
    const bundle = caBundle(api);
    const [ra, rb] = await Promise.all([review(a.server.url, bundle), review(b.server.url, bundle)]);
    expect(ra.status).toBe(200);
    expect(rb.status).toBe(200);
    expect(ra.fingerprint).toBe(rb.fingerprint);
    expect(caSubjects(bundle)).toHaveLength(1);
    // The loser logged nothing of a write; the winner logged the creation.
    const created = [...a.log.lines, ...b.log.lines].filter((l) => l.msg === 'TLS Secret created');
    expect(created).toHaveLength(1);
  });

  it('two replicas renewing at once: one PUT wins, the other gets 409 Conflict, re-reads and takes its result', async () => {
    const api = await cluster();
    const first = await replica(api, { start: false });
    await first.bootstrap.reconcile();
    // The stored serving certificate no longer fits (another CA signed it): both replicas will re-issue.
    const stranger = await createCa({ name: 'stranger', validityMs: 86_400_000 });
    const foreign = await issueServingCertificate(stranger, {
      dnsNames: [SERVICE_DNS],
      validityMs: 86_400_000,
    });
    const current = api.getSecret(NS, SECRET)!;
    await api.updateSecret({
      ...current,
      data: {
        ...(current.data as Json),
        'tls.crt': Buffer.from(foreign.cert).toString('base64'),
        'tls.key': Buffer.from(foreign.key).toString('base64'),
      },
    });
    const ca = api.secretData(NS, SECRET)!['ca.crt']!;

    barrier(api, (q) => q.verb === 'update' && q.resource === 'secrets');
    const [a, b] = await Promise.all([replica(api), replica(api)]);
    await Promise.all([a.bootstrap.whenServing(), b.bootstrap.whenServing()]);
    await eventually(() => {
      const updates = api.requests.filter((q) => q.verb === 'update' && q.resource === 'secrets');
      expect(updates.map((q) => q.status).sort()).toEqual([200, 409]);
    });
    const data = api.secretData(NS, SECRET)!;
    expect(data['ca.crt']).toBe(ca); // same CA, new serving certificate
    expect(data['tls.crt']).not.toBe(foreign.cert);
    expect(a.bootstrap.serving?.cert).toBe(data['tls.crt']);
    expect(b.bootstrap.serving?.cert).toBe(data['tls.crt']);
    const bundle = caBundle(api);
    expect((await review(a.server.url, bundle)).status).toBe(200);
    expect((await review(b.server.url, bundle)).status).toBe(200);
  });

  it('renews the serving certificate: keep-alive connections keep working, new ones get the new certificate, no review fails', async () => {
    const api = await cluster();
    // 20 s certificates renewed with 17 s left: a new one about every 3 s.
    const durations = { certValidityMs: 20_000, certRenewBeforeMs: 17_000 };
    const replicas = await Promise.all([replica(api, { durations }), replica(api, { durations })]);
    await Promise.all(replicas.map((r) => r.bootstrap.whenServing()));
    await eventually(() => expect(caBundle(api)).not.toBe(''));
    const bundle = caBundle(api);

    const agent = keepAliveAgent(bundle);
    const traffic = keepReviewing(api, replicas);
    try {
      const first = await review(replicas[0]!.server.url, bundle, agent);
      expect(first.status).toBe(200);

      // Every replica picks up a new certificate from the Secret, without a restart.
      await eventually(async () => {
        for (const r of replicas) {
          const fresh = await review(r.server.url, caBundle(api));
          expect(fresh.fingerprint).not.toBe(first.fingerprint);
        }
      });

      // The connection opened before still answers, on its original certificate.
      const again = await review(replicas[0]!.server.url, bundle, agent);
      expect(again.status).toBe(200);
      expect(again.localPort).toBe(first.localPort);
      expect(again.fingerprint).toBe(first.fingerprint);
    } finally {
      await traffic.stop();
      agent.destroy();
    }
    expect(traffic.failures).toEqual([]);
    expect(traffic.ok).toBeGreaterThan(0);
    // Same CA throughout: the caBundle did not change.
    expect(caBundle(api)).toBe(bundle);
    const renewals = replicas
      .flatMap((r) => r.log.lines)
      .filter((l) => l.msg === 'serving a new certificate from the TLS Secret');
    expect(renewals.length).toBeGreaterThanOrEqual(2);
  });

  it('rotates the CA: new CA in the caBundle first, then it signs, then the old one goes; clients trusting the caBundle never fail', async () => {
    const api = await cluster();
    // A CA made to start its rotation 3 s from now: 30 min + 3 s long, rotated with 30 min left.
    const renewBefore = 1_800_000;
    const seed = await replica(api, {
      durations: { caValidityMs: renewBefore + 3_000, caRenewBeforeMs: renewBefore, caOverlapMs: 3_000 },
      start: false,
    });
    await seed.bootstrap.reconcile();
    await seed.close();
    const [firstCa] = caSubjects(caBundle(api));

    const bundles: string[][] = [];
    const observe = () => {
      const subjects = caSubjects(api.caBundles(CONFIG)?.[0] ?? '');
      if (JSON.stringify(bundles.at(-1)) !== JSON.stringify(subjects)) bundles.push(subjects);
    };
    observe();
    const watcher = setInterval(observe, 10);
    // The replicas' own CAs last an hour: one rotation, then quiet. Each step waits 3 s.
    const durations = { caValidityMs: 3_600_000, caRenewBeforeMs: renewBefore, caOverlapMs: 3_000 };
    const replicas = await Promise.all([replica(api, { durations }), replica(api, { durations })]);
    await Promise.all(replicas.map((r) => r.bootstrap.whenServing()));
    const issuers = new Set<string>();
    const traffic = keepReviewing(api, replicas);
    try {
      // Until both replicas serve a certificate from the second CA and the first CA has left the caBundle.
      await eventually(async () => {
        for (const r of replicas) {
          const answer = await review(r.server.url, caBundle(api));
          issuers.add(answer.issuer);
          expect(answer.issuer).not.toBe(firstCa);
        }
        expect(caSubjects(caBundle(api))).not.toContain(firstCa);
      }, 60_000);
    } finally {
      clearInterval(watcher);
      observe(); // the state the wait ended on
      await traffic.stop();
    }
    expect(traffic.failures).toEqual([]);
    expect(traffic.ok).toBeGreaterThan(0);

    expect(issuers.size).toBe(2); // the first CA, then the second one
    const secondCa = [...issuers].find((issuer) => issuer !== firstCa);
    expect(bundles).toEqual([
      [firstCa], // before
      [firstCa, secondCa], // staged: trusted before it signs
      [secondCa, firstCa], // signing; the old CA still trusted while replicas switch
      [secondCa], // the old CA gone
    ]);
    const secret = api.secretData(NS, SECRET)!;
    expect(new X509Certificate(secret['ca.crt']!).subject).toBe(secondCa);
    expect(secret['ca-previous.crt']).toBeUndefined();
    const steps = replicas
      .flatMap((r) => r.log.lines)
      .filter((l) => l.msg === 'TLS Secret updated')
      .flatMap((l) => l.fields?.changes as string[]);
    // Each step written once, by whichever replica got there first.
    expect(steps).toHaveLength(4);
    expect(steps).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^the CA expires at .*: staged the next CA in the caBundle$/),
        'the next CA has been in the caBundle for the overlap: it signs from now on',
        'issued a serving certificate (previous one: not signed by the current CA)',
        'dropped ca-previous: its overlap is over',
      ]),
    );
  });

  it('API server down at start: listens with /readyz 503 and retries; bootstraps when it comes back; keeps serving when it goes again', async () => {
    const api = await cluster();
    await api.goDown();
    const r = await replica(api);
    expect(await readyz(r.server)).toBe(503);
    expect((await send(r.server.url, { method: 'GET', path: '/healthz' })).status).toBe(200);
    await eventually(() =>
      expect(
        r.log.lines.filter((l) => l.msg.startsWith('cannot bootstrap TLS yet')).length,
      ).toBeGreaterThanOrEqual(2),
    );
    expect(r.bootstrap.serving).toBeUndefined();
    expect(await readyz(r.server)).toBe(503);
    const warning = r.log.lines.find((l) => l.msg.startsWith('cannot bootstrap TLS yet'))!;
    expect(String(warning.fields?.error)).toMatch(/ECONNREFUSED|fetch failed/);

    await api.comeBack();
    await r.bootstrap.whenServing();
    expect(await readyz(r.server)).toBe(200);
    await eventually(() => expect(caBundle(api)).not.toBe(''));
    const bundle = caBundle(api);
    const before = await review(r.server.url, bundle);
    expect(before.status).toBe(200);

    // Unreachable later: the current certificate stays in service, and it is logged.
    await api.goDown();
    await eventually(() =>
      expect(r.log.lines.some((l) => l.msg.includes('keeping the current certificate'))).toBe(true),
    );
    const during = await review(r.server.url, bundle);
    expect(during.status).toBe(200);
    expect(during.fingerprint).toBe(before.fingerprint);
    expect(await readyz(r.server)).toBe(200);
    await api.comeBack();
    const passes = api.requests.length;
    await eventually(() => expect(api.requests.length).toBeGreaterThan(passes + 2));
  });

  it('serves the Secret it finds, and writes no caBundle over one written from a newer Secret', async () => {
    const api = await cluster();
    const a = await replica(api);
    await a.bootstrap.whenServing();
    await eventually(() => expect(caBundle(api)).not.toBe(''));
    const config = api.getMutatingWebhookConfiguration(CONFIG)!;
    const metadata = config.metadata as { annotations: Record<string, string> };
    const [uid] = metadata.annotations[ANNOTATIONS.bundleSource]!.split('/');
    // Pretend a replica with a newer Secret wrote the caBundle.
    const hooks = config.webhooks as { clientConfig: Json }[];
    hooks[0]!.clientConfig.caBundle = Buffer.from('newer').toString('base64');
    metadata.annotations[ANNOTATIONS.bundleSource] = `${uid}/99`;
    await api.updateMutatingWebhookConfiguration(config);
    const result = await a.bootstrap.reconcile();
    expect(result.bundleWritten).toBe(false);
    expect(api.caBundles(CONFIG)).toEqual(['newer']);
  });

  it('the Secret is gone: it is created again, with a new CA in the caBundle', async () => {
    const api = await cluster();
    const r = await replica(api, { start: false });
    await r.bootstrap.reconcile();
    const bundle = caBundle(api);
    await api.deleteSecret(NS, SECRET);
    const result = await r.bootstrap.reconcile();
    expect(result.changes[0]).toBe('created the CA');
    expect(result.bundleWritten).toBe(true);
    expect(caBundle(api)).not.toBe(bundle);
    expect((await review(r.server.url, caBundle(api))).status).toBe(200);
  });

  it('the webhook configuration is missing: serves anyway and says so once', async () => {
    const api = await cluster();
    await api.deleteMutatingWebhookConfiguration(CONFIG);
    const r = await replica(api, { start: false });
    const first = await r.bootstrap.reconcile();
    await r.bootstrap.reconcile();
    expect(first.bundleWritten).toBe(false);
    expect(r.server.ready).toBe(true);
    expect(
      r.log.lines.filter((l) => l.msg.includes('MutatingWebhookConfiguration does not exist')),
    ).toHaveLength(1);
  });
});

describe('a server waiting for its certificate', () => {
  it('answers /healthz but /readyz 503 until setCertificate, which refuses a pair that does not load', async () => {
    const log = memoryLogger();
    const server = await startWebhookServer({
      host: '127.0.0.1',
      port: 0,
      policy: () => policy,
      log,
      deferCertificate: true,
    });
    try {
      expect(server.ready).toBe(false);
      expect(await readyz(server)).toBe(503);
      expect((await send(server.url, { method: 'GET', path: '/healthz' })).status).toBe(200);
      const other = await startWebhookServer({ host: '127.0.0.1', port: 0, policy: () => policy, log });
      const pair = { cert: other.certificate, key: 'not a key' };
      await other.close(100);
      expect(() => server.setCertificate(pair)).toThrow();
      expect(await readyz(server)).toBe(503);
      expect(log.lines.some((l) => l.msg.startsWith('waiting for the serving certificate'))).toBe(true);
    } finally {
      await server.close(500);
    }
  });
});
