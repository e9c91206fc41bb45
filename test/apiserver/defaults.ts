// Per-kind defaults and validation in the API server stand-in: what kube-apiserver's registry
// strategies do to a Service, Namespace, Secret or MutatingWebhookConfiguration before it is
// stored (defaulted fields, 422 Invalid with a cause naming the field, 400 for data that does not
// decode). ClusterIP allocation is in cluster-ip.ts.

import { isRecord } from '@slipstream/shared/core/record';
import { child, type Json, type StoredResource, str, timestamp } from './resources.ts';
import { StatusError } from './status.ts';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function isBase64(value: unknown): value is string {
  return typeof value === 'string' && value.length % 4 === 0 && BASE64.test(value);
}

/** The object with the server-side defaults of its kind (modified in place and returned). */
export function defaulted(resource: StoredResource, object: Json): Json {
  switch (resource) {
    case 'services':
      return defaultService(object);
    case 'namespaces':
      return defaultNamespace(object);
    case 'secrets':
      return defaultSecret(object);
    case 'pods':
      return defaultPod(object);
    case 'mutatingwebhookconfigurations':
      return defaultWebhookConfiguration(object);
  }
}

/** Throws the StatusError the real server answers for an invalid object (`old`: the stored one, on update). */
export function validate(resource: StoredResource, object: Json, old: Json | undefined): void {
  if (resource === 'services') validateService(object);
  else if (resource === 'secrets') validateSecret(object, old);
  else if (resource === 'mutatingwebhookconfigurations') validateWebhookConfiguration(object);
}

/** Pods are written by the tests only (as the scheduler and kubelet would): kind and a phase. */
export function defaultPod(object: Json): Json {
  object.apiVersion = 'v1';
  object.kind = 'Pod';
  const status = child(object, 'status');
  if (!str(status.phase)) status.phase = 'Pending';
  return object;
}

export function defaultSecret(object: Json): Json {
  object.apiVersion = 'v1';
  object.kind = 'Secret';
  if (!str(object.type)) object.type = 'Opaque';
  if (object.data !== undefined && object.data !== null && !isRecord(object.data)) {
    throw new StatusError(400, 'BadRequest', 'Secret in version "v1" cannot be handled: data must be a map');
  }
  // stringData is write-only: merged into data (winning over it), never stored.
  if (isRecord(object.stringData)) {
    const data = child(object, 'data');
    for (const [key, value] of Object.entries(object.stringData)) {
      data[key] = Buffer.from(String(value), 'utf8').toString('base64');
    }
  }
  delete object.stringData;
  return object;
}

export function validateSecret(object: Json, old: Json | undefined): void {
  const name = str(child(object, 'metadata').name) ?? '';
  const invalid = (field: string, message: string): StatusError =>
    new StatusError(422, 'Invalid', `Secret "${name}" is invalid: ${field}: ${message}`, {
      name,
      kind: 'Secret',
      causes: [{ reason: 'FieldValueInvalid', message, field }],
    });
  if (old && old.type !== object.type) {
    throw invalid('type', `Invalid value: "${String(object.type)}": field is immutable`);
  }
  const data = isRecord(object.data) ? object.data : {};
  let size = 0;
  for (const [key, value] of Object.entries(data)) {
    // data values are []byte: JSON carries them base64-encoded, and anything else fails to decode.
    if (!isBase64(value)) {
      throw new StatusError(
        400,
        'BadRequest',
        `Secret in version "v1" cannot be handled: illegal base64 data in data[${key}]`,
      );
    }
    if (!/^[-._a-zA-Z0-9]+$/.test(key)) {
      throw invalid(
        `data[${key}]`,
        `Invalid value: "${key}": a valid config key must consist of alphanumeric characters, '-', '_' or '.'`,
      );
    }
    size += Buffer.from(value, 'base64').length;
  }
  if (size > 1024 * 1024) throw invalid('data', 'Too long: must have at most 1048576 bytes');
  if (object.type === 'kubernetes.io/tls') {
    for (const key of ['tls.crt', 'tls.key']) {
      if (data[key] === undefined) throw invalid(`data[${key}]`, 'Required value');
    }
  }
}

export function defaultWebhookConfiguration(object: Json): Json {
  object.apiVersion = 'admissionregistration.k8s.io/v1';
  object.kind = 'MutatingWebhookConfiguration';
  if (Array.isArray(object.webhooks)) {
    for (const webhook of object.webhooks) {
      if (!isRecord(webhook)) continue;
      webhook.failurePolicy ??= 'Fail';
      webhook.matchPolicy ??= 'Equivalent';
      webhook.namespaceSelector ??= {};
      webhook.objectSelector ??= {};
      webhook.timeoutSeconds ??= 10;
      webhook.reinvocationPolicy ??= 'Never';
      const config = isRecord(webhook.clientConfig) ? webhook.clientConfig : undefined;
      if (config && isRecord(config.service)) config.service.port ??= 443;
    }
  }
  return object;
}

export function validateWebhookConfiguration(object: Json): void {
  const name = str(child(object, 'metadata').name) ?? '';
  const invalid = (field: string, message: string): StatusError =>
    new StatusError(
      422,
      'Invalid',
      `MutatingWebhookConfiguration.admissionregistration.k8s.io "${name}" is invalid: ${field}: ${message}`,
      {
        name,
        group: 'admissionregistration.k8s.io',
        kind: 'MutatingWebhookConfiguration',
        causes: [{ reason: 'FieldValueInvalid', message, field }],
      },
    );
  const webhooks = object.webhooks ?? [];
  if (!Array.isArray(webhooks)) throw invalid('webhooks', 'must be a list');
  const names = new Set<string>();
  for (const [i, webhook] of webhooks.entries()) {
    const at = `webhooks[${i}]`;
    if (!isRecord(webhook)) throw invalid(at, 'must be an object');
    const hookName = str(webhook.name);
    if (!hookName) throw invalid(`${at}.name`, 'Required value');
    if (!hookName.includes('.'))
      throw invalid(
        `${at}.name`,
        `Invalid value: "${hookName}": should be a domain with at least three segments separated by dots`,
      );
    if (names.has(hookName)) throw invalid(`${at}.name`, `Duplicate value: "${hookName}"`);
    names.add(hookName);
    const config = webhook.clientConfig;
    if (!isRecord(config)) throw invalid(`${at}.clientConfig`, 'Required value');
    if ((config.url === undefined) === (config.service === undefined)) {
      throw invalid(`${at}.clientConfig`, 'Required value: exactly one of url or service is required');
    }
    if (config.caBundle !== undefined && !isBase64(config.caBundle)) {
      throw new StatusError(
        400,
        'BadRequest',
        `MutatingWebhookConfiguration in version "v1" cannot be handled: illegal base64 data in ${at}.clientConfig.caBundle`,
      );
    }
    if (!Array.isArray(webhook.admissionReviewVersions) || webhook.admissionReviewVersions.length === 0) {
      throw invalid(`${at}.admissionReviewVersions`, 'Required value: must specify one of v1, v1beta1');
    }
    if (webhook.sideEffects !== 'None' && webhook.sideEffects !== 'NoneOnDryRun') {
      throw invalid(
        `${at}.sideEffects`,
        `Unsupported value: ${JSON.stringify(webhook.sideEffects)}: supported values: "None", "NoneOnDryRun"`,
      );
    }
  }
}

export function defaultNamespace(object: Json): Json {
  const metadata = child(object, 'metadata');
  const name = str(metadata.name) ?? '';
  object.apiVersion = 'v1';
  object.kind = 'Namespace';
  const labels = child(metadata, 'labels');
  labels['kubernetes.io/metadata.name'] = name;
  const spec = child(object, 'spec');
  spec.finalizers ??= ['kubernetes'];
  return object;
}

export function defaultService(object: Json): Json {
  object.apiVersion = 'v1';
  object.kind = 'Service';
  const spec = child(object, 'spec');
  spec.type ??= 'ClusterIP';
  if (spec.type !== 'ExternalName') {
    spec.sessionAffinity ??= 'None';
    spec.internalTrafficPolicy ??= 'Cluster';
  }
  if (Array.isArray(spec.ports)) {
    for (const port of spec.ports) {
      if (!isRecord(port)) continue;
      port.protocol ??= 'TCP';
      if (port.targetPort === undefined && spec.type !== 'ExternalName') port.targetPort = port.port;
    }
  }
  return object;
}

export function validateService(object: Json): void {
  const spec = child(object, 'spec');
  const invalid = (field: string, message: string): StatusError => {
    const name = str(child(object, 'metadata').name) ?? '';
    return new StatusError(422, 'Invalid', `Service "${name}" is invalid: ${field}: ${message}`, {
      name,
      kind: 'Service',
      causes: [{ reason: 'FieldValueInvalid', message, field }],
    });
  };
  const types = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'];
  if (typeof spec.type !== 'string' || !types.includes(spec.type)) {
    throw invalid('spec.type', `Unsupported value: ${JSON.stringify(spec.type)}`);
  }
  if (spec.type === 'ExternalName' && !str(spec.externalName))
    throw invalid('spec.externalName', 'Required value');
  const ports = spec.ports ?? [];
  if (!Array.isArray(ports)) throw invalid('spec.ports', 'must be a list');
  if (ports.length === 0 && spec.type !== 'ExternalName' && spec.clusterIP !== 'None') {
    throw invalid('spec.ports', 'Required value');
  }
  const names = new Set<string>();
  for (const [i, port] of ports.entries()) {
    if (!isRecord(port)) throw invalid(`spec.ports[${i}]`, 'must be an object');
    if (typeof port.port !== 'number' || !Number.isInteger(port.port) || port.port < 1 || port.port > 65535) {
      throw invalid(`spec.ports[${i}].port`, 'must be between 1 and 65535, inclusive');
    }
    if (!['TCP', 'UDP', 'SCTP'].includes(String(port.protocol))) {
      throw invalid(`spec.ports[${i}].protocol`, `Unsupported value: ${JSON.stringify(port.protocol)}`);
    }
    if (ports.length > 1) {
      const name = str(port.name);
      if (!name) throw invalid(`spec.ports[${i}].name`, 'Required value');
      else if (names.has(name)) throw invalid(`spec.ports[${i}].name`, `Duplicate value: "${name}"`);
      else names.add(name);
    }
  }
}

export function managedFields(manager: string, operation: 'Update' | 'Apply', apiVersion = 'v1'): Json[] {
  return [
    {
      manager,
      operation,
      apiVersion,
      time: timestamp(),
      fieldsType: 'FieldsV1',
      fieldsV1: {
        'f:metadata': { 'f:annotations': {}, 'f:labels': {} },
        'f:spec': { 'f:ports': {}, 'f:type': {} },
      },
    },
  ];
}
