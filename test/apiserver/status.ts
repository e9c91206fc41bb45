// Errors as the API server answers them: a metav1 Status object with the HTTP code, a reason
// (NotFound, AlreadyExists, Conflict, Invalid, Expired, …) and a message.

import type { Json } from './resources.ts';

/** An API error, answered as a Status object. */
export class StatusError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details: Json | undefined;
  constructor(code: number, reason: string, message: string, details?: Json) {
    super(message);
    this.name = 'StatusError';
    this.code = code;
    this.reason = reason;
    this.details = details;
  }
}

export function statusObject(code: number, reason: string, message: string, details?: Json): Json {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: code < 400 ? 'Success' : 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

/** The Status of any error: a StatusError as it is, anything else as a 500 InternalError. */
export function toStatus(error: unknown): Json {
  return error instanceof StatusError
    ? statusObject(error.code, error.reason, error.message, error.details)
    : statusObject(
        500,
        'InternalError',
        `an error on the server has prevented the request from succeeding: ${String(error)}`,
      );
}

export function notFound(resource: string, name: string): StatusError {
  return new StatusError(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
}
