// The MutatingWebhookConfiguration's side of the TLS bootstrap, pure: what its caBundles trust
// (for plan() in bootstrap-plan.ts), and the JSON Patch that makes every webhook's caBundle the
// Secret's CAs. The patch's first operation tests metadata.resourceVersion, so a concurrent
// writer makes it fail (422) instead of being overwritten, and it records in an annotation which
// Secret generation it came from, so that a replica holding an older Secret never writes an
// older caBundle over a newer one.

import type { V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import fastJsonPatch from 'fast-json-patch';
import type { JsonPatchOperation } from './admission.ts';
import { ANNOTATIONS, type BundleView, fingerprints, formatTime } from './bootstrap-plan.ts';

/** The Secret a caBundle was written from: its uid and generation (`uid/generation`). */
export interface BundleSource {
  uid: string;
  generation: number;
}

export function parseSource(value: string | undefined): BundleSource | undefined {
  const match = /^(.+)\/([0-9]+)$/.exec(value ?? '');
  return match ? { uid: match[1]!, generation: Number(match[2]) } : undefined;
}

/** What the configuration's caBundles trust: the CAs that every webhook's caBundle contains. */
export function bundleView(config: V1MutatingWebhookConfiguration | undefined): BundleView {
  const webhooks = config?.webhooks ?? [];
  if (!config || webhooks.length === 0) return { exists: false, trusted: new Set() };
  let trusted: Set<string> | undefined;
  for (const webhook of webhooks) {
    const cas = fingerprints(Buffer.from(webhook.clientConfig?.caBundle ?? '', 'base64').toString('utf8'));
    trusted = trusted ? new Set([...trusted].filter((f) => cas.has(f))) : cas;
  }
  const view: BundleView = { exists: true, trusted: trusted ?? new Set() };
  const annotations = config.metadata?.annotations ?? {};
  const since = Date.parse(annotations[ANNOTATIONS.bundleSince] ?? '');
  if (!Number.isNaN(since)) view.since = since;
  const source = parseSource(annotations[ANNOTATIONS.bundleSource]);
  if (source) view.source = source;
  return view;
}

/** A caBundle view that lets nothing be promoted: used when the configuration cannot be read. */
export const UNKNOWN_BUNDLE: BundleView = { exists: true, trusted: new Set() };

export type BundlePatch =
  /** Nothing to write: the caBundles and the annotations are already right. */
  | { kind: 'none' }
  /** Written from a newer Secret than ours: leave it (the next pass reads that Secret). */
  | { kind: 'newer' }
  /** `contentChanged`: a caBundle changes (else only the source annotation is brought up to date). */
  | { kind: 'patch'; ops: JsonPatchOperation[]; contentChanged: boolean };

/** The patch that makes every webhook's caBundle `caPem`, written from `source`, at `now`. */
export function bundlePatch(
  config: V1MutatingWebhookConfiguration,
  caPem: string,
  source: BundleSource,
  now: number,
): BundlePatch {
  const annotations = config.metadata?.annotations ?? {};
  const current = parseSource(annotations[ANNOTATIONS.bundleSource]);
  if (current && current.uid === source.uid && current.generation > source.generation)
    return { kind: 'newer' };
  const desired = Buffer.from(caPem, 'utf8').toString('base64');
  const wantSource = `${source.uid}/${source.generation}`;
  const ops: JsonPatchOperation[] = [
    { op: 'test', path: '/metadata/resourceVersion', value: config.metadata?.resourceVersion },
  ];
  (config.webhooks ?? []).forEach((webhook, i) => {
    if (webhook.clientConfig?.caBundle !== desired) {
      ops.push({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: desired });
    }
  });
  const contentChanged = ops.length > 1;
  const since = contentChanged ? undefined : annotations[ANNOTATIONS.bundleSince];
  if (!contentChanged && annotations[ANNOTATIONS.bundleSource] === wantSource && since)
    return { kind: 'none' };
  const wanted = {
    [ANNOTATIONS.bundleSource]: wantSource,
    [ANNOTATIONS.bundleSince]: since ?? formatTime(now),
  };
  if (!config.metadata?.annotations) ops.push({ op: 'add', path: '/metadata/annotations', value: wanted });
  else {
    for (const [key, value] of Object.entries(wanted)) {
      ops.push({ op: 'add', path: `/metadata/annotations/${fastJsonPatch.escapePathComponent(key)}`, value });
    }
  }
  return { kind: 'patch', ops, contentChanged };
}
