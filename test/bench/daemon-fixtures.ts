// Synthetic Services for the daemon benchmark: deterministic names, ClusterIPs and ports, as the
// typed Services a source hands the Reconciler, and as manifest files for `--services DIR`.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Namespace, Service, ServicePort } from '@slipstream/shared/core/service';

export const NAMESPACES = 100;

/**
 * Two port shapes, both offloaded by the default policy (two threshold chains in use):
 * even Services look like a database with a cache sidecar (5432 + 6379, threshold 20), odd ones
 * like a web app (http 8080 + tcp-metrics 9090, threshold 100).
 */
const PORTS: readonly (readonly ServicePort[])[] = [
  [
    { name: 'postgres', port: 5432, protocol: 'TCP' },
    { name: 'redis', port: 6379, protocol: 'TCP' },
  ],
  [
    { name: 'http', port: 8080, protocol: 'TCP' },
    { name: 'tcp-metrics', port: 9090, protocol: 'TCP' },
  ],
];

/** The i-th ClusterIP of 10.96.0.0/12, skipping .0 (i < 1,000,000). */
export function clusterIP(i: number): string {
  const n = i + 1;
  return `10.${96 + (n >>> 16)}.${(n >>> 8) & 255}.${n & 255}`;
}

export function namespaceOf(i: number): string {
  return `bench-${String(i % NAMESPACES).padStart(3, '0')}`;
}

export function serviceName(i: number): string {
  return `svc-${String(i).padStart(6, '0')}`;
}

/** The ports of Service i: `portsPerService` of them (1 or 2). */
export function portsOf(i: number, portsPerService: 1 | 2): ServicePort[] {
  return PORTS[i % 2]!.slice(0, portsPerService).map((p) => ({ ...p }));
}

export function service(i: number, portsPerService: 1 | 2 = 2): Service {
  return {
    namespace: namespaceOf(i),
    name: serviceName(i),
    uid: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    annotations: {},
    type: 'ClusterIP',
    clusterIPs: [clusterIP(i)],
    ports: portsOf(i, portsPerService),
  };
}

export function services(from: number, count: number, portsPerService: 1 | 2 = 2): Service[] {
  const out: Service[] = [];
  for (let i = from; i < from + count; i++) out.push(service(i, portsPerService));
  return out;
}

export function namespaces(): Map<string, Namespace> {
  const out = new Map<string, Namespace>();
  for (let i = 0; i < NAMESPACES; i++) out.set(namespaceOf(i), { name: namespaceOf(i), labels: {} });
  return out;
}

/** The map element keys of a Service (IPv4 ClusterIP, TCP or UDP ports). */
export function elementKeys(s: Service): { address: string; protocol: number; port: number }[] {
  return s.ports.map((p) => ({
    address: s.clusterIPs[0]!,
    protocol: p.protocol === 'UDP' ? 17 : 6,
    port: p.port,
  }));
}

function manifest(i: number, portsPerService: 1 | 2): string {
  const ports = portsOf(i, portsPerService)
    .map((p) => `    - name: ${p.name}\n      port: ${p.port}\n      protocol: ${p.protocol}`)
    .join('\n');
  return [
    'apiVersion: v1',
    'kind: Service',
    'metadata:',
    `  name: ${serviceName(i)}`,
    `  namespace: ${namespaceOf(i)}`,
    `  uid: 00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    'spec:',
    '  type: ClusterIP',
    `  clusterIP: ${clusterIP(i)}`,
    `  clusterIPs: [${clusterIP(i)}]`,
    '  ports:',
    ports,
  ].join('\n');
}

/**
 * Writes `count` Services as multi-document YAML, `perFile` per file (plus one file declaring the
 * Namespaces). Returns the number of bytes written.
 */
export function writeManifests(dir: string, count: number, perFile: number, portsPerService: 1 | 2): number {
  mkdirSync(dir, { recursive: true });
  let bytes = 0;
  const nsDocs: string[] = [];
  for (let i = 0; i < NAMESPACES; i++) {
    nsDocs.push(`apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${namespaceOf(i)}`);
  }
  const nsText = `${nsDocs.join('\n---\n')}\n`;
  writeFileSync(join(dir, '000-namespaces.yaml'), nsText);
  bytes += nsText.length;
  for (let from = 0, file = 1; from < count; from += perFile, file++) {
    const docs: string[] = [];
    for (let i = from; i < Math.min(count, from + perFile); i++) docs.push(manifest(i, portsPerService));
    const text = `${docs.join('\n---\n')}\n`;
    writeFileSync(join(dir, `services-${String(file).padStart(4, '0')}.yaml`), text);
    bytes += text.length;
  }
  return bytes;
}
