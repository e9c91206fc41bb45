// PATCH in the API server stand-in: JSON Patch (RFC 6902, fast-json-patch) and JSON Merge Patch
// (RFC 7386, json-merge-patch), the two content types client-node sends; strategic merge and
// apply patches get 415. Applying a patch only computes the new object: the store then writes it
// as an update, where the patched object's metadata.resourceVersion is the precondition, as in
// kube-apiserver (a patch that does not touch it applies to the latest object; one that sets a
// stale value gets 409 Conflict).

import { isRecord } from '@slipstream/shared/core/record';
import fastJsonPatch from 'fast-json-patch';
import jsonMergePatch from 'json-merge-patch';
import { clone, type Json } from './resources.ts';
import { StatusError } from './status.ts';

export const JSON_PATCH = 'application/json-patch+json';
export const MERGE_PATCH = 'application/merge-patch+json';

/**
 * Applies a JSON Patch to a copy of `object`, as the API server applies a PATCH or a webhook's
 * patch. Throws on any failed operation, naming it (`test /metadata/resourceVersion: Test
 * operation failed`); the library's own message also carries the whole document.
 */
export function applyJsonPatch(object: Json, patch: unknown): Json {
  if (!Array.isArray(patch)) throw new Error('JSON Patch is not a list');
  let result: unknown;
  try {
    result = fastJsonPatch.applyPatch(
      clone(object),
      clone(patch) as fastJsonPatch.Operation[],
      true,
      true,
    ).newDocument;
  } catch (error) {
    if (!(error instanceof fastJsonPatch.JsonPatchError)) throw error;
    const op = isRecord(error.operation) ? error.operation : {};
    const what = typeof op.op === 'string' ? `${op.op} ${String(op.path ?? '')}: ` : '';
    throw new Error(`JSON Patch ${what}${error.message.split('\n')[0]}`);
  }
  if (!isRecord(result)) throw new Error('JSON Patch replaced the object with a non-object');
  return result;
}

/** Applies a JSON Merge Patch to a copy of `target` (null deletes a key; lists are replaced whole). */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  return jsonMergePatch.apply(clone(target), clone(patch));
}

/**
 * The object a PATCH request makes of `current`: `contentType` must be JSON Patch or merge
 * patch (415 otherwise), `raw` must decode (400), and a JSON Patch that fails (a `test`, a path
 * that does not exist) is 422, as kube-apiserver answers every patch application error.
 */
export function patchedObject(current: Json, contentType: string, raw: string): Json {
  if (contentType !== JSON_PATCH && contentType !== MERGE_PATCH) {
    throw new StatusError(
      415,
      'UnsupportedMediaType',
      `the body of the request was in an unknown format - accepted media types include: ${JSON_PATCH}, ${MERGE_PATCH}`,
    );
  }
  let patch: unknown;
  try {
    patch = JSON.parse(raw);
  } catch (error) {
    throw new StatusError(400, 'BadRequest', `error decoding patch: ${String(error)}`);
  }
  if (contentType === JSON_PATCH) {
    if (!Array.isArray(patch))
      throw new StatusError(400, 'BadRequest', 'error decoding patch: not a JSON Patch list');
    try {
      return applyJsonPatch(current, patch);
    } catch (error) {
      throw new StatusError(422, 'Invalid', (error as Error).message);
    }
  }
  if (!isRecord(patch)) throw new StatusError(400, 'BadRequest', 'error decoding patch: not a JSON object');
  const patched = applyMergePatch(current, patch);
  if (!isRecord(patched))
    throw new StatusError(422, 'Invalid', 'the patch replaced the object with a non-object');
  return patched;
}
