// The link source: lists links with `ip -json link show` and watches `ip monitor link`
// (iproute2 6.1 prints text there even with -json, so every line only means "something
// changed": re-list, debounced). Works in a named network namespace (`ip -n NAME ...`).
//
// It reports the links themselves, each with its ifindex and whether it is administratively UP
// (IFF_UP; carrier is not asked for: a veth whose peer is still coming up can be hooked already);
// which of them the flowtable hooks is devices.ts's choice. A link deleted and created again
// under the same name, however fast (one `ip -batch`), is a change: its ifindex differs.

import { isRecord } from '@slipstream/shared/core/record';
import { IpMonitor, ipJson, jsonArray, type WatcherOptions, watching } from './ip-monitor.ts';

export interface LinkInfo {
  name: string;
  index: number;
  up: boolean;
  loopback: boolean;
  operstate?: string;
  linkType?: string;
}

/** Parses `ip -json link show` output. Unknown shapes are skipped, never thrown on. */
export function parseLinks(output: string): LinkInfo[] {
  const links: LinkInfo[] = [];
  for (const raw of jsonArray(output)) {
    if (!isRecord(raw) || typeof raw.ifname !== 'string') continue;
    const flags = Array.isArray(raw.flags) ? raw.flags.filter((f): f is string => typeof f === 'string') : [];
    const link: LinkInfo = {
      name: raw.ifname,
      index: typeof raw.ifindex === 'number' ? raw.ifindex : 0,
      up: flags.includes('UP'),
      loopback: flags.includes('LOOPBACK') || raw.link_type === 'loopback',
    };
    if (typeof raw.operstate === 'string') link.operstate = raw.operstate;
    if (typeof raw.link_type === 'string') link.linkType = raw.link_type;
    links.push(link);
  }
  return links;
}

/** What a change of links is compared on: which links exist (by ifindex and name) and which are UP. */
function fingerprint(links: readonly LinkInfo[]): string {
  return links
    .map((l) => `${l.index}:${l.name}:${l.up ? 1 : 0}${l.loopback ? 'L' : ''}`)
    .sort()
    .join('\n');
}

/** `ip [-n NS] -json link show`, parsed. */
export function listLinks(netns?: string): Promise<LinkInfo[]> {
  return ipJson(netns, ['link', 'show']).then(parseLinks);
}

/** Follows the links (onChange when a link appears, goes, is re-created or goes UP or DOWN); `start()` resolves with the first list. */
export class LinkWatcher extends IpMonitor<LinkInfo[]> {
  constructor(options: WatcherOptions<LinkInfo[]>) {
    super(watching(options, 'link', listLinks, (a, b) => fingerprint(a) === fingerprint(b)));
  }

  get links(): LinkInfo[] {
    return this.state ?? [];
  }
}
