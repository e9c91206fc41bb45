// TLS without extra installs: every replica keeps its CA and serving certificate in one Secret,
// writes the CA into the MutatingWebhookConfiguration's caBundle, and serves what the Secret holds.
// The decisions (what to issue, when to rotate) are in bootstrap-plan.ts; this file does the API
// calls, the retries and the periodic re-check.
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
  ApiException,
  type ConfigurationOptions,
  CoreV1Api,
  KubeConfig,
  Observable,
  PatchStrategy,
  type RequestContext,
  type ResponseContext,
  type V1MutatingWebhookConfiguration,
  type V1Secret,
} from '@kubernetes/client-node';
import { Backoff } from '@slipstream/shared/adapters/backoff';
import type { Logger } from '@slipstream/shared/adapters/log';
import {
  ANNOTATIONS,
  type BundleView,
  caBundleOf,
  checkDurations,
  DEFAULT_CHECK_INTERVAL_MS,
  DEFAULT_DURATIONS,
  decodeSecret,
  encodeSecret,
  fingerprints,
  formatTime,
  plan,
  type TlsDurations,
  type TlsState,
} from './bootstrap-plan.ts';
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

/** In-cluster configuration inside a Pod, else `path`, else the default kubeconfig ($KUBECONFIG, ~/.kube/config). */
export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error(`kubeconfig${path ? ` ${path}` : ''} has no current cluster`);
  return kc;
}

/** The HTTP status of a client-node error, if it is one. */
export function statusCode(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}

/** A short description of an API error or a network failure, for log lines. */
export function describeError(error: unknown): string {
  if (error instanceof ApiException) {
    let body: unknown = error.body;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        // not a Status
      }
    }
    const status = body as { reason?: unknown; message?: unknown } | undefined;
    const detail =
      typeof status?.message === 'string'
        ? `${String(status.reason ?? '')}: ${status.message}`
        : typeof body === 'string'
          ? body.slice(0, 200)
          : '';
    return `HTTP ${error.code}${detail ? ` ${detail}` : ''}`;
  }
  if (error instanceof Error) {
    const cause = error.cause as { code?: unknown; message?: unknown } | undefined;
    const why = cause ? String(cause.code ?? cause.message ?? '') : '';
    return why && !error.message.includes(why) ? `${error.message} (${why})` : error.message;
  }
  return String(error);
}

/** JSON Pointer escaping of one path segment. */
function pointer(segment: string): string {
  return segment.replace(/~/g, '~0').replace(/\//g, '~1');
}

function bundleView(config: V1MutatingWebhookConfiguration | undefined): BundleView {
  const webhooks = config?.webhooks ?? [];
  if (!config || webhooks.length === 0) return { exists: false, trusted: new Set() };
  let trusted: Set<string> | undefined;
  for (const webhook of webhooks) {
    const cas = fingerprints(Buffer.from(webhook.clientConfig?.caBundle ?? '', 'base64').toString('utf8'));
    trusted = trusted ? new Set([...trusted].filter((f) => cas.has(f))) : cas;
  }
  const view: BundleView = { exists: true, trusted: trusted ?? new Set() };
  const annotations = config.metadata?.annotations ?? {};
  const since = Date.parse(annotations[ANNOTATIONS.bundleSince] ?? '');
  if (!Number.isNaN(since)) view.since = since;
  const source = parseSource(annotations[ANNOTATIONS.bundleSource]);
  if (source) view.source = source;
  return view;
}

function parseSource(value: string | undefined): { uid: string; generation: number } | undefined {
  const match = /^(.+)\/([0-9]+)$/.exec(value ?? '');
  return match ? { uid: match[1]!, generation: Number(match[2]) } : undefined;
}

/** A caBundle view that lets nothing be promoted: used when the configuration cannot be read. */
const UNKNOWN_BUNDLE: BundleView = { exists: true, trusted: new Set() };

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

  #requestOptions(signal: AbortSignal, contentType?: string): ConfigurationOptions {
    const timeoutMs = this.#requestTimeoutMs;
    return {
      middleware: [
        {
          pre: (context: RequestContext) => {
            context.setSignal(AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]));
            if (contentType) context.setHeaderParam('Content-Type', contentType);
            return new Observable(Promise.resolve(context));
          },
          post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
        },
      ],
      middlewareMergeStrategy: 'append',
    };
  }

  async #readSecret(signal: AbortSignal): Promise<V1Secret | undefined> {
    const { namespace, name } = this.#options.secret;
    try {
      return await this.#core.readNamespacedSecret({ namespace, name }, this.#requestOptions(signal));
    } catch (error) {
      if (statusCode(error) === 404) return undefined;
      throw error;
    }
  }

  async #readConfig(signal: AbortSignal): Promise<V1MutatingWebhookConfiguration | undefined> {
    try {
      return await this.#admission.readMutatingWebhookConfiguration(
        { name: this.#options.webhookConfig },
        this.#requestOptions(signal),
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
                this.#requestOptions(signal),
              )
            : await this.#core.createNamespacedSecret(
                { namespace, body: this.#secretBody(state, undefined) },
                this.#requestOptions(signal),
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
    const desired = Buffer.from(caBundleOf(state), 'utf8').toString('base64');
    const wantSource = `${uid}/${state.generation}`;
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
      const annotations = config.metadata?.annotations ?? {};
      const source = parseSource(annotations[ANNOTATIONS.bundleSource]);
      if (source && source.uid === uid && source.generation > state.generation) {
        return false; // written from a newer Secret than ours: the next pass reads that one
      }
      const ops: { op: string; path: string; value?: unknown }[] = [
        { op: 'test', path: '/metadata/resourceVersion', value: config.metadata?.resourceVersion },
      ];
      const webhooks = config.webhooks ?? [];
      webhooks.forEach((webhook, i) => {
        if (webhook.clientConfig?.caBundle !== desired) {
          ops.push({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: desired });
        }
      });
      const contentChanged = ops.length > 1;
      const since = contentChanged ? undefined : annotations[ANNOTATIONS.bundleSince];
      if (!contentChanged && annotations[ANNOTATIONS.bundleSource] === wantSource && since) return false;
      const wanted = {
        [ANNOTATIONS.bundleSource]: wantSource,
        [ANNOTATIONS.bundleSince]: since ?? formatTime(Date.now()),
      };
      if (!config.metadata?.annotations)
        ops.push({ op: 'add', path: '/metadata/annotations', value: wanted });
      else {
        for (const [key, value] of Object.entries(wanted)) {
          ops.push({ op: 'add', path: `/metadata/annotations/${pointer(key)}`, value });
        }
      }
      try {
        await this.#admission.patchMutatingWebhookConfiguration(
          { name: configName, body: ops },
          this.#requestOptions(signal, PatchStrategy.JsonPatch),
        );
      } catch (error) {
        // 422: the resourceVersion test failed (someone else wrote); 409: a conflict all the same.
        const code = statusCode(error);
        if ((code === 409 || code === 422) && attempt < MAX_ATTEMPTS) continue;
        throw error;
      }
      if (contentChanged) {
        this.#log.info('caBundle updated', {
          webhookConfig: configName,
          webhooks: webhooks.length,
          cas: [...fingerprints(caBundleOf(state))],
          generation: state.generation,
        });
      }
      return true;
    }
  }
}
