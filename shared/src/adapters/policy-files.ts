// Policy files: reading a policy from disk, and the shipped default (default-policy.ts). The core
// compiles and evaluates policies (core/policy.ts); this edge only reads bytes.

import { readFileSync } from 'node:fs';
import { compilePolicy, type Policy, PolicyError, parsePolicy } from '../core/policy.ts';
import { DEFAULT_POLICY_PATH, defaultPolicyDocument } from './default-policy.ts';

export { DEFAULT_POLICY_PATH };

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

let defaultPolicy: Policy | undefined;
export function loadDefaultPolicy(): Policy {
  defaultPolicy ??= compilePolicy(defaultPolicyDocument(), DEFAULT_POLICY_PATH);
  return defaultPolicy;
}
