// The webhook's only write: its own annotations (prefix `hints.slipstream.dev/`), as a JSON Patch
// against the object the API server sent. Every other annotation, including the user's
// `slipstream.dev/*` keys, is carried over untouched.

import { annotationBytes } from '@slipstream/shared/core/bounds';
import { HINT_KEYS, HINT_PREFIX } from '@slipstream/shared/core/contract';
import type { Decision } from '@slipstream/shared/core/decide';
import { formatHints } from '@slipstream/shared/core/hints';
import { isRecord } from '@slipstream/shared/core/record';
import fastJsonPatch from 'fast-json-patch';
import type { JsonPatchOperation } from './admission.ts';

export interface HintPatch {
  ops: JsonPatchOperation[];
  /** Bytes of the annotations after the patch is applied (as Kubernetes counts them). */
  annotationBytesAfter: number;
  /** The offload (ports or thresholds) differs from the hints the object carried (so the trace is new). */
  decisionChanged: boolean;
}

/**
 * The hint annotations a decision calls for, given the object's current ones: stale webhook
 * keys dropped (the older `packet-threshold` key included), and the trace context replaced only
 * when the decision itself (the offload hint: ports and thresholds) changed, so that reviewing an
 * already-patched object asks for nothing.
 */
export function desiredHints(
  current: Record<string, unknown>,
  decision: Decision,
  traceparent: string | undefined,
): { hints: Record<string, string>; decisionChanged: boolean } {
  const hints: Record<string, string> = formatHints(decision);
  const decisionChanged =
    current[HINT_KEYS.offload] !== hints[HINT_KEYS.offload] ||
    current[HINT_KEYS.packetThreshold] !== hints[HINT_KEYS.packetThreshold];
  const previousTrace = current[HINT_KEYS.trace];
  if (!decisionChanged) {
    if (typeof previousTrace === 'string') hints[HINT_KEYS.trace] = previousTrace;
  } else if (traceparent !== undefined) {
    hints[HINT_KEYS.trace] = traceparent;
  }
  // A change without a trace context (tracing disabled) leaves no trace key: the old one described
  // an older decision.
  return { hints, decisionChanged };
}

/** The patch that makes `object`'s annotations carry `decision`. `object` is not modified. */
export function hintPatch(object: unknown, decision: Decision, traceparent: string | undefined): HintPatch {
  const metadata = isRecord(object) && isRecord(object.metadata) ? object.metadata : undefined;
  const raw = metadata?.annotations;
  const current = isRecord(raw) ? raw : {};
  const { hints, decisionChanged } = desiredHints(current, decision, traceparent);

  // Built by diffing a before/after pair with fast-json-patch rather than by hand: compare() emits
  // the minimal add/replace/remove operations, escapes keys per RFC 6901
  // (`hints.slipstream.dev/offload` -> `hints.slipstream.dev~1offload`, `~` -> `~0`), turns a
  // missing annotations map into one `add /metadata/annotations`, and never mentions a key whose
  // value did not change. Only our own keys are compared: every other annotation is the same on
  // both sides, so leaving them out yields the same operations, in the same order, at a cost that
  // does not grow with the user's annotations (20,000 of them took 100-350 ms to compare).
  const isHint = (key: string) => key.startsWith(HINT_PREFIX);
  const ours: Record<string, unknown> = {};
  for (const key in current) if (Object.hasOwn(current, key) && isHint(key)) ours[key] = current[key];
  const before =
    metadata === undefined
      ? {}
      : { metadata: raw === undefined ? {} : { annotations: isRecord(raw) ? ours : raw } };
  const after = { metadata: { annotations: hints } };
  const ops = fastJsonPatch.compare(before, after) as JsonPatchOperation[];
  const annotationBytesAfter =
    annotationBytes(current, (key) => !isHint(key)) + annotationBytes(hints as Record<string, unknown>);
  return { ops, annotationBytesAfter, decisionChanged };
}
