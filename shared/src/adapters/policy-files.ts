// Policy files: reading a policy from disk, and the shipped default. The core compiles and
// evaluates policies (core/policy.ts); this edge only reads bytes.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { type Policy, PolicyError, parsePolicy } from '../core/policy.ts';

/** A policy file's text; PolicyError (naming the file) when it cannot be read. */
export function readPolicyText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new PolicyError(`cannot read policy ${path}: ${(error as Error).message}`);
  }
}

export function loadPolicyFile(path: string): Policy {
  return parsePolicy(readPolicyText(path), path);
}

export const DEFAULT_POLICY_PATH = fileURLToPath(new URL('../../policy/default.yaml', import.meta.url));

let defaultPolicy: Policy | undefined;
export function loadDefaultPolicy(): Policy {
  defaultPolicy ??= loadPolicyFile(DEFAULT_POLICY_PATH);
  return defaultPolicy;
}
