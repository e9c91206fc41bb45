// What one Service may cost, wherever it comes from: a review of the webhook (whose body is already
// bounded, 1 MiB and nesting 64: webhook/src/body.ts) or a manifest of the daemon's files source
// (daemon/src/sources/manifests.ts). The cost of deciding grows with the number of ports (~10 us
// each, measured) and the cost of patching with the annotations. Past these bounds the webhook
// allows the Service unchanged with a warning (see webhook/src/review.ts for why that, and not a
// 4xx, fits failurePolicy: Ignore); the daemon rejects that Service, naming its file.

import { isRecord } from './record.ts';

/**
 * Ports a review evaluates. Real Services have a handful; port lists generated for media or
 * passive-FTP ranges reach a few hundred. 2,000 ports decide in about 20 ms (large bodies on the
 * worker thread). It sits above the ~1,300 ports whose offload hint reaches the contract's
 * 16,384-character limit, so that limit, which the daemon applies too, decides those Services.
 */
export const MAX_PORTS = 2000;

/**
 * Kubernetes' own limit on a Service's annotations (keys plus values, in bytes: apimachinery's
 * TotalAnnotationSizeLimitB). Mutating webhooks run before validation, so they see objects over
 * it (which the API server then rejects); and hints that would push an object over it would make
 * our patch the reason the write fails.
 */
export const MAX_ANNOTATION_BYTES = 256 * 1024;

/** Bytes of string annotations, counted as Kubernetes counts them (UTF-8 key plus value). */
export function annotationBytes(
  annotations: Record<string, unknown>,
  only?: (key: string) => boolean,
): number {
  let total = 0;
  for (const key in annotations) {
    if (!Object.hasOwn(annotations, key) || (only && !only(key))) continue;
    const value = annotations[key];
    if (typeof value === 'string') total += Buffer.byteLength(key) + Buffer.byteLength(value);
  }
  return total;
}

/** Why this object is beyond what one Service may cost, or undefined when it is within bounds. */
export function beyondBounds(object: unknown): string | undefined {
  if (!isRecord(object)) return undefined;
  const spec = isRecord(object.spec) ? object.spec : undefined;
  const ports = spec?.ports;
  if (Array.isArray(ports) && ports.length > MAX_PORTS) {
    return `Service has ${ports.length} ports, more than the ${MAX_PORTS} a review evaluates`;
  }
  const annotations = isRecord(object.metadata) ? object.metadata.annotations : undefined;
  if (isRecord(annotations)) {
    const bytes = annotationBytes(annotations);
    if (bytes > MAX_ANNOTATION_BYTES) {
      return `annotations are ${bytes} bytes, over the ${MAX_ANNOTATION_BYTES} Kubernetes accepts`;
    }
  }
  return undefined;
}
