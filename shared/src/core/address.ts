// IP addresses as Slipstream reads them from Services and from the kernel's listing: strictly
// validated and put in the canonical text the kernel prints (inet_ntop), so that keys compare as
// strings. Pure (no node:net): the core must not depend on I/O modules.

export type Family = 'ip' | 'ip6';

const OCTET = '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);

/** A dotted-quad IPv4 address, no leading zeros (the form Kubernetes and the kernel print). */
export function isIPv4(text: string): boolean {
  return IPV4.test(text);
}

/** An IPv6 address without zone index (`fe80::1%eth0` is not). */
export function isIPv6(text: string): boolean {
  return parseIPv6Words(text) !== null;
}

/** RFC 5952 / inet_ntop text of 8 16-bit words (glibc's rules: IPv4-mapped/compatible tail in dotted form). */
function formatIPv6(words: readonly number[]): string {
  let bestBase = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestBase = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) bestBase = -1;
  const hex = (w: number) => w.toString(16);
  const dotted = (hi: number, lo: number) => `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      out += dotted(words[6]!, words[7]!);
      return out;
    }
    out += hex(words[i]!);
  }
  if (bestBase !== -1 && bestBase + bestLen === 8) out += ':';
  return out;
}

function parseIPv6Words(text: string): number[] | null {
  let head = text;
  let v4: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    if (!isIPv4(tail)) return null;
    const o = tail.split('.').map(Number) as [number, number, number, number];
    v4 = [(o[0] << 8) | o[1], (o[2] << 8) | o[3]];
    head = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const parseGroups = (part: string) => (part === '' ? [] : part.split(':'));
  const halves = head.split('::');
  if (halves.length > 2) return null;
  const left = parseGroups(halves[0]!);
  const right = halves.length === 2 ? parseGroups(halves[1]!) : [];
  const fill = 8 - left.length - right.length;
  if (halves.length === 2 ? fill < 1 : fill !== 0) return null;
  const groups = [...left, ...Array<string>(halves.length === 2 ? fill : 0).fill('0'), ...right];
  const words: number[] = [];
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    words.push(Number.parseInt(g, 16));
  }
  if (v4.length === 2) words.splice(6, 2, ...v4);
  return words.length === 8 ? words : null;
}

/**
 * An address's bytes in network order (4 for IPv4, 16 for IPv6), as the kernel keys it; null when
 * `text` is not an address of `family`.
 */
export function addressBytes(family: Family, text: string): Uint8Array | null {
  if (family === 'ip') return isIPv4(text) ? Uint8Array.from(text.split('.'), Number) : null;
  const words = parseIPv6Words(text);
  if (!words) return null;
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

export type AddressResult = { ok: true; family: Family; address: string } | { ok: false; reason: string };

/**
 * Validates an address and returns its family and canonical text (IPv6 compressed and lowercased
 * exactly as the kernel's listing prints it, so that keys compare as strings).
 */
export function canonicalAddress(raw: string): AddressResult {
  if (isIPv4(raw)) return { ok: true, family: 'ip', address: raw };
  if (raw.includes('%')) return { ok: false, reason: 'an IPv6 address with a zone index is not a ClusterIP' };
  const words = parseIPv6Words(raw);
  if (words) return { ok: true, family: 'ip6', address: formatIPv6(words) };
  return { ok: false, reason: 'not an IPv4 or IPv6 address' };
}
