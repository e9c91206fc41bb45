// Test support: Kubernetes label-selector semantics (metav1.LabelSelector), for the API server
// stand-in's webhook matching and for checking the rendered manifests' selectors.

export interface LabelSelectorRequirement {
  key: string;
  /** In, NotIn, Exists or DoesNotExist; anything else is an error, as in the API server. */
  operator: string;
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

/** Every matchLabels pair and every requirement must hold; an absent or empty selector matches all. */
export function selectorMatches(
  selector: LabelSelector | undefined,
  labels: Record<string, string>,
): boolean {
  if (!selector) return true;
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) {
    if (labels[key] !== value) return false;
  }
  for (const r of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, r.key);
    const values = r.values ?? [];
    switch (r.operator) {
      case 'In':
        if (!has || !values.includes(labels[r.key]!)) return false;
        break;
      case 'NotIn':
        // A missing label satisfies NotIn.
        if (has && values.includes(labels[r.key]!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        throw new Error(`unknown label selector operator ${JSON.stringify(r.operator)}`);
    }
  }
  return true;
}
