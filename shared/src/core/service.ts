// The slice of a Kubernetes Service (and Namespace) that Slipstream reads, read defensively:
// these objects arrive from admission requests, manifests on disk and the API server, so
// nothing about their shape is trusted until `readService` has checked it.

import { isRecord } from './record.ts';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface ServicePort {
  name?: string;
  port: number;
  protocol: Protocol;
  appProtocol?: string;
  /** spec.ports[].nodePort (NodePort and LoadBalancer Services): the port on every node address. */
  nodePort?: number;
}

export interface Service {
  namespace: string;
  name: string;
  uid?: string;
  annotations: Record<string, string>;
  type: string;
  /** Every ClusterIP of the Service (dual-stack: one per family); empty when it has none. */
  clusterIPs: string[];
  /** Why the Service has no ClusterIP, when it has none. */
  noClusterIPReason?: string;
  /** spec.ipFamilies, when set (an address of another family is refused, naming it). */
  ipFamilies?: ('IPv4' | 'IPv6')[];
  /** spec.externalIPs: addresses this node forwards to the Service (kube-proxy DNATs them). */
  externalIPs?: string[];
  /** status.loadBalancer.ingress[].ip: the load balancer's addresses (hostnames have none). */
  loadBalancerIPs?: string[];
  /** spec.externalTrafficPolicy (NodePort and LoadBalancer traffic). */
  externalTrafficPolicy?: 'Cluster' | 'Local';
  ports: ServicePort[];
}

export interface Namespace {
  name: string;
  labels: Record<string, string>;
}

/** The protocols as constants: a port holds one of these, not a copy of its input's string. */
const PROTOCOLS: ReadonlyMap<string, Protocol> = new Map([
  ['TCP', 'TCP'],
  ['UDP', 'UDP'],
  ['SCTP', 'SCTP'],
]);
/** The usual spec.type values, likewise. */
const TYPES: ReadonlyMap<string, string> = new Map(
  ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'].map((t) => [t, t]),
);

/** The annotations of the many Services that have none: one shared, frozen object. */
const NO_ANNOTATIONS: Record<string, string> = Object.freeze({}) as Record<string, string>;

function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!isRecord(value)) return out;
  for (const [key, v] of Object.entries(value)) if (typeof v === 'string') out[key] = v;
  return out;
}

function annotationsOf(value: unknown): Record<string, string> {
  const out = stringMap(value);
  for (const _ in out) return out;
  return NO_ANNOTATIONS;
}

/**
 * A port as one object literal per set of its optional fields (a property added after the
 * literal would go to a separately allocated property array); fields in `readService`'s order.
 */
function newPort(
  port: number,
  protocol: Protocol,
  nodePort: number | undefined,
  name: string | undefined,
  appProtocol: string | undefined,
): ServicePort {
  let out: ServicePort;
  if (nodePort === undefined) out = name === undefined ? { port, protocol } : { port, protocol, name };
  else out = name === undefined ? { port, protocol, nodePort } : { port, protocol, nodePort, name };
  if (appProtocol !== undefined) out.appProtocol = appProtocol;
  return out;
}

/** A Service record of one shape: `uid` in the literal, the rarer fields added after it. */
function newService(
  namespace: string,
  name: string,
  uid: string | undefined,
  annotations: Record<string, string>,
  type: string,
  ports: ServicePort[],
): Service {
  return uid === undefined
    ? { namespace, name, annotations, type, clusterIPs: [], ports }
    : { namespace, name, annotations, type, clusterIPs: [], ports, uid };
}

/**
 * `namespace/name`: how a Service is keyed everywhere (stores, diffs, logs). Joined, as one flat
 * string: a template's cons string, once hashed as a map key, is kept beside its flat copy.
 */
export function serviceKey(s: Pick<Service, 'namespace' | 'name'>): string {
  return [s.namespace, s.name].join('/');
}

/** The namespace and name of a `serviceKey` (names have no `/`: the first one splits). */
export function splitServiceKey(key: string): { namespace: string; name: string } {
  const i = key.indexOf('/');
  return { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

export type ReadResult<T> = { ok: true; value: T } | { ok: false; error: string };

/** Reads a Service object; ports with an invalid number or protocol are an error, not silently dropped. */
export function readService(object: unknown): ReadResult<Service> {
  if (!isRecord(object)) return { ok: false, error: 'Service is not an object' };
  const metadata = isRecord(object.metadata) ? object.metadata : {};
  const spec = isRecord(object.spec) ? object.spec : {};
  const name = typeof metadata.name === 'string' ? metadata.name : '';
  const namespace = typeof metadata.namespace === 'string' ? metadata.namespace : 'default';
  const type = typeof spec.type === 'string' ? spec.type : 'ClusterIP';

  const rawPorts = spec.ports ?? [];
  if (!Array.isArray(rawPorts)) return { ok: false, error: 'spec.ports is not a list' };
  const ports: ServicePort[] = [];
  for (const [i, raw] of rawPorts.entries()) {
    if (!isRecord(raw)) return { ok: false, error: `spec.ports[${i}] is not an object` };
    const port = raw.port;
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
      return { ok: false, error: `spec.ports[${i}].port is not a port number (1-65535)` };
    }
    const given = raw.protocol ?? 'TCP';
    const protocol = typeof given === 'string' ? PROTOCOLS.get(given) : undefined;
    if (protocol === undefined) {
      return { ok: false, error: `spec.ports[${i}].protocol must be TCP, UDP or SCTP` };
    }
    const nodePort =
      typeof raw.nodePort === 'number' &&
      Number.isInteger(raw.nodePort) &&
      raw.nodePort >= 1 &&
      raw.nodePort <= 65535
        ? raw.nodePort
        : undefined;
    const portName = typeof raw.name === 'string' && raw.name !== '' ? raw.name : undefined;
    const appProtocol =
      typeof raw.appProtocol === 'string' && raw.appProtocol !== '' ? raw.appProtocol : undefined;
    ports.push(newPort(port, protocol, nodePort, portName, appProtocol));
  }

  const service = newService(
    namespace,
    name,
    typeof metadata.uid === 'string' ? metadata.uid : undefined,
    annotationsOf(metadata.annotations),
    TYPES.get(type) ?? type,
    ports,
  );
  const strings = (v: unknown) =>
    Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string' && x !== '') : [];
  const externalIPs = strings(spec.externalIPs);
  if (externalIPs.length > 0) service.externalIPs = externalIPs;
  const status = isRecord(object.status) ? object.status : {};
  const lb = isRecord(status.loadBalancer) ? status.loadBalancer : {};
  const ingress = Array.isArray(lb.ingress) ? lb.ingress : [];
  // An ingress with ipMode Proxy delivers to the nodes (their nodePort), not to this address.
  const lbIPs = ingress
    .filter((i): i is Record<string, unknown> => isRecord(i) && i.ipMode !== 'Proxy')
    .map((i) => i.ip)
    .filter((ip): ip is string => typeof ip === 'string' && ip !== '');
  if (lbIPs.length > 0) service.loadBalancerIPs = lbIPs;
  if (spec.externalTrafficPolicy === 'Local' || spec.externalTrafficPolicy === 'Cluster') {
    service.externalTrafficPolicy = spec.externalTrafficPolicy;
  }
  if (Array.isArray(spec.ipFamilies)) {
    const families = spec.ipFamilies.filter((f): f is 'IPv4' | 'IPv6' => f === 'IPv4' || f === 'IPv6');
    if (families.length > 0) service.ipFamilies = families;
  }

  if (type === 'ExternalName') {
    service.noClusterIPReason = 'ExternalName Service has no ClusterIP';
  } else if (spec.clusterIP === 'None' || (Array.isArray(spec.clusterIPs) && spec.clusterIPs[0] === 'None')) {
    service.noClusterIPReason = 'headless Service (clusterIP: None) has no ClusterIP';
  } else {
    const ips = Array.isArray(spec.clusterIPs) ? spec.clusterIPs : [spec.clusterIP];
    // Addresses are kept as given here; the daemon validates them before they reach the kernel.
    service.clusterIPs = ips.filter((ip): ip is string => typeof ip === 'string' && ip !== '');
  }
  return { ok: true, value: service };
}

/**
 * The same Service with its repeated strings (namespace, type, port names and app protocols,
 * annotation keys and values) taken from `intern`, so that the Services of one source share one
 * copy of each; the record in `readService`'s shape. `service` is not modified.
 */
export function internedService(service: Service, intern: (text: string) => string): Service {
  let annotations = NO_ANNOTATIONS;
  for (const [key, value] of Object.entries(service.annotations)) {
    if (annotations === NO_ANNOTATIONS) annotations = {};
    annotations[intern(key)] = intern(value);
  }
  const ports = service.ports.map((p) =>
    newPort(
      p.port,
      PROTOCOLS.get(p.protocol) ?? p.protocol,
      p.nodePort,
      p.name === undefined ? undefined : intern(p.name),
      p.appProtocol === undefined ? undefined : intern(p.appProtocol),
    ),
  );
  const out = newService(
    intern(service.namespace),
    service.name,
    service.uid,
    annotations,
    TYPES.get(service.type) ?? intern(service.type),
    ports,
  );
  out.clusterIPs = service.clusterIPs;
  // The rarer fields, as they are and in their order.
  const rest = out as unknown as Record<string, unknown>;
  for (const [key, value] of Object.entries(service)) if (!(key in out)) rest[key] = value;
  return out;
}

export function readNamespace(object: unknown): ReadResult<Namespace> {
  if (!isRecord(object)) return { ok: false, error: 'Namespace is not an object' };
  const metadata = isRecord(object.metadata) ? object.metadata : {};
  if (typeof metadata.name !== 'string' || metadata.name === '') {
    return { ok: false, error: 'Namespace has no metadata.name' };
  }
  return { ok: true, value: { name: metadata.name, labels: stringMap(metadata.labels) } };
}

export function portKey(port: { port: number; protocol: Protocol }): string {
  return `${port.port}/${port.protocol}`;
}
