// The admission.k8s.io/v1 AdmissionReview envelope: only the fields Slipstream reads or writes,
// read defensively (the body comes off the network; the API server is trusted to be the sender,
// not to be the only one).

import { isRecord } from '@slipstream/shared/core/record';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

export interface GroupVersionKind {
  group: string;
  version: string;
  kind: string;
}

export type Operation = 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';

/** The request half, as read: strings default to '', unknown shapes to undefined. */
export interface AdmissionRequest {
  uid: string;
  kind: GroupVersionKind;
  subResource: string;
  name: string;
  namespace: string;
  /** As sent; not necessarily one of `Operation`. */
  operation: string;
  dryRun: boolean;
  object: unknown;
  oldObject: unknown;
}

export interface JsonPatchOperation {
  op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test';
  path: string;
  value?: unknown;
}

export interface AdmissionResponse {
  uid: string;
  allowed: true;
  patchType?: 'JSONPatch';
  /** base64 of the JSON Patch (RFC 6902) document. */
  patch?: string;
  warnings?: string[];
}

export interface AdmissionReviewResponse {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: 'AdmissionReview';
  response: AdmissionResponse;
}

/** The API server's uids are UUIDs; anything much longer is not from it. */
const MAX_UID_LENGTH = 256;

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

export type ReadResult<T> = { ok: true; value: T } | { ok: false; error: string };

/**
 * Reads an AdmissionReview request. Only what is needed to answer at all is required (the
 * envelope's apiVersion and kind, and request.uid); every other field may be missing or of the
 * wrong type, and is then read as empty, so that the answer is "allowed, unchanged".
 */
export function readAdmissionReview(body: unknown): ReadResult<AdmissionRequest> {
  if (!isRecord(body)) return { ok: false, error: 'body is not a JSON object' };
  if (body.apiVersion !== ADMISSION_API_VERSION || body.kind !== 'AdmissionReview') {
    return { ok: false, error: `body is not an ${ADMISSION_API_VERSION} AdmissionReview` };
  }
  const request = body.request;
  if (!isRecord(request)) return { ok: false, error: 'AdmissionReview has no request object' };
  const uid = request.uid;
  if (typeof uid !== 'string' || uid === '' || uid.length > MAX_UID_LENGTH) {
    return { ok: false, error: `request.uid must be a string of 1-${MAX_UID_LENGTH} characters` };
  }
  const kind = isRecord(request.kind) ? request.kind : {};
  return {
    ok: true,
    value: {
      uid,
      kind: { group: str(kind.group), version: str(kind.version), kind: str(kind.kind) },
      subResource: str(request.subResource),
      name: str(request.name),
      namespace: str(request.namespace),
      operation: str(request.operation),
      dryRun: request.dryRun === true,
      object: request.object,
      oldObject: request.oldObject,
    },
  };
}
