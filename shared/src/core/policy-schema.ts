// The JSON Schema a policy document must satisfy (policy.ts compiles documents; policy-validator.ts
// checks them against this). Plain data, so that the build can compile it ahead of time.

import { THRESHOLD_MAX } from './contract.ts';

const thresholdSchema = { type: 'integer', minimum: 0, maximum: THRESHOLD_MAX };
const protocolSchema = { enum: ['TCP', 'UDP', 'SCTP'] };

export const POLICY_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'version', 'default', 'rules'],
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 63 },
    // Bounded, so that the policy id always fits in a hint.
    version: { anyOf: [{ type: 'string', minLength: 1, maxLength: 63 }, { type: 'integer' }] },
    defaultThreshold: thresholdSchema,
    default: {
      type: 'object',
      additionalProperties: false,
      required: ['offload', 'reason'],
      properties: {
        offload: { type: 'boolean' },
        threshold: thresholdSchema,
        reason: { type: 'string', minLength: 1, maxLength: 200 },
        protocols: { type: 'array', items: { enum: ['TCP', 'UDP'] } },
      },
    },
    rules: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'match', 'offload', 'reason'],
        properties: {
          name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' },
          offload: { type: 'boolean' },
          threshold: thresholdSchema,
          reason: { type: 'string', minLength: 1, maxLength: 200 },
          match: {
            type: 'object',
            additionalProperties: false,
            minProperties: 1,
            properties: {
              ports: {
                type: 'array',
                minItems: 1,
                items: {
                  anyOf: [
                    { type: 'integer', minimum: 1, maximum: 65535 },
                    { type: 'string', pattern: '^[0-9]{1,5}-[0-9]{1,5}$' },
                  ],
                },
              },
              protocols: { type: 'array', minItems: 1, items: protocolSchema },
              appProtocols: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
              portNames: {
                type: 'array',
                minItems: 1,
                items: { type: 'string', pattern: '^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$' },
              },
            },
          },
        },
      },
    },
  },
} as const;
