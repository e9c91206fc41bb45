// Checks a policy document against POLICY_SCHEMA, reporting every error (allErrors). In source
// runs (tests, `node *.ts`) Ajv compiles the schema when this module is imported. The bundles
// (scripts/build.ts) replace this module with the validator Ajv's standalone code generation
// wrote from the same schema and options at build time: the same checks and error objects, and a
// production start neither loads Ajv nor compiles a schema (the largest part of the webhook's
// cold start before; test/bench/RESULTS.md).

import { Ajv, type Options } from 'ajv';
import { POLICY_SCHEMA } from './policy-schema.ts';

export const POLICY_AJV_OPTIONS = { allErrors: true, allowUnionTypes: true } as const satisfies Options;

export const validatePolicyDocument = new Ajv(POLICY_AJV_OPTIONS).compile(POLICY_SCHEMA);
