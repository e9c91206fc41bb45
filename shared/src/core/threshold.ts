// The packet threshold of one offloaded port: the one place where its precedence and defaults
// are decided. Everything that needs a threshold (decide for the webhook and for the daemon's
// local fallback, the reason text, `slipstream status`) goes through `portThreshold`.

/** When neither the user, the deciding rule nor the policy's `defaultThreshold` names one. */
export const BUILTIN_THRESHOLD = 20;

/** Where a port's threshold came from, highest precedence first. */
export type ThresholdSource = 'user' | 'rule' | 'policy' | 'builtin';

export interface PortThreshold {
  value: number;
  source: ThresholdSource;
}

export interface ThresholdInputs {
  /** The user's `slipstream.dev/packet-threshold` (applies to every port of the Service). */
  user?: number | undefined;
  /** The threshold the deciding rule (or the policy's `default`) names itself, if any. */
  rule?: number | undefined;
  /** The policy's `defaultThreshold`, if it has one. */
  policy?: number | undefined;
}

/**
 * The user's threshold, else the deciding rule's, else the policy's `defaultThreshold`, else 20.
 * A port forced on by `slipstream.dev/acceleration: enabled` has no deciding rule, so it gets
 * the user's or the policy's default.
 */
export function portThreshold(inputs: ThresholdInputs): PortThreshold {
  if (inputs.user !== undefined) return { value: inputs.user, source: 'user' };
  if (inputs.rule !== undefined) return { value: inputs.rule, source: 'rule' };
  if (inputs.policy !== undefined) return { value: inputs.policy, source: 'policy' };
  return { value: BUILTIN_THRESHOLD, source: 'builtin' };
}
