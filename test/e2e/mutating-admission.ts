// kube-apiserver's mutating admission ("MutatingAdmissionWebhook" plugin), reproduced for the
// end-to-end tests on top of the API server stand-in's `onAdmit` hook (test/apiserver).
//
// No kube-apiserver can run on this machine, so this module does what it does with a
// MutatingWebhookConfiguration, after the stand-in has defaulted the object and before it is
// stored, for the parts that decide whether and how Slipstream's webhook is called:
//
// - Ordering: configurations sorted by name, webhooks in the order they are listed.
// - Matching: `rules` (operations, apiGroups, apiVersions, resources with the `*`, `x/*`, `*/y`
//   forms, scope), `namespaceSelector` (matchLabels and matchExpressions In/NotIn/Exists/
//   DoesNotExist, evaluated against the labels of the stored Namespace, which carry
//   `kubernetes.io/metadata.name`; for a Namespace object its own labels), `objectSelector`
//   (object or oldObject labels). `admissionReviewVersions` must offer v1.
// - The call: an admission.k8s.io/v1 AdmissionReview POSTed over HTTPS to `clientConfig.url`
//   with `?timeout=Ns` appended, verified against `clientConfig.caBundle` (no verification is
//   ever switched off), aborted after `timeoutSeconds` (default 10) with the API server's
//   "context deadline exceeded".
// - The answer: HTTP 200, `admission.k8s.io/v1 AdmissionReview`, `response.uid` equal to the
//   request's, `patchType: JSONPatch` whenever there is a patch; the base64 JSON Patch applied
//   to the object (a patch that does not apply fails the request whatever the failure policy, as
//   in the API server); `allowed: false` refuses the request with the webhook's status.
// - `failurePolicy`: a call that fails (connection refused, timeout, TLS, bad answer) with Ignore
//   (the default in v1 is Fail) leaves the object as it was and admits it; with Fail the request
//   fails with 500 InternalError "failed calling webhook".
// - `reinvocationPolicy: IfNeeded`: when a later webhook changes the object, the IfNeeded webhooks
//   invoked before it are called once more in a second round (the API server's
//   webhookReinvokeContext); never more than one extra round.
//
// Not reproduced: service references (tests put a URL in `clientConfig`), `matchPolicy`
// (only v1 Services exist here, so Exact and Equivalent agree), `matchConditions` (CEL),
// dry-run (the stand-in has none; `sideEffects` is not checked), audit annotations, response
// warnings as HTTP Warning headers (they are recorded in `calls` instead), the built-in admission
// plugins, validating webhooks, and the API server's own tracing of webhook calls (no
// `traceparent` header is sent, so the webhook's review spans are roots).

import { randomUUID } from 'node:crypto';
import https from 'node:https';
import { isRecord } from '@slipstream/shared/core/record';
import {
  AdmissionDenied,
  type AdmissionHook,
  type AdmissionRequest,
  toAdmissionReview,
} from '../apiserver/admission.ts';
import { applyJsonPatch } from '../apiserver/patch.ts';
import type { Json } from '../apiserver/resources.ts';
import { type LabelSelector, selectorMatches } from '../lib/label-selector.ts';

export interface RuleWithOperations {
  operations?: string[];
  apiGroups?: string[];
  apiVersions?: string[];
  resources?: string[];
  scope?: 'Cluster' | 'Namespaced' | '*';
}

export interface MutatingWebhook {
  name: string;
  clientConfig: { url?: string; caBundle?: string; service?: Json };
  rules?: RuleWithOperations[];
  failurePolicy?: 'Ignore' | 'Fail';
  timeoutSeconds?: number;
  namespaceSelector?: LabelSelector;
  objectSelector?: LabelSelector;
  reinvocationPolicy?: 'Never' | 'IfNeeded';
  admissionReviewVersions?: string[];
  sideEffects?: string;
  matchPolicy?: string;
}

export interface MutatingWebhookConfiguration {
  apiVersion: string;
  kind: 'MutatingWebhookConfiguration';
  metadata: { name: string } & Json;
  webhooks: MutatingWebhook[];
}

export type CallOutcome = 'patched' | 'unchanged' | 'ignored-error' | 'failed' | 'rejected';

/** One call of one webhook, as the API server made it. */
export interface WebhookCall {
  configuration: string;
  webhook: string;
  /** 1, or 2 for a reinvocation. */
  round: 1 | 2;
  operation: string;
  namespace: string | undefined;
  name: string;
  uid: string;
  url: string;
  /** The AdmissionReview that was sent. */
  review: Json;
  outcome: CallOutcome;
  /** What went wrong, in the API server's words (`failed calling webhook ...`). */
  error?: string;
  /** The decoded JSON Patch the webhook returned. */
  patch?: unknown[];
  warnings?: string[];
}

/** A webhook that was not called for a request, and why. */
export interface SkippedCall {
  webhook: string;
  operation: string;
  namespace: string | undefined;
  name: string;
  resource: string;
  why: 'rules' | 'namespaceSelector' | 'objectSelector';
}

export interface MutatingAdmissionOptions {
  /** The labels of a stored Namespace (the API server's namespace lister); undefined when there is none. */
  namespaceLabels: (name: string) => Record<string, string> | undefined;
  configurations?: MutatingWebhookConfiguration[];
}

/** An error the API server classifies as "calling the webhook failed": the failure policy decides. */
class CallError extends Error {
  override name = 'CallError';
}

function labelsOf(object: unknown): Record<string, string> {
  const metadata = isRecord(object) && isRecord(object.metadata) ? object.metadata : {};
  const labels = isRecord(metadata.labels) ? metadata.labels : {};
  return Object.fromEntries(
    Object.entries(labels).filter((e): e is [string, string] => typeof e[1] === 'string'),
  );
}

export interface RequestAttributes {
  operation: string;
  group: string;
  version: string;
  resource: string;
  subresource: string;
  /** Empty for cluster-scoped objects (a Namespace object is cluster-scoped). */
  namespace: string;
}

/** The API server's rules.Matcher: one rule matches when operation, group, version, resource and scope all do. */
export function ruleMatches(rule: RuleWithOperations, a: RequestAttributes): boolean {
  const has = (list: string[] | undefined, value: string) =>
    (list ?? []).some((entry) => entry === '*' || entry === value);
  if (!has(rule.operations, a.operation)) return false;
  if (!has(rule.apiGroups, a.group)) return false;
  if (!has(rule.apiVersions, a.version)) return false;
  const resourceOk = (rule.resources ?? []).some((entry) => {
    const slash = entry.indexOf('/');
    const res = slash < 0 ? entry : entry.slice(0, slash);
    const sub = slash < 0 ? '' : entry.slice(slash + 1);
    return (res === '*' || res === a.resource) && (sub === '*' || sub === a.subresource);
  });
  if (!resourceOk) return false;
  const scope = rule.scope ?? '*';
  const clusterScoped = a.resource === 'namespaces' || a.namespace === '';
  if (scope === 'Namespaced') return !clusterScoped;
  if (scope === 'Cluster') return clusterScoped;
  return true;
}

/** The API server's mutating admission, driving the stand-in's `onAdmit` hook. */
export class MutatingAdmission {
  readonly calls: WebhookCall[] = [];
  readonly skipped: SkippedCall[] = [];
  readonly #namespaceLabels: (name: string) => Record<string, string> | undefined;
  #configurations: MutatingWebhookConfiguration[];
  // The API server keeps connections to webhooks open between calls.
  readonly #agent = new https.Agent({ keepAlive: true });

  constructor(options: MutatingAdmissionOptions) {
    this.#namespaceLabels = options.namespaceLabels;
    this.#configurations = options.configurations ?? [];
  }

  /** Replaces the configurations in force (as an apply of MutatingWebhookConfigurations would). */
  setConfigurations(configurations: MutatingWebhookConfiguration[]): void {
    this.#configurations = structuredClone(configurations);
  }

  get configurations(): MutatingWebhookConfiguration[] {
    return structuredClone(this.#configurations);
  }

  /** The calls made for one object. */
  callsFor(namespace: string | undefined, name: string): WebhookCall[] {
    return this.calls.filter((c) => c.namespace === namespace && c.name === name);
  }

  close(): void {
    this.#agent.destroy();
  }

  /** For `FakeApiServer.start({ onAdmit })`. */
  readonly hook: AdmissionHook = (request) => this.admit(request);

  async admit(request: AdmissionRequest): Promise<Json> {
    const attributes: RequestAttributes = {
      operation: request.operation,
      group: '',
      version: 'v1',
      resource: request.resource,
      subresource: '',
      namespace: request.namespace ?? '',
    };
    const hooks: { configuration: string; webhook: MutatingWebhook }[] = [];
    const sorted = [...this.#configurations].sort((x, y) =>
      x.metadata.name < y.metadata.name ? -1 : x.metadata.name > y.metadata.name ? 1 : 0,
    );
    for (const configuration of sorted) {
      for (const webhook of configuration.webhooks) {
        const why = this.#mismatch(webhook, attributes, request);
        if (why === undefined) hooks.push({ configuration: configuration.metadata.name, webhook });
        else
          this.skipped.push({
            webhook: webhook.name,
            operation: request.operation,
            namespace: request.namespace,
            name: request.name,
            resource: request.resource,
            why,
          });
      }
    }

    let object = request.object;
    // webhookReinvokeContext: IfNeeded webhooks invoked so far, and those to call again.
    let previouslyInvoked = new Set<string>();
    const reinvoke = new Set<string>();
    let changedInRound1 = false;
    for (const round of [1, 2] as const) {
      if (round === 2 && (!changedInRound1 || reinvoke.size === 0)) break;
      for (const { configuration, webhook } of hooks) {
        const key = `${configuration}/${webhook.name}`;
        if (round === 2 && !reinvoke.has(key)) continue;
        const next = await this.#call(configuration, webhook, round, request, object);
        if (next !== undefined) {
          object = next;
          if (round === 1) changedInRound1 = true;
          // A change: every IfNeeded webhook invoked before this one must see the new object.
          for (const k of previouslyInvoked) reinvoke.add(k);
          previouslyInvoked = new Set();
        }
        if (webhook.reinvocationPolicy === 'IfNeeded') previouslyInvoked.add(key);
      }
    }
    return object;
  }

  #mismatch(
    webhook: MutatingWebhook,
    a: RequestAttributes,
    request: AdmissionRequest,
  ): SkippedCall['why'] | undefined {
    if (!(webhook.rules ?? []).some((rule) => ruleMatches(rule, a))) return 'rules';
    let namespaceLabels: Record<string, string> | undefined;
    if (request.resource === 'namespaces') {
      namespaceLabels = labelsOf(request.object);
    } else if (a.namespace !== '') {
      namespaceLabels = this.#namespaceLabels(a.namespace);
      if (namespaceLabels === undefined) {
        throw new AdmissionDenied(`namespaces "${a.namespace}" not found`, 404);
      }
    }
    // Other cluster-scoped objects are never skipped by a namespaceSelector.
    if (namespaceLabels !== undefined && !selectorMatches(webhook.namespaceSelector, namespaceLabels)) {
      return 'namespaceSelector';
    }
    const objectMatches =
      selectorMatches(webhook.objectSelector, labelsOf(request.object)) ||
      (request.oldObject !== undefined &&
        selectorMatches(webhook.objectSelector, labelsOf(request.oldObject)));
    if (!objectMatches) return 'objectSelector';
    return undefined;
  }

  /** Calls one webhook; returns the patched object, or undefined when the object is unchanged. */
  async #call(
    configuration: string,
    webhook: MutatingWebhook,
    round: 1 | 2,
    request: AdmissionRequest,
    object: Json,
  ): Promise<Json | undefined> {
    const uid = randomUUID();
    const review = toAdmissionReview({ ...request, object }, uid);
    const timeoutSeconds = webhook.timeoutSeconds ?? 10;
    const url = webhook.clientConfig.url ?? '';
    const call: WebhookCall = {
      configuration,
      webhook: webhook.name,
      round,
      operation: request.operation,
      namespace: request.namespace,
      name: request.name,
      uid,
      url,
      review,
      outcome: 'unchanged',
    };
    this.calls.push(call);
    const failed = (message: string): undefined => {
      call.error = `failed calling webhook "${webhook.name}": ${message}`;
      if ((webhook.failurePolicy ?? 'Fail') === 'Ignore') {
        call.outcome = 'ignored-error';
        return undefined;
      }
      call.outcome = 'failed';
      throw new AdmissionDenied(call.error, 500);
    };

    let response: Json;
    try {
      if (!(webhook.admissionReviewVersions ?? []).includes('v1')) {
        throw new CallError('webhook does not accept v1 AdmissionReview');
      }
      if (!url.startsWith('https://'))
        throw new CallError(`clientConfig.url ${JSON.stringify(url)} is not https`);
      const answer = await this.#post(url, webhook.clientConfig.caBundle, review, timeoutSeconds);
      response = verifyResponse(answer, uid);
    } catch (error) {
      return failed(error instanceof Error ? error.message : String(error));
    }
    if (Array.isArray(response.warnings)) call.warnings = response.warnings.map(String);

    if (response.allowed !== true) {
      const status = isRecord(response.status) ? response.status : {};
      const code = typeof status.code === 'number' ? status.code : 403;
      const message = typeof status.message === 'string' ? status.message : 'without explanation';
      call.outcome = 'rejected';
      call.error = message;
      throw new AdmissionDenied(message, code);
    }
    if (response.patch === undefined) return undefined;

    let patch: unknown[];
    let patched: Json;
    try {
      const decoded: unknown = JSON.parse(Buffer.from(String(response.patch), 'base64').toString('utf8'));
      if (!Array.isArray(decoded)) throw new Error('the patch is not a JSON Patch list');
      patch = decoded;
      call.patch = patch;
      patched = applyJsonPatch(object, patch);
    } catch (error) {
      // Not a call failure: the API server fails the request even with failurePolicy Ignore.
      call.outcome = 'failed';
      call.error = `JSON Patch from webhook "${webhook.name}" does not apply: ${(error as Error).message}`;
      throw new AdmissionDenied(call.error, 500);
    }
    if (JSON.stringify(patched) === JSON.stringify(object)) return undefined;
    call.outcome = 'patched';
    return patched;
  }

  #post(url: string, caBundle: string | undefined, review: Json, timeoutSeconds: number): Promise<unknown> {
    const target = new URL(url);
    target.searchParams.set('timeout', `${timeoutSeconds}s`);
    const body = Buffer.from(JSON.stringify(review));
    const ca = caBundle ? Buffer.from(caBundle, 'base64').toString('utf8') : undefined;
    return new Promise((resolve, reject) => {
      let settled = false;
      const done = (error: Error | undefined, value?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) reject(error);
        else resolve(value);
      };
      const req = https.request(
        target,
        {
          method: 'POST',
          agent: this.#agent,
          // Verified against the configuration's caBundle only (as the API server does), or the
          // system roots when there is none.
          ...(ca ? { ca } : {}),
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, */*',
            'content-length': body.length,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (e) => done(new CallError(`failed to call webhook: ${e.message}`)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode !== 200) {
              done(
                new CallError(
                  `received invalid webhook response: HTTP ${res.statusCode}: ${text.slice(0, 200)}`,
                ),
              );
              return;
            }
            try {
              done(undefined, JSON.parse(text));
            } catch (e) {
              done(new CallError(`received invalid webhook response: ${(e as Error).message}`));
            }
          });
        },
      );
      const timer = setTimeout(() => {
        done(new CallError(`failed to call webhook: Post "${target}": context deadline exceeded`));
        req.destroy();
      }, timeoutSeconds * 1000);
      req.on('error', (e) => done(new CallError(`failed to call webhook: Post "${target}": ${e.message}`)));
      req.end(body);
    });
  }
}

/** webhookutil.VerifyAdmissionResponse for v1: envelope, uid, patchType. Returns `response`. */
function verifyResponse(answer: unknown, uid: string): Json {
  if (!isRecord(answer) || answer.apiVersion !== 'admission.k8s.io/v1' || answer.kind !== 'AdmissionReview') {
    throw new CallError(
      `expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got ${
        isRecord(answer) ? `${String(answer.apiVersion)}, Kind=${String(answer.kind)}` : typeof answer
      }`,
    );
  }
  const response = answer.response;
  if (!isRecord(response)) throw new CallError('webhook response has no response object');
  if (response.uid !== uid)
    throw new CallError(`expected response.uid="${uid}", got "${String(response.uid)}"`);
  if (response.patch !== undefined && response.patchType !== 'JSONPatch') {
    throw new CallError(
      response.patchType === undefined
        ? 'webhook returned response.patch but not response.patchType'
        : `webhook returned invalid response.patchType of "${String(response.patchType)}"`,
    );
  }
  if (response.patchType !== undefined && response.patchType !== 'JSONPatch') {
    throw new CallError(`webhook returned invalid response.patchType of "${String(response.patchType)}"`);
  }
  return response;
}

/** The MutatingWebhookConfiguration as deployed, its service reference replaced by a URL (and CA). */
export function pointAt(
  configuration: MutatingWebhookConfiguration,
  url: string,
  caPem: string | undefined,
): MutatingWebhookConfiguration {
  const copy = structuredClone(configuration);
  for (const webhook of copy.webhooks) {
    webhook.clientConfig = {
      url,
      ...(caPem !== undefined ? { caBundle: Buffer.from(caPem).toString('base64') } : {}),
    };
  }
  return copy;
}
