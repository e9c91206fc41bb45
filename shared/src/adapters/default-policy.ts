// The shipped default policy's document: shared/policy/default.yaml, parsed but not yet validated
// (policy-files.ts compiles it like any other). Source runs read and parse the file here. The
// bundles (scripts/build.ts) replace this module with the document parsed by this same function
// at build time, so a start without --policy reads no file and parses no YAML for it.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PolicyError, parsePolicyDocument } from '../core/policy.ts';

export const DEFAULT_POLICY_PATH = fileURLToPath(new URL('../../policy/default.yaml', import.meta.url));

export function defaultPolicyDocument(): unknown {
  let text: string;
  try {
    text = readFileSync(DEFAULT_POLICY_PATH, 'utf8');
  } catch (error) {
    throw new PolicyError(`cannot read policy ${DEFAULT_POLICY_PATH}: ${(error as Error).message}`);
  }
  return parsePolicyDocument(text, DEFAULT_POLICY_PATH);
}
