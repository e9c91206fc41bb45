// The webhook's pure core: one AdmissionReview in, one AdmissionReview out. No I/O, no clock, no
// globals: the policy and the trace context come in `ctx`, and what happened comes back in
// `outcome` for the caller's span. Every reviewable request is allowed: Service creation must
// never depend on Slipstream, so the worst answer is "allowed, unchanged, with a warning".
//
// That includes a Service beyond what one review evaluates (shared/src/core/bounds.ts). A 4xx would end the same
// way under failurePolicy: Ignore (admitted unchanged) but as a failed call: the user sees
// nothing, the API server logs an error and counts a fail-open. "Allowed, no patch, a warning"
// admits it just as fast, tells the user why in kubectl's output, and sends no patch, which
// matters because a patch that fails to apply, or makes the object invalid, fails the write
// whatever the failurePolicy.

import { beyondBounds, MAX_ANNOTATION_BYTES } from '@slipstream/shared/core/bounds';
import { type Decision, decide } from '@slipstream/shared/core/decide';
import { formatOffload } from '@slipstream/shared/core/hints';
import type { Policy } from '@slipstream/shared/core/policy';
import { isRecord } from '@slipstream/shared/core/record';
import { readService } from '@slipstream/shared/core/service';
import {
  ADMISSION_API_VERSION,
  type AdmissionRequest,
  type AdmissionResponse,
  type AdmissionReviewResponse,
  readAdmissionReview,
} from './admission.ts';
import { hintPatch } from './patch.ts';
import { warning } from './warnings.ts';

export interface ReviewContext {
  policy: Policy;
  /** W3C traceparent of the review's span, recorded on the Service when the decision changes. */
  traceparent?: string;
}

/** What the review did, for span attributes and tests. */
export interface ReviewOutcome {
  uid: string;
  operation: string;
  /** `group/version/Kind` of the object (`/v1/Service` for core Services). */
  kind: string;
  namespace: string;
  name: string;
  dryRun: boolean;
  /** Why the object was not evaluated (not a Service, DELETE, unreadable Service); absent when it was. */
  skipped?: string;
  patched: boolean;
  /** The decision's offload (ports and thresholds) differs from the hints the object carried. */
  decisionChanged: boolean;
  warnings: number;
  /** The key each warning names (for metrics). */
  warningKeys: string[];
  /** The full decision, per port (for metrics). */
  decided?: Decision;
  decision?: {
    /** The offload hint: `5432/TCP=20,8080/TCP=100` or `none`. */
    offload: string;
    rule: string;
    reason: string;
    policy: string;
  };
}

export type ReviewResult =
  | { ok: true; review: AdmissionReviewResponse; outcome: ReviewOutcome }
  | { ok: false; error: string };

/** Namespace and name from the object, else from the request (CREATE with generateName has no name yet). */
function identity(request: AdmissionRequest): { namespace: string; name: string } {
  const metadata =
    isRecord(request.object) && isRecord(request.object.metadata) ? request.object.metadata : {};
  const namespace = typeof metadata.namespace === 'string' && metadata.namespace ? metadata.namespace : '';
  const name = typeof metadata.name === 'string' && metadata.name ? metadata.name : '';
  const generateName = typeof metadata.generateName === 'string' ? metadata.generateName : '';
  return { namespace: namespace || request.namespace, name: name || request.name || generateName };
}

function answer(response: AdmissionResponse): AdmissionReviewResponse {
  return { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response };
}

export function review(body: unknown, ctx: ReviewContext): ReviewResult {
  const read = readAdmissionReview(body);
  if (!read.ok) return read;
  const request = read.value;
  const { namespace, name } = identity(request);
  const outcome: ReviewOutcome = {
    uid: request.uid,
    operation: request.operation,
    kind: `${request.kind.group}/${request.kind.version}/${request.kind.kind}`,
    namespace,
    name,
    dryRun: request.dryRun,
    patched: false,
    decisionChanged: false,
    warnings: 0,
    warningKeys: [],
  };
  const allow = (skipped: string | undefined, warnings: string[] = []): ReviewResult => {
    if (skipped !== undefined) outcome.skipped = skipped;
    outcome.warnings = warnings.length;
    const response: AdmissionResponse = { uid: request.uid, allowed: true };
    if (warnings.length > 0) response.warnings = warnings;
    return { ok: true, review: answer(response), outcome };
  };

  const { kind } = request;
  if (kind.group !== '' || kind.version !== 'v1' || kind.kind !== 'Service' || request.subResource !== '') {
    return allow('not a v1 Service');
  }
  if (request.operation !== 'CREATE' && request.operation !== 'UPDATE') {
    return allow(`operation ${request.operation || '(none)'} is not reviewed`);
  }
  const beyond = beyondBounds(request.object);
  if (beyond !== undefined) {
    return allow('beyond review bounds', [
      warning('slipstream', `${beyond}; not evaluated, no hints written`),
    ]);
  }
  const service = readService(request.object);
  if (!service.ok) {
    outcome.warningKeys = ['slipstream'];
    return allow('unreadable Service', [
      warning('slipstream', `Service not evaluated, no hints written: ${service.error}`),
    ]);
  }

  // Dry-run requests get exactly the answer a real one would: the review has no side effects.
  const decision = decide(service.value, ctx.policy);
  // Any invalid user key fails closed; the warning says so first, before a long message is cut.
  const warnings = decision.warnings.map((p) => warning(p.key, `nothing offloaded: ${p.message}`));
  outcome.warningKeys = decision.warnings.map((p) => p.key);
  outcome.decided = decision;
  outcome.decision = {
    offload: formatOffload(decision.offload),
    rule: decision.rule,
    reason: decision.reason,
    policy: decision.policy,
  };
  const patch = hintPatch(request.object, decision, ctx.traceparent);
  outcome.decisionChanged = patch.decisionChanged;
  if (patch.ops.length === 0) return allow(undefined, warnings);
  if (patch.annotationBytesAfter > MAX_ANNOTATION_BYTES) {
    return allow('beyond review bounds', [
      ...warnings,
      warning(
        'slipstream',
        `hints would take the annotations over the ${MAX_ANNOTATION_BYTES} bytes Kubernetes accepts; none written`,
      ),
    ]);
  }

  outcome.patched = true;
  outcome.warnings = warnings.length;
  const response: AdmissionResponse = {
    uid: request.uid,
    allowed: true,
    patchType: 'JSONPatch',
    patch: Buffer.from(JSON.stringify(patch.ops)).toString('base64'),
  };
  if (warnings.length > 0) response.warnings = warnings;
  return { ok: true, review: answer(response), outcome };
}
