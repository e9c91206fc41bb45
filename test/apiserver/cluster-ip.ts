// ClusterIP allocation in the API server stand-in: from 10.96.0.0/16 (and fd00:10:96::/112 for
// PreferDualStack/RequireDualStack), kept on update and immutable once set, `None` for headless
// Services, nothing for ExternalName, as kube-apiserver's Service registry does it.

import { isRecord } from '@slipstream/shared/core/record';
import { child, type Json, str } from './resources.ts';
import { StatusError } from './status.ts';

export class Ipam {
  #v4 = 10; // 10.96.0.10 onwards (10.96.0.1 is the kubernetes Service, .10 kube-dns in real clusters)
  #v6 = 0x10;
  readonly used = new Set<string>();

  next(family: 'IPv4' | 'IPv6'): string {
    for (;;) {
      const ip =
        family === 'IPv4'
          ? `10.96.${(this.#v4 >> 8) & 0xff}.${this.#v4++ & 0xff}`
          : `fd00:10:96::${(this.#v6++ & 0xffff).toString(16)}`;
      if (!this.used.has(ip) && !ip.endsWith('.0') && !ip.endsWith('.255')) {
        this.used.add(ip);
        return ip;
      }
    }
  }
}

/** Fills in spec.clusterIP(s), ipFamilies and ipFamilyPolicy (`old`: the stored Service, on update). */
export function allocate(object: Json, old: Json | undefined, ipam: Ipam): void {
  const spec = child(object, 'spec');
  if (spec.type === 'ExternalName') {
    delete spec.clusterIP;
    delete spec.clusterIPs;
    return;
  }
  const oldSpec = old && isRecord(old.spec) ? old.spec : undefined;
  if (oldSpec && Array.isArray(oldSpec.clusterIPs)) {
    spec.clusterIP ??= oldSpec.clusterIP;
    spec.clusterIPs ??= oldSpec.clusterIPs;
    spec.ipFamilies ??= oldSpec.ipFamilies;
    spec.ipFamilyPolicy ??= oldSpec.ipFamilyPolicy;
    if (JSON.stringify(spec.clusterIPs) !== JSON.stringify(oldSpec.clusterIPs)) {
      const name = str(child(object, 'metadata').name) ?? '';
      throw new StatusError(
        422,
        'Invalid',
        `Service "${name}" is invalid: spec.clusterIPs[0]: Invalid value: ${JSON.stringify(spec.clusterIPs)}: may not change once set`,
        { name, kind: 'Service' },
      );
    }
    return;
  }
  if (spec.clusterIP === 'None' || (Array.isArray(spec.clusterIPs) && spec.clusterIPs[0] === 'None')) {
    spec.clusterIP = 'None';
    spec.clusterIPs = ['None'];
    spec.ipFamilyPolicy ??= 'SingleStack';
    spec.ipFamilies ??= ['IPv4'];
    return;
  }
  const dual = spec.ipFamilyPolicy === 'RequireDualStack' || spec.ipFamilyPolicy === 'PreferDualStack';
  spec.ipFamilyPolicy ??= 'SingleStack';
  let ips: string[];
  if (Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0) {
    ips = spec.clusterIPs.filter((ip): ip is string => typeof ip === 'string');
  } else if (typeof spec.clusterIP === 'string' && spec.clusterIP !== '') {
    ips = [spec.clusterIP];
  } else {
    ips = [];
  }
  const families = ips.map((ip) => (ip.includes(':') ? 'IPv6' : 'IPv4'));
  const wanted: ('IPv4' | 'IPv6')[] = Array.isArray(spec.ipFamilies)
    ? spec.ipFamilies.filter((f): f is 'IPv4' | 'IPv6' => f === 'IPv4' || f === 'IPv6')
    : families.length > 0
      ? (families as ('IPv4' | 'IPv6')[])
      : ['IPv4'];
  if (dual && wanted.length < 2) wanted.push(wanted[0] === 'IPv6' ? 'IPv4' : 'IPv6');
  for (const [i, family] of wanted.entries()) {
    if (ips[i] === undefined) ips[i] = ipam.next(family);
    else ipam.used.add(ips[i]);
  }
  spec.clusterIPs = ips;
  spec.clusterIP = ips[0];
  spec.ipFamilies = wanted;
}
