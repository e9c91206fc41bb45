// The resources the API server stand-in serves, and the small helpers every part of it uses on
// their JSON.

import { isRecord } from '@slipstream/shared/core/record';

export type Json = Record<string, unknown>;
/** The resources that go through admission (`onAdmit`). */
export type ResourceName = 'services' | 'namespaces';
/** Every resource the server stores. */
export type StoredResource = ResourceName | 'secrets' | 'pods' | 'mutatingwebhookconfigurations';
export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface ResourceInfo {
  resource: StoredResource;
  kind: string;
  listKind: string;
  apiVersion: string;
  namespaced: boolean;
}

export const RESOURCES: Record<StoredResource, ResourceInfo> = {
  services: {
    resource: 'services',
    kind: 'Service',
    listKind: 'ServiceList',
    apiVersion: 'v1',
    namespaced: true,
  },
  namespaces: {
    resource: 'namespaces',
    kind: 'Namespace',
    listKind: 'NamespaceList',
    apiVersion: 'v1',
    namespaced: false,
  },
  secrets: {
    resource: 'secrets',
    kind: 'Secret',
    listKind: 'SecretList',
    apiVersion: 'v1',
    namespaced: true,
  },
  pods: {
    resource: 'pods',
    kind: 'Pod',
    listKind: 'PodList',
    apiVersion: 'v1',
    namespaced: true,
  },
  mutatingwebhookconfigurations: {
    resource: 'mutatingwebhookconfigurations',
    kind: 'MutatingWebhookConfiguration',
    listKind: 'MutatingWebhookConfigurationList',
    apiVersion: 'admissionregistration.k8s.io/v1',
    namespaced: false,
  },
};

/** The store's key of an object: `namespace/name`, or `name` for a cluster-scoped one. */
export function keyOf(namespace: string | undefined, name: string): string {
  return namespace === undefined ? name : `${namespace}/${name}`;
}

/** `parent[key]` as an object, made (and set) when it is not one. */
export function child(parent: Json, key: string): Json {
  const value = parent[key];
  if (isRecord(value)) return value;
  const made: Json = {};
  parent[key] = made;
  return made;
}

/** A non-empty string, or undefined. */
export function str(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

export function clone<T>(value: T): T {
  return structuredClone(value);
}

/** kube-apiserver's timestamps: RFC 3339, whole seconds. */
export function timestamp(ms = Date.now()): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}
