// Narrowing untrusted JSON (admission bodies, manifests, API objects, nft listings): the one
// test for "a plain object whose fields can be read".

/** True for a JSON object (not null, not an array). */
export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
