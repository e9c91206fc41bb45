// Renders deploy/ with `kubectl kustomize` and checks rendered objects against the Kubernetes API
// schemas shipped by kubernetes-models (tommy351/kubernetes-models-ts): per-kind classes whose
// validate() runs ajv validators generated from the upstream OpenAPI (and, in
// @kubernetes-models/cert-manager and @kubernetes-models/prometheus-operator, from cert-manager's and
// the Prometheus Operator's CRDs), plus the TypeScript interfaces generated
// from the same schemas, used here to find fields the API does not know.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Certificate } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate';
import { Issuer } from '@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer';
import { PodMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { MutatingWebhookConfiguration } from 'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const NAMESPACE = 'slipstream-system';

/** The kustomizations this project ships, relative to the repository root. */
export const TARGETS = {
  base: 'deploy',
  jaeger: 'deploy/overlays/jaeger',
  certManager: 'deploy/overlays/cert-manager',
  prometheus: 'deploy/overlays/prometheus',
} as const;

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
  [field: string]: unknown;
}

function kubectl(args: string[]): string {
  const result = spawnSync('kubectl', args, {
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    timeout: 60_000,
  });
  if (result.error) {
    const code = (result.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new Error(
        'kubectl is not installed (or not on PATH). test/deploy renders the manifests with ' +
          '`kubectl kustomize` (kustomize v5 is built into kubectl ≥ 1.27); install kubectl to run these tests.',
      );
    }
    throw result.error;
  }
  if (result.status !== 0) {
    throw new Error(`kubectl ${args.join(' ')} exited with ${result.status}:\n${result.stderr}`);
  }
  return result.stdout;
}

/** Parses a multi-document YAML stream into objects, failing on any YAML error. */
export function parseObjects(text: string, origin: string): KubeObject[] {
  const objects: KubeObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`${origin}: ${doc.errors[0]?.message}`);
    const value = doc.toJS() as KubeObject | null;
    if (value !== null) objects.push(value);
  }
  return objects;
}

const rendered = new Map<string, KubeObject[]>();

/** `kubectl kustomize <dir>` (dir absolute or relative to the repository root), parsed; memoized. */
export function render(dir: string): KubeObject[] {
  const path = resolve(REPO, dir);
  let objects = rendered.get(path);
  if (!objects) {
    objects = parseObjects(kubectl(['kustomize', path]), `kubectl kustomize ${relative(REPO, path)}`);
    rendered.set(path, objects);
  }
  return structuredClone(objects);
}

/**
 * Renders a kustomization written on the fly (for combinations the project does not ship as a
 * directory, like both components at once). `resources`/`components` are repository-relative; they
 * are written relative to the temporary directory, as kustomize refuses absolute paths.
 */
export function renderComposed(spec: { resources: string[]; components?: string[] }): KubeObject[] {
  const dir = mkdtempSync(join(tmpdir(), 'slipstream-kustomize-'));
  try {
    const lines = [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'resources:',
      ...spec.resources.map((r) => `  - ${JSON.stringify(relative(dir, resolve(REPO, r)))}`),
    ];
    if (spec.components) {
      lines.push(
        'components:',
        ...spec.components.map((c) => `  - ${JSON.stringify(relative(dir, resolve(REPO, c)))}`),
      );
    }
    writeFileSync(join(dir, 'kustomization.yaml'), `${lines.join('\n')}\n`);
    return parseObjects(kubectl(['kustomize', dir]), 'composed kustomization');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function describe(object: KubeObject): string {
  const ns = object.metadata.namespace ? `${object.metadata.namespace}/` : '';
  return `${object.apiVersion} ${object.kind} ${ns}${object.metadata.name}`;
}

/** The one object of this kind and name (name may be a prefix ending in '-' for hashed names). */
export function one<T>(objects: KubeObject[], kind: string, name: string): T {
  const found = objects.filter(
    (o) =>
      o.kind === kind &&
      (o.metadata.name === name || (name.endsWith('-') && o.metadata.name.startsWith(name))),
  );
  if (found.length !== 1) {
    throw new Error(`expected exactly one ${kind} ${name}, found ${found.length}`);
  }
  return found[0] as T;
}

/** The alert rules of deploy/overlays/prometheus: its PrometheusRule's spec, which is a rules file (`groups`). */
export function alertRules(withAnnotations = true): { groups: { rules: Record<string, unknown>[] }[] } {
  const rule = one<{ spec: { groups: { rules: Record<string, unknown>[] }[] } }>(
    render(TARGETS.prometheus),
    'PrometheusRule',
    'slipstream',
  );
  const spec = structuredClone(rule.spec);
  if (!withAnnotations) for (const g of spec.groups) for (const r of g.rules) delete r.annotations;
  return spec;
}

export function has(objects: KubeObject[], kind: string, name: string): boolean {
  return objects.some((o) => o.kind === kind && o.metadata.name === name);
}

// ---- schema validation ---------------------------------------------------------------------------

interface ModelClass {
  new (data: never): { validate(): void };
}

interface SchemaEntry {
  model: ModelClass;
  /** Module and interface holding the generated TypeScript type of the same schema. */
  typeModule: string;
  typeName: string;
}

function entry(model: ModelClass, typeModule: string, kind: string): SchemaEntry {
  return { model, typeModule, typeName: `I${kind}` };
}

/**
 * Every kind the manifests may contain, keyed "apiVersion/kind". A kind missing here fails the schema
 * test rather than being skipped: nothing in deploy/ goes unvalidated (cert-manager's Issuer and
 * Certificate are CRDs, covered by @kubernetes-models/cert-manager; PodMonitor and PrometheusRule by
 * @kubernetes-models/prometheus-operator).
 */
export const SCHEMAS: Record<string, SchemaEntry> = {
  'v1/Namespace': entry(Namespace, 'kubernetes-models/v1/Namespace', 'Namespace'),
  'v1/ServiceAccount': entry(ServiceAccount, 'kubernetes-models/v1/ServiceAccount', 'ServiceAccount'),
  'v1/Service': entry(Service, 'kubernetes-models/v1/Service', 'Service'),
  'v1/ConfigMap': entry(ConfigMap, 'kubernetes-models/v1/ConfigMap', 'ConfigMap'),
  'apps/v1/Deployment': entry(Deployment, 'kubernetes-models/apps/v1/Deployment', 'Deployment'),
  'apps/v1/DaemonSet': entry(DaemonSet, 'kubernetes-models/apps/v1/DaemonSet', 'DaemonSet'),
  'policy/v1/PodDisruptionBudget': entry(
    PodDisruptionBudget,
    'kubernetes-models/policy/v1/PodDisruptionBudget',
    'PodDisruptionBudget',
  ),
  'rbac.authorization.k8s.io/v1/Role': entry(
    Role,
    'kubernetes-models/rbac.authorization.k8s.io/v1/Role',
    'Role',
  ),
  'rbac.authorization.k8s.io/v1/RoleBinding': entry(
    RoleBinding,
    'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding',
    'RoleBinding',
  ),
  'rbac.authorization.k8s.io/v1/ClusterRole': entry(
    ClusterRole,
    'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole',
    'ClusterRole',
  ),
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': entry(
    ClusterRoleBinding,
    'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding',
    'ClusterRoleBinding',
  ),
  'admissionregistration.k8s.io/v1/MutatingWebhookConfiguration': entry(
    MutatingWebhookConfiguration,
    'kubernetes-models/admissionregistration.k8s.io/v1/MutatingWebhookConfiguration',
    'MutatingWebhookConfiguration',
  ),
  'cert-manager.io/v1/Issuer': entry(
    Issuer,
    '@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer',
    'Issuer',
  ),
  'cert-manager.io/v1/Certificate': entry(
    Certificate,
    '@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate',
    'Certificate',
  ),
  'monitoring.coreos.com/v1/PodMonitor': entry(
    PodMonitor,
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor',
    'PodMonitor',
  ),
  'monitoring.coreos.com/v1/PrometheusRule': entry(
    PrometheusRule,
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule',
    'PrometheusRule',
  ),
};

function schemaOf(object: KubeObject): SchemaEntry | undefined {
  return SCHEMAS[`${object.apiVersion}/${object.kind}`];
}

/** Schema violations of one object (types, enums, required fields, formats), as readable lines. */
export function schemaErrors(object: KubeObject): string[] {
  const schema = schemaOf(object);
  if (!schema) return [`${describe(object)}: no schema registered for this kind (add it to SCHEMAS)`];
  try {
    new schema.model(object as never).validate();
    return [];
  } catch (error) {
    return [`${describe(object)}: ${(error as Error).message}`];
  }
}

/**
 * Fields the API does not know. The OpenAPI schemas (and so validate()) allow unknown fields, as the
 * API server does when it merely prunes them; but `kubectl apply` validates strictly by default and
 * then refuses them, and a misspelt field (`readOnlyRootFileSystem`) would otherwise pass silently.
 * Each object is type-checked as an object literal against the package's generated interface for its
 * kind, where TypeScript's excess-property check rejects any unknown key at any depth.
 */
export function unknownFieldErrors(objects: KubeObject[]): string[] {
  const imports = new Map<string, string>();
  const body: string[] = [];
  const owners: { firstLine: number; object: KubeObject }[] = [];
  let line = 0;
  const errors: string[] = [];
  objects.forEach((object, index) => {
    const schema = schemaOf(object);
    if (!schema) {
      errors.push(`${describe(object)}: no schema registered for this kind (add it to SCHEMAS)`);
      return;
    }
    const alias = `T${imports.size}`;
    const local = imports.get(`${schema.typeModule}#${schema.typeName}`) ?? alias;
    imports.set(`${schema.typeModule}#${schema.typeName}`, local);
    const text = `export const object${index}: ${local} = ${JSON.stringify(object, null, 2)};`;
    owners.push({ firstLine: line, object });
    body.push(text);
    line += text.split('\n').length;
  });
  const header = [...imports].map(([key, local]) => {
    const [module, name] = key.split('#');
    return `import type { ${name} as ${local} } from '${module}';`;
  });
  const source = `${[...header, ...body].join('\n')}\n`;

  // A virtual file inside test/deploy so that module resolution finds the repository's node_modules.
  const file = join(REPO, 'test/deploy/__rendered_manifests__.ts');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    target: ts.ScriptTarget.ES2024,
    lib: ['lib.es2024.d.ts'],
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const readSource = host.getSourceFile.bind(host);
  host.getSourceFile = (name, language, ...rest) =>
    name === file ? ts.createSourceFile(name, source, language, true) : readSource(name, language, ...rest);
  host.fileExists = (
    (exists) => (name: string) =>
      name === file || exists(name)
  )(host.fileExists.bind(host));
  const program = ts.createProgram([file], options, host);
  const sourceFile = program.getSourceFile(file);
  if (!sourceFile) throw new Error('TypeScript did not load the virtual manifest file');
  const lines = source.split('\n');
  for (const diagnostic of [
    ...program.getSyntacticDiagnostics(sourceFile),
    ...program.getSemanticDiagnostics(sourceFile),
  ]) {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, ' ');
    if (diagnostic.start === undefined) {
      errors.push(message);
      continue;
    }
    const at = sourceFile.getLineAndCharacterOfPosition(diagnostic.start).line - header.length;
    const owner = owners.findLast((o) => o.firstLine <= at);
    const where = owner ? describe(owner.object) : 'imports';
    errors.push(`${where}: ${message} (at: ${lines[at + header.length]?.trim()})`);
  }
  return errors;
}
