// Which links the flowtable hooks, and why every other link is left out. Pure: the link watcher
// (links.ts) lists the links, this module chooses, the loop writes the choice.
//
// A link is hooked when it is not loopback, its name can be written as nft text, it matches the
// include patterns (none given: every link) and no exclude pattern, and it is UP, or it was UP
// while this process watched it, or it was hooked before this process started (`adopt`).
//
// DOWN links stay hooked: the kernel itself tears down the flows through a link that goes DOWN,
// and a DOWN link receives nothing for its hook to look at, so unhooking it would buy nothing and
// cost a transaction at DOWN and another at UP. Identity is the ifindex, never the name: a link
// deleted and created again under the same name is a new link (the kernel dropped the old one's
// hook), DOWN until it comes UP.
//
// Patterns (in the spirit of Calico's interfaceExclude and KEP-4963's interface expression): a
// comma-separated list of names, where `*` matches any characters (`cali*`), or regular
// expressions between slashes (`/^veth[0-9a-f]+$/`).

import { validDeviceName } from '@slipstream/shared/core/ruleset';
import type { LinkInfo } from './links.ts';

export interface DevicePattern {
  /** As the operator wrote it (for reasons and status). */
  text: string;
  test(name: string): boolean;
}

export interface DeviceRules {
  /** None: every link. */
  include: DevicePattern[];
  exclude: DevicePattern[];
}

export const NO_RULES: DeviceRules = { include: [], exclude: [] };

export interface ExcludedDevice {
  name: string;
  reason: string;
}

export interface DeviceChoice {
  /** The names the flowtable should hook (sorted, unique). */
  hooked: string[];
  /** Every other link, with the reason (sorted by name). */
  excluded: ExcludedDevice[];
}

function globRegExp(glob: string): RegExp {
  const body = glob
    .split('*')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
    .join('.*');
  return new RegExp(`^${body}$`);
}

/** Parses one flag's value; throws with the reason (the caller names the flag). An empty value: no patterns. */
export function parseDevicePatterns(value: string): DevicePattern[] {
  if (value.trim() === '') return [];
  const entries = value.split(',').map((e) => e.trim());
  return entries.map((text, i) => {
    const where = `entry ${i + 1} of ${entries.length}`;
    if (text === '') throw new Error(`${where} is empty`);
    if (text.length >= 2 && text.startsWith('/') && text.endsWith('/')) {
      let re: RegExp;
      try {
        re = new RegExp(text.slice(1, -1));
      } catch (error) {
        throw new Error(`${where} (${text}) is not a regular expression: ${(error as Error).message}`);
      }
      return { text, test: (name: string) => re.test(name) };
    }
    if (text.includes('/')) {
      throw new Error(`${where} (${text}): a regular expression goes between two slashes, like /^veth/`);
    }
    if (!validDeviceName(text.replaceAll('*', 'x'))) {
      throw new Error(
        `${where} (${text}) cannot be an interface name (1-15 characters, no spaces, quotes or ':')`,
      );
    }
    const re = globRegExp(text);
    return { text, test: (name: string) => re.test(name) };
  });
}

function identity(link: LinkInfo): number | string {
  return link.index > 0 ? link.index : `name:${link.name}`;
}

/**
 * The choice, remembering which links have been UP (by ifindex): one per daemon, fed every
 * listing of the links.
 */
export class DeviceSelector {
  readonly #rules: DeviceRules;
  readonly #wasUp = new Set<number | string>();

  constructor(rules: DeviceRules = NO_RULES) {
    this.#rules = rules;
  }

  get rules(): DeviceRules {
    return this.#rules;
  }

  /** Links the flowtable hooked before this process started (the kernel's list) count as having been UP. */
  adopt(hooked: Iterable<string>, links: readonly LinkInfo[]): void {
    const names = new Set(hooked);
    for (const link of links) if (names.has(link.name)) this.#wasUp.add(identity(link));
  }

  select(links: readonly LinkInfo[]): DeviceChoice {
    const present = new Set<number | string>();
    const hooked = new Set<string>();
    const excluded: ExcludedDevice[] = [];
    for (const link of links) {
      const id = identity(link);
      present.add(id);
      if (link.up) this.#wasUp.add(id);
      const reason = this.#reason(link, this.#wasUp.has(id));
      if (reason === null) hooked.add(link.name);
      else excluded.push({ name: link.name, reason });
    }
    // A deleted link is forgotten: its ifindex, if ever reused, is another link.
    for (const id of this.#wasUp) if (!present.has(id)) this.#wasUp.delete(id);
    excluded.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { hooked: [...hooked].sort(), excluded };
  }

  #reason(link: LinkInfo, wasUp: boolean): string | null {
    if (link.loopback) return 'loopback: forwarded traffic never enters through it';
    if (!validDeviceName(link.name)) return 'its name cannot be written as nft text';
    const { include, exclude } = this.#rules;
    if (include.length > 0 && !include.some((p) => p.test(link.name))) {
      return `not matched by --flowtable-include ${include.map((p) => p.text).join(',')}`;
    }
    const out = exclude.find((p) => p.test(link.name));
    if (out) return `matched by --flowtable-exclude ${out.text}`;
    if (!link.up && !wasUp) return 'DOWN: hooked once it comes UP';
    return null;
  }
}
