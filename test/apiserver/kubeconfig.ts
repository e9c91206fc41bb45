// A kubeconfig for the API server stand-in (or any server): one cluster, one token user, one
// context, as client-node's KubeConfig.loadFromFile reads it.

import { stringify } from 'yaml';
import type { Json } from './resources.ts';

export interface KubeconfigOptions {
  server: string;
  token?: string;
  /** PEM of the CA that signed the server's certificate (HTTPS only). */
  caPem?: string;
  /** Skip TLS verification (client-node also demands it for a plain http:// server). */
  insecureSkipTlsVerify?: boolean;
  name?: string;
}

/** A kubeconfig (YAML) with one cluster, one user (token) and one current context. */
export function kubeconfigYaml(options: KubeconfigOptions): string {
  const name = options.name ?? 'fake-apiserver';
  const cluster: Json = { server: options.server };
  if (options.caPem) cluster['certificate-authority-data'] = Buffer.from(options.caPem).toString('base64');
  if (options.insecureSkipTlsVerify || options.server.startsWith('http:'))
    cluster['insecure-skip-tls-verify'] = true;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name, cluster }],
    users: [{ name, user: options.token ? { token: options.token } : {} }],
    contexts: [{ name, context: { cluster: name, user: name } }],
    'current-context': name,
    preferences: {},
  });
}
