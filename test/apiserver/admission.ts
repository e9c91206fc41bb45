// Admission in the API server stand-in: `onAdmit` runs on POST, PUT and PATCH of Services and
// Namespaces, after defaulting and before ClusterIP allocation, like a mutating webhook. It gets
// a private copy of the object and returns the object to store (or undefined to keep it); throwing
// AdmissionDenied refuses the request as a webhook's `allowed: false` does. `toAdmissionReview`
// builds the body a real webhook would receive.

import { randomUUID } from 'node:crypto';
import { isRecord } from '@slipstream/shared/core/record';
import type { Json, ResourceName } from './resources.ts';
import { StatusError } from './status.ts';

export interface AdmissionRequest {
  operation: 'CREATE' | 'UPDATE';
  resource: ResourceName;
  kind: 'Service' | 'Namespace';
  /** Unset for Namespaces. */
  namespace?: string;
  name: string;
  /** A private copy, defaulted like the real server does before admission: mutate it or return another. */
  object: Json;
  oldObject?: Json;
}

/** Returns the object to store (possibly mutated), or undefined to keep it as is; throw AdmissionDenied to refuse. */
export type AdmissionHook = (request: AdmissionRequest) => Promise<Json | undefined> | Json | undefined;

/** Thrown by an admission hook to refuse the request, as a webhook's `allowed: false` does. */
export class AdmissionDenied extends Error {
  readonly code: number;
  constructor(message: string, code = 400) {
    super(message);
    this.name = 'AdmissionDenied';
    this.code = code;
  }
}

/** The body a real mutating webhook receives for this request (admission.k8s.io/v1 AdmissionReview). */
export function toAdmissionReview(request: AdmissionRequest, uid: string = randomUUID()): Json {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: request.kind },
      resource: { group: '', version: 'v1', resource: request.resource },
      requestKind: { group: '', version: 'v1', kind: request.kind },
      requestResource: { group: '', version: 'v1', resource: request.resource },
      name: request.name,
      ...(request.namespace !== undefined ? { namespace: request.namespace } : {}),
      operation: request.operation,
      userInfo: { username: 'system:admin', groups: ['system:masters', 'system:authenticated'] },
      object: request.object,
      oldObject: request.oldObject ?? null,
      dryRun: false,
      options:
        request.operation === 'CREATE'
          ? { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' }
          : { kind: 'UpdateOptions', apiVersion: 'meta.k8s.io/v1' },
    },
  };
}

/**
 * Runs `hook` on the request: the object to store. A refusal becomes the Status the API server
 * answers (the hook's code: 403 Forbidden, 400 BadRequest; any other exception: 500); a hook that
 * renames the object or moves it to another namespace is a server error, as in kube-apiserver.
 */
export async function admit(hook: AdmissionHook | undefined, request: AdmissionRequest): Promise<Json> {
  if (!hook) return request.object;
  let result: Json | undefined;
  try {
    result = await hook(request);
  } catch (error) {
    const code = error instanceof AdmissionDenied ? error.code : 500;
    const message = error instanceof Error ? error.message : String(error);
    throw new StatusError(
      code,
      code === 500 ? 'InternalError' : code === 403 ? 'Forbidden' : 'BadRequest',
      `admission webhook "fake.slipstream.dev" denied the request: ${message}`,
    );
  }
  const object = result ?? request.object;
  const metadata = isRecord(object.metadata) ? object.metadata : {};
  if (
    metadata.name !== request.name ||
    (request.namespace !== undefined && metadata.namespace !== request.namespace)
  ) {
    throw new StatusError(500, 'InternalError', 'admission changed the name or namespace of the object');
  }
  return object;
}
