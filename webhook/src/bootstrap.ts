// TLS without extra installs: every replica keeps its CA and serving certificate in one Secret,
// writes the CA into the MutatingWebhookConfiguration's caBundle, and serves what the Secret holds.
// The decisions (what to issue, when to rotate) are in bootstrap-plan.ts, the caBundle's view and
// patch in ca-bundle.ts; this file does the API calls, the retries and the periodic re-check.
//
// One pass (`reconcile`):
//   1. GET the Secret (404: none yet) and the webhook configuration.
//   2. plan(): the Secret's next content, or "no change".
//   3. A change is written with optimistic concurrency: POST when there was no Secret (409
//      AlreadyExists: another replica was first, start over from its Secret), else PUT carrying the
//      resourceVersion that was read (409 Conflict: start over). Replicas therefore converge on the
//      Secret's content; none ever serves a certificate that is not in the Secret.
//   4. Serve the Secret's certificate (`onCertificate`, i.e. server.setSecureContext: open
//      connections keep theirs, new handshakes get the new one).
//   5. Make every webhook's clientConfig.caBundle the Secret's CAs: a JSON Patch whose first
//      operation tests metadata.resourceVersion (a concurrent writer makes it fail with 422, and we
//      start over), and which records the Secret generation it came from in an annotation, so a
//      replica holding an older Secret never writes an older caBundle over a newer one.
//
// The pass runs at start until it succeeds (backoff 0.5 s doubling to 30 s; until then nothing of
// ours is served and /readyz says 503), then every `checkIntervalMs` (1 minute, GETs only: the RBAC
// has no list/watch). When the API server is unreachable later, the current certificate stays in
// service and the failure is logged.

import { setTimeout as sleep } from 'node:timers/promises';
import {
  AdmissionregistrationV1Api,
  type ConfigurationOptions,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  type V1MutatingWebhookConfiguration,
  type V1Secret,
} from '@kubernetes/client-node';
import { Backoff } from '@slipstream/shared/adapters/backoff';
import { describeError, requestOptions, statusCode } from '@slipstream/shared/adapters/kube';
import type { Logger } from '@slipstream/shared/adapters/log';
import {
  ANNOTATIONS,
  caBundleOf,
  checkDurations,
  DEFAULT_CHECK_INTERVAL_MS,
  DEFAULT_DURATIONS,
  decodeSecret,
  encodeSecret,
  fingerprints,
  plan,
  type TlsDurations,
  type TlsState,
} from './bootstrap-plan.ts';
import { bundlePatch, bundleView, UNKNOWN_BUNDLE } from './ca-bundle.ts';
import { describeCertificate } from './tls.ts';
import type { TlsMaterial } from './tls-policy.ts';

export const DEFAULT_SERVICE_NAME = 'slipstream-webhook';

/** Labels on a Secret this webhook creates. */
export const SECRET_LABELS: Record<string, string> = {
  'app.kubernetes.io/name': 'slipstream',
  'app.kubernetes.io/component': 'webhook',
  'app.kubernetes.io/managed-by': 'slipstream-webhook',
};

/** Attempts per pass when another replica writes at the same time (each one re-reads). */
const MAX_ATTEMPTS = 8;

export interface TlsBootstrapOptions {
  kubeConfig: KubeConfig;
  secret: { namespace: string; name: string };
  /** Name of the MutatingWebhookConfiguration whose webhooks get the caBundle. */
  webhookConfig: string;
  /** The Service in front of the webhook (default slipstream-webhook), in the Secret's namespace. */
  serviceName?: string;
  log: Logger;
  /** Called with the Secret's serving certificate whenever it changes (the first call: bootstrapped). */
  onCertificate: (material: TlsMaterial) => void;
  durations?: Partial<TlsDurations>;
  checkIntervalMs?: number;
  /** Retry delays while a pass fails (doubling, with jitter). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** Per API request (default 10 s). */
  requestTimeoutMs?: number;
}

export interface ReconcileResult {
  /** Why the Secret was written in this pass (empty: it was not). */
  changes: string[];
  /** Whether this pass wrote the caBundle. */
  bundleWritten: boolean;
  generation: number;
}

export class TlsBootstrap {
  readonly dnsNames: readonly string[];
  readonly durations: TlsDurations;
  readonly checkIntervalMs: number;
  readonly #options: TlsBootstrapOptions;
  readonly #log: Logger;
  readonly #core: CoreV1Api;
  readonly #admission: AdmissionregistrationV1Api;
  readonly #stop = new AbortController();
  readonly #backoff: { initialMs: number; maxMs: number };
  readonly #requestTimeoutMs: number;
  #serving: TlsMaterial | undefined;
  #caBundle: string | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #loop: Promise<void> | undefined;
  #missingConfigLogged = false;
  readonly #servingStarted: Promise<void>;
  #resolveServing!: () => void;

  constructor(options: TlsBootstrapOptions) {
    this.#options = options;
    this.#log = options.log;
    const service = options.serviceName ?? DEFAULT_SERVICE_NAME;
    const ns = options.secret.namespace;
    this.dnsNames = [`${service}.${ns}.svc`, `${service}.${ns}.svc.cluster.local`];
    this.durations = { ...DEFAULT_DURATIONS, ...options.durations };
    this.checkIntervalMs = options.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
    checkDurations(this.durations, this.checkIntervalMs);
    this.#backoff = { initialMs: 500, maxMs: 30_000, ...options.backoff };
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#admission = options.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    this.#servingStarted = new Promise((resolve) => {
      this.#resolveServing = resolve;
    });
  }

  /** The certificate being served (from the Secret), once there is one. */
  get serving(): TlsMaterial | undefined {
    return this.#serving;
  }

  /** The caBundle (PEM) for the Secret content being served. */
  get caBundle(): string | undefined {
    return this.#caBundle;
  }

  /** Resolves once the Secret's certificate is served. */
  whenServing(): Promise<void> {
    return this.#servingStarted;
  }

  /** Runs passes until stop(): until the first success with backoff, then every checkIntervalMs. */
  start(): void {
    this.#loop ??= this.#run();
  }

  /** Stops the loop and aborts requests in flight; the certificate being served stays. */
  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
    await this.#queue.catch(() => {});
  }

  /** One pass (passes never overlap). Throws when the API server cannot be reached or refuses. */
  reconcile(): Promise<ReconcileResult> {
    const pass = this.#queue.catch(() => {}).then(() => this.#pass(this.#stop.signal));
    this.#queue = pass;
    return pass;
  }

  async #run(): Promise<void> {
    const signal = this.#stop.signal;
    const retry = new Backoff(this.#backoff);
    while (!signal.aborted) {
      let delay: number;
      try {
        await this.reconcile();
        retry.reset();
        delay = this.checkIntervalMs * (0.9 + Math.random() * 0.2);
      } catch (error) {
        if (signal.aborted) break;
        const backoff = retry.next();
        const fields = {
          secret: `${this.#options.secret.namespace}/${this.#options.secret.name}`,
          error: describeError(error),
          failures: retry.failures,
        };
        if (this.#serving) {
          delay = Math.min(backoff, this.checkIntervalMs);
          this.#log.warn('cannot check the TLS Secret and caBundle; keeping the current certificate', {
            ...fields,
            retryInMs: Math.round(delay),
          });
        } else {
          delay = backoff;
          this.#log.warn('cannot bootstrap TLS yet: no certificate of ours is served (/readyz 503)', {
            ...fields,
            retryInMs: Math.round(delay),
          });
        }
      }
      await sleep(delay, undefined, { signal }).catch(() => {});
    }
  }

  #request(signal: AbortSignal, contentType?: string): ConfigurationOptions {
    return requestOptions({
      signal,
      timeoutMs: this.#requestTimeoutMs,
      ...(contentType ? { contentType } : {}),
    });
  }

  async #readSecret(signal: AbortSignal): Promise<V1Secret | undefined> {
    const { namespace, name } = this.#options.secret;
    try {
      return await this.#core.readNamespacedSecret({ namespace, name }, this.#request(signal));
    } catch (error) {
      if (statusCode(error) === 404) return undefined;
      throw error;
    }
  }

  async #readConfig(signal: AbortSignal): Promise<V1MutatingWebhookConfiguration | undefined> {
    try {
      return await this.#admission.readMutatingWebhookConfiguration(
        { name: this.#options.webhookConfig },
        this.#request(signal),
      );
    } catch (error) {
      if (statusCode(error) === 404) return undefined;
      throw error;
    }
  }

  #secretBody(state: TlsState, existing: V1Secret | undefined): V1Secret {
    const { namespace, name } = this.#options.secret;
    const { data, annotations } = encodeSecret(state);
    const ours = new Set<string>([ANNOTATIONS.generation, ANNOTATIONS.previousSince]);
    const kept = Object.fromEntries(
      Object.entries(existing?.metadata?.annotations ?? {}).filter(([key]) => !ours.has(key)),
    );
    return {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: {
        ...existing?.metadata,
        name,
        namespace,
        labels: existing?.metadata?.labels ?? SECRET_LABELS,
        annotations: { ...kept, ...annotations },
        managedFields: undefined,
      },
      // The type is immutable: a Secret made by hand as Opaque stays Opaque.
      type: existing?.type ?? 'kubernetes.io/tls',
      data,
    };
  }

  async #pass(signal: AbortSignal): Promise<ReconcileResult> {
    const { namespace, name } = this.#options.secret;
    for (let attempt = 1; ; attempt++) {
      const secret = await this.#readSecret(signal);
      let config: V1MutatingWebhookConfiguration | undefined;
      let configError: unknown;
      try {
        config = await this.#readConfig(signal);
      } catch (error) {
        if (signal.aborted) throw error;
        configError = error; // serve the Secret anyway; report after
      }
      const stored = secret ? decodeSecret(secret.data, secret.metadata?.annotations) : undefined;
      const uid = secret?.metadata?.uid;
      const { state, changes } = await plan(stored, {
        now: Date.now(),
        durations: this.durations,
        dnsNames: this.dnsNames,
        caName: this.dnsNames[0]!.replace(/\.svc$/, ''),
        bundle: configError ? UNKNOWN_BUNDLE : bundleView(config),
        ...(uid ? { secretUid: uid } : {}),
      });

      let written = secret;
      if (changes.length > 0) {
        try {
          written = secret
            ? await this.#core.replaceNamespacedSecret(
                { namespace, name, body: this.#secretBody(state, secret) },
                this.#request(signal),
              )
            : await this.#core.createNamespacedSecret(
                { namespace, body: this.#secretBody(state, undefined) },
                this.#request(signal),
              );
        } catch (error) {
          // 409: another replica wrote first (AlreadyExists or Conflict); 404: the Secret went away.
          const code = statusCode(error);
          if ((code === 409 || (code === 404 && secret)) && attempt < MAX_ATTEMPTS) {
            this.#log.debug('the TLS Secret changed under us; reading it again', {
              secret: `${namespace}/${name}`,
              error: describeError(error),
            });
            continue;
          }
          throw error;
        }
        this.#log.info(secret ? 'TLS Secret updated' : 'TLS Secret created', {
          secret: `${namespace}/${name}`,
          generation: state.generation,
          changes,
        });
      }

      this.#serve(state);
      if (configError) throw configError;
      const bundleWritten = await this.#syncBundle(state, written?.metadata?.uid ?? '', config, signal);
      return { changes, bundleWritten, generation: state.generation };
    }
  }

  #serve(state: TlsState): void {
    const material = { cert: state.serving.cert, key: state.serving.key };
    this.#caBundle = caBundleOf(state);
    if (this.#serving?.cert === material.cert && this.#serving.key === material.key) return;
    const first = this.#serving === undefined;
    this.#options.onCertificate(material);
    this.#serving = material;
    this.#log.info(
      first ? 'serving the certificate from the TLS Secret' : 'serving a new certificate from the TLS Secret',
      {
        secret: `${this.#options.secret.namespace}/${this.#options.secret.name}`,
        generation: state.generation,
        ...describeCertificate(material.cert),
      },
    );
    if (first) this.#resolveServing();
  }

  /** Makes every webhook's caBundle the state's CAs. Returns whether it wrote. */
  async #syncBundle(
    state: TlsState,
    uid: string,
    firstRead: V1MutatingWebhookConfiguration | undefined,
    signal: AbortSignal,
  ): Promise<boolean> {
    const configName = this.#options.webhookConfig;
    for (let attempt = 1; ; attempt++) {
      const config = attempt === 1 ? firstRead : await this.#readConfig(signal);
      if (!config) {
        if (!this.#missingConfigLogged) {
          this.#log.warn('the MutatingWebhookConfiguration does not exist: no caBundle written', {
            webhookConfig: configName,
          });
          this.#missingConfigLogged = true;
        }
        return false;
      }
      this.#missingConfigLogged = false;
      const patch = bundlePatch(config, caBundleOf(state), { uid, generation: state.generation }, Date.now());
      if (patch.kind !== 'patch') return false;
      try {
        await this.#admission.patchMutatingWebhookConfiguration(
          { name: configName, body: patch.ops },
          this.#request(signal, PatchStrategy.JsonPatch),
        );
      } catch (error) {
        // 422: the resourceVersion test failed (someone else wrote); 409: a conflict all the same.
        const code = statusCode(error);
        if ((code === 409 || code === 422) && attempt < MAX_ATTEMPTS) continue;
        throw error;
      }
      if (patch.contentChanged) {
        this.#log.info('caBundle updated', {
          webhookConfig: configName,
          webhooks: config.webhooks?.length ?? 0,
          cas: [...fingerprints(caBundleOf(state))],
          generation: state.generation,
        });
      }
      return true;
    }
  }
}
