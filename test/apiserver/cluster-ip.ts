// ClusterIP allocation in the API server stand-in: from 10.96.0.0/16 (and fd00:10:96::/112 for
// PreferDualStack/RequireDualStack), kept on update and immutable once set, `None` for headless
// Services, nothing for ExternalName, as kube-apiserver's Service registry does it.

import { isRecord } from '@slipstream/shared/core/record';
import { child, type Json, str } from './resources.ts';
import { StatusError } from './status.ts';

export class Ipam {
  #v4 = 10; // 10.96.0.10 onwards (10.96.0.1 is the kubernetes Service, .10 kube-dns in real clusters)
  #v6 = 0x10;
  #nodePort = 30000;
  readonly used = new Set<string>();
  readonly usedNodePorts = new Set<number>();

  /** The next free nodePort of the default range (30000-32767). */
  nextNodePort(): number {
    for (;;) {
      const port = this.#nodePort++;
      if (this.#nodePort > 32767) this.#nodePort = 30000;
      if (!this.usedNodePorts.has(port)) {
        this.usedNodePorts.add(port);
        return port;
      }
    }
  }

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
/**
 * NodePorts, as the real server allocates them: for NodePort and LoadBalancer Services (unless
 * allocateLoadBalancerNodePorts is false), each port without one gets the next free port, and an
 * update keeps the ports it had.
 */
function allocateNodePorts(spec: Json, oldSpec: Json | undefined, ipam: Ipam): void {
  const wants =
    spec.type === 'NodePort' ||
    (spec.type === 'LoadBalancer' && spec.allocateLoadBalancerNodePorts !== false);
  if (!wants || !Array.isArray(spec.ports)) return;
  const oldPorts = oldSpec && Array.isArray(oldSpec.ports) ? oldSpec.ports.filter(isRecord) : [];
  for (const port of spec.ports) {
    if (!isRecord(port)) continue;
    if (typeof port.nodePort === 'number') {
      ipam.usedNodePorts.add(port.nodePort);
      continue;
    }
    const before = oldPorts.find(
      (o) => o.port === port.port && (o.protocol ?? 'TCP') === (port.protocol ?? 'TCP'),
    );
    port.nodePort = typeof before?.nodePort === 'number' ? before.nodePort : ipam.nextNodePort();
  }
}

export function allocate(object: Json, old: Json | undefined, ipam: Ipam): void {
  const spec = child(object, 'spec');
  allocateNodePorts(spec, old && isRecord(old.spec) ? old.spec : undefined, ipam);
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
