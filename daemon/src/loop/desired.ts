// The desired ruleset across syncs: computed in full when anything but Services changed, patched
// with only the Services that changed otherwise (so one Service add costs O(changed), not
// O(Services)). Each Service is computed on its own: one that throws is reported (and then
// quarantined by the caller), never holds back the others. Quarantined Services are left out.

import type { Change } from '@slipstream/shared/core/change';
import {
  applyServiceDelta,
  isConflictFree,
  type ThresholdRefs,
  thresholdRefs,
} from '@slipstream/shared/core/delta';
import {
  assembleRuleset,
  type Contribution,
  contribution,
  type DecisionMemo,
} from '@slipstream/shared/core/desired-ruleset';
import { diffDelta } from '@slipstream/shared/core/diff';
import type { Capabilities, Ruleset, ServiceEntry } from '@slipstream/shared/core/ruleset';
import type { Service } from '@slipstream/shared/core/service';
import type { InputSnapshot } from './inputs.ts';

export interface ComputeFailure {
  key: string;
  service: Service;
  error: unknown;
}

export interface Computed {
  desired: Ruleset;
  /** Set when `desired` was patched from the previous one: the Change from it (which the belief equals). */
  patched: { change: Change; gone: Map<string, ServiceEntry> } | null;
  failures: ComputeFailure[];
  /** Contributions computed this time (new or changed Services), for naming their problems. */
  fresh: Contribution[];
}

interface Incremental {
  capabilities: Capabilities;
  refs: ThresholdRefs;
  /** Keys of Services left out (quarantined or failed) when `desired` was made. */
  excluded: Set<string>;
}

export class DesiredState {
  #desired: Ruleset | null = null;
  #incremental: Incremental | null = null;

  get current(): Ruleset | null {
    return this.#desired;
  }

  /** The next compute is a full one. */
  invalidate(): void {
    this.#incremental = null;
  }

  /**
   * `belief`: what the kernel holds; patching is only valid when it IS the previous desired ruleset
   * (committed, or found equal), so that the patch is the whole Change.
   */
  compute(
    inputs: InputSnapshot,
    capabilities: Capabilities,
    belief: Ruleset | null | undefined,
    excludes: (key: string, service: Service) => boolean,
  ): Computed {
    const inc = this.#incremental;
    const previous = this.#desired;
    if (
      inc &&
      previous &&
      belief === previous &&
      inputs.changed !== 'all' &&
      inc.capabilities === capabilities
    ) {
      const patched = this.#patch(previous, inc, inputs, capabilities, excludes);
      if (patched) return patched;
    }
    return this.#full(inputs, capabilities, excludes);
  }

  /** `key`: the input store's own string, which the ruleset's entry and owners then share. */
  #one(key: string, service: Service, inputs: InputSnapshot, memo: DecisionMemo | undefined): Contribution {
    return contribution(service, inputs.policy, inputs.namespaces.get(service.namespace), memo, key);
  }

  #full(
    inputs: InputSnapshot,
    capabilities: Capabilities,
    excludes: (key: string, service: Service) => boolean,
  ): Computed {
    const contributions: Contribution[] = [];
    const failures: ComputeFailure[] = [];
    const excluded = new Set<string>();
    // Services of one shape share one decision (and its reason string) within a full compute.
    const memo: DecisionMemo = new Map();
    for (const [key, service] of inputs.services) {
      if (excludes(key, service)) {
        excluded.add(key);
        continue;
      }
      try {
        contributions.push(this.#one(key, service, inputs, memo));
      } catch (error) {
        failures.push({ key, service, error });
        excluded.add(key);
      }
    }
    const desired = assembleRuleset(contributions, inputs.devices, capabilities, inputs.nodeAddresses);
    this.#desired = desired;
    this.#incremental = isConflictFree(desired, contributions.length)
      ? { capabilities, refs: thresholdRefs(desired), excluded }
      : null;
    return { desired, patched: null, failures, fresh: contributions };
  }

  #patch(
    desired: Ruleset,
    inc: Incremental,
    inputs: InputSnapshot,
    capabilities: Capabilities,
    excludes: (key: string, service: Service) => boolean,
  ): Computed | null {
    const changed = new Set(inputs.changed as ReadonlySet<string>);
    // Quarantine moves (a retry due, a release) are changes too.
    for (const key of inc.excluded) changed.add(key);
    const removed: string[] = [];
    const added: Contribution[] = [];
    const failures: ComputeFailure[] = [];
    const excluded = new Set<string>();
    // Past a quarter of the Services a full recompute is as cheap.
    const limit = Math.max(64, inputs.services.size >> 2);
    if (changed.size > limit) return null;
    for (const key of changed) {
      if (desired.services.has(key)) removed.push(key);
      const service = inputs.services.get(key);
      if (!service) continue;
      if (excludes(key, service)) {
        excluded.add(key);
        continue;
      }
      try {
        added.push(this.#one(key, service, inputs, undefined));
      } catch (error) {
        failures.push({ key, service, error });
        excluded.add(key);
      }
    }
    const gone = new Map<string, ServiceEntry>();
    for (const key of removed) {
      const entry = desired.services.get(key);
      if (entry) gone.set(key, entry);
    }
    const delta = applyServiceDelta(desired, inc.refs, removed, added, capabilities);
    if (!delta) return null;
    inc.excluded = excluded;
    return { desired, patched: { change: diffDelta(delta, desired), gone }, failures, fresh: added };
  }
}
