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

/**
 * The query-string form (`labelSelector=`): `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
 * `k` and `!k`, joined by commas, as the API server parses it (labels.Parse). An error for
 * anything else, which the server answers with 400.
 */
export function parseLabelSelector(text: string): LabelSelector {
  const requirements: LabelSelectorRequirement[] = [];
  // Commas separate requirements except inside a set's parentheses.
  const terms = text.match(/[^,(]+(?:\([^)]*\))?/g) ?? [];
  for (const raw of terms) {
    const term = raw.trim();
    if (term === '') continue;
    const equality = /^([^\s!=()]+)\s*(==?|!=)\s*([^\s!=(),]*)$/.exec(term);
    const set = /^([^\s!=()]+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term);
    const exists = /^(!?)([^\s!=(),]+)$/.exec(term);
    if (equality) {
      requirements.push({
        key: equality[1]!,
        operator: equality[2] === '!=' ? 'NotIn' : 'In',
        values: [equality[3]!],
      });
    } else if (set) {
      const values = set[3]!
        .split(',')
        .map((v) => v.trim())
        .filter((v) => v !== '');
      requirements.push({ key: set[1]!, operator: set[2] === 'in' ? 'In' : 'NotIn', values });
    } else if (exists) {
      requirements.push({ key: exists[2]!, operator: exists[1] ? 'DoesNotExist' : 'Exists' });
    } else {
      throw new Error(`unable to parse requirement: ${JSON.stringify(term)}`);
    }
  }
  return { matchExpressions: requirements };
}
