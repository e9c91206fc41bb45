// A stand-in for kube-apiserver, for tests only.
//
// No real kube-apiserver (or etcd, kind, k3s, envtest) can run on this machine, so the daemon's
// Kubernetes source and the webhook are tested against this server instead. It speaks the real
// wire protocol for the small part of the Kubernetes API that Slipstream uses, so the tests run
// the REAL @kubernetes/client-node code (KubeConfig, CoreV1Api, AdmissionregistrationV1Api, Watch,
// ListWatch) against it:
//
//   GET    /api/v1/services                              list / ?watch=true (all namespaces)
//   GET    /api/v1/namespaces                            list / ?watch=true
//   POST   /api/v1/namespaces                            create
//   GET|PUT|PATCH|DELETE /api/v1/namespaces/{name}
//   GET    /api/v1/namespaces/{ns}/services              list / ?watch=true (one namespace)
//   POST   /api/v1/namespaces/{ns}/services              create
//   GET|PUT|PATCH|DELETE /api/v1/namespaces/{ns}/services/{name}
//   GET    /api/v1/namespaces/{ns}/secrets               list / ?watch=true
//   POST   /api/v1/namespaces/{ns}/secrets               create
//   GET|PUT|PATCH|DELETE /api/v1/namespaces/{ns}/secrets/{name}
//   GET|POST /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations
//   GET|PUT|PATCH|DELETE /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}
//
// What it reproduces: one cluster-wide resourceVersion counter (like etcd's revision) that every
// write increases; lists `{kind: ServiceList, apiVersion: v1, metadata: {resourceVersion}, items}`
// (items carry no kind/apiVersion, as the real server sends them) with limit/continue paging
// over a consistent snapshot; watches as newline-delimited JSON events over chunked transfer
// encoding, replayed from a bounded event history; 410 Gone as an ERROR event carrying a
// Status with code 410 ("too old resource version") when the requested resourceVersion is older
// than the history, and as a 410 response for an expired continue token; BOOKMARK events when the
// client asks with allowWatchBookmarks=true; timeoutSeconds; bearer-token auth; Status objects for
// errors (404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid, 400 BadRequest, 401, 415); the
// server-side defaults a Service gets (type, protocol, targetPort, ClusterIP allocation from
// 10.96.0.0/16 and fd00:10:96::/112, ipFamilies, uid, creationTimestamp, managedFields, status);
// Secrets (type default Opaque and immutable, base64 data, stringData folded into data,
// kubernetes.io/tls needs tls.crt and tls.key) and MutatingWebhookConfigurations (webhook
// defaults, base64 caBundle); PATCH as application/json-patch+json (a failed `test` is 422) and
// application/merge-patch+json, where a metadata.resourceVersion in the patched object is a
// precondition (stale: 409 Conflict), as kube-apiserver does it.
//
// What it does not: strategic merge and apply patches (415), label/field selectors,
// subresources, sendInitialEvents, graceful namespace termination (deleting a Namespace deletes
// its Services and Secrets at once), RBAC, admission for Secrets and webhook configurations.
//
// Test controls: dropWatches() (network failure or clean server-side close), expireWatches(),
// compact() (forget the history, so older resourceVersions get 410), injectBookmark(),
// holdWatches()/releaseWatches() (delay delivery), goDown()/comeBack() (connections refused,
// state kept, like an apiserver restart with etcd intact), beforeHandle (hold back or fail a
// request, e.g. to make two writers race for real), and direct reads and writes that work while
// down. `onAdmit` is a mutating/validating admission hook for POST, PUT and PATCH of Services and
// Namespaces.

import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { stringify } from 'yaml';

export type Json = Record<string, unknown>;
/** The resources that go through admission (`onAdmit`). */
export type ResourceName = 'services' | 'namespaces';
/** Every resource the server stores. */
export type StoredResource = ResourceName | 'secrets' | 'mutatingwebhookconfigurations';
export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface AdmissionRequest {
  operation: 'CREATE' | 'UPDATE';
  resource: ResourceName;
  kind: 'Service' | 'Namespace';
  /** Unset for Namespaces. */
  namespace?: string;
  name: string;
  /** A private copy, defaulted like the real server does before admission: mutate it or return another. */
  object: Json;
  oldObject?: Json;
}

/** Returns the object to store (possibly mutated), or undefined to keep it as is; throw AdmissionDenied to refuse. */
export type AdmissionHook = (request: AdmissionRequest) => Promise<Json | undefined> | Json | undefined;

/** Thrown by an admission hook to refuse the request, as a webhook's `allowed: false` does. */
export class AdmissionDenied extends Error {
  readonly code: number;
  constructor(message: string, code = 400) {
    super(message);
    this.name = 'AdmissionDenied';
    this.code = code;
  }
}

export interface FakeApiServerOptions {
  /** Bearer token the server requires (default: a random one). Empty string: no auth. */
  token?: string;
  /** Serve HTTPS with this key and certificate (default: plain HTTP). */
  tls?: { key: string; cert: string };
  /** How many watch events are kept for replay; older resourceVersions get 410 (default 1000). */
  historyLimit?: number;
  /** Send a BOOKMARK to bookmark-enabled watches this often (default 0: only on injectBookmark()). */
  bookmarkIntervalMs?: number;
  onAdmit?: AdmissionHook;
  /** Namespaces that exist from the start (default default, kube-system, kube-public, kube-node-lease). */
  namespaces?: string[];
  port?: number;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: string;
  verb: 'list' | 'watch' | 'get' | 'create' | 'update' | 'patch' | 'delete' | 'other';
  resource?: StoredResource;
  /** The client's TCP port: requests with the same one shared a connection. */
  remotePort?: number;
  /** The HTTP status answered (set when the response is finished). */
  status?: number;
  /** Content-Type of a PATCH. */
  contentType?: string;
}

interface ResourceInfo {
  resource: StoredResource;
  kind: string;
  listKind: string;
  apiVersion: string;
  namespaced: boolean;
}

const RESOURCES: Record<StoredResource, ResourceInfo> = {
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
  mutatingwebhookconfigurations: {
    resource: 'mutatingwebhookconfigurations',
    kind: 'MutatingWebhookConfiguration',
    listKind: 'MutatingWebhookConfigurationList',
    apiVersion: 'admissionregistration.k8s.io/v1',
    namespaced: false,
  },
};

const JSON_PATCH = 'application/json-patch+json';
const MERGE_PATCH = 'application/merge-patch+json';

interface EventRecord {
  rv: number;
  resource: StoredResource;
  namespace: string | undefined;
  line: string;
}

interface Watcher {
  resource: StoredResource;
  namespace: string | undefined;
  bookmarks: boolean;
  res: http.ServerResponse;
  queue: string[];
  timer: NodeJS.Timeout | undefined;
  closed: boolean;
}

interface ContinueSnapshot {
  rv: number;
  resource: StoredResource;
  namespace: string | undefined;
  items: Json[];
  limit: number;
}

/** An API error, answered as a Status object. */
export class StatusError extends Error {
  readonly code: number;
  readonly reason: string;
  readonly details: Json | undefined;
  constructor(code: number, reason: string, message: string, details?: Json) {
    super(message);
    this.name = 'StatusError';
    this.code = code;
    this.reason = reason;
    this.details = details;
  }
}

export function statusObject(code: number, reason: string, message: string, details?: Json): Json {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: code < 400 ? 'Success' : 'Failure',
    message,
    reason,
    ...(details ? { details } : {}),
    code,
  };
}

function isRecord(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function child(parent: Json, key: string): Json {
  const value = parent[key];
  if (isRecord(value)) return value;
  const made: Json = {};
  parent[key] = made;
  return made;
}

function str(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

function keyOf(namespace: string | undefined, name: string): string {
  return namespace === undefined ? name : `${namespace}/${name}`;
}

const NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Secrets and webhook configurations take DNS subdomains (dots allowed, 253 characters). */
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function isBase64(value: unknown): value is string {
  return typeof value === 'string' && value.length % 4 === 0 && BASE64.test(value);
}

/** The body a real mutating webhook receives for this request (admission.k8s.io/v1 AdmissionReview). */
export function toAdmissionReview(request: AdmissionRequest, uid: string = randomUUID()): Json {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: request.kind },
      resource: { group: '', version: 'v1', resource: request.resource },
      requestKind: { group: '', version: 'v1', kind: request.kind },
      requestResource: { group: '', version: 'v1', resource: request.resource },
      name: request.name,
      ...(request.namespace !== undefined ? { namespace: request.namespace } : {}),
      operation: request.operation,
      userInfo: { username: 'system:admin', groups: ['system:masters', 'system:authenticated'] },
      object: request.object,
      oldObject: request.oldObject ?? null,
      dryRun: false,
      options:
        request.operation === 'CREATE'
          ? { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' }
          : { kind: 'UpdateOptions', apiVersion: 'meta.k8s.io/v1' },
    },
  };
}

/** Applies an RFC 6902 JSON Patch (add, remove, replace, test) to a copy of `object`, as the apiserver applies a webhook's patch. */
export function applyJsonPatch(object: Json, patch: unknown): Json {
  if (!Array.isArray(patch)) throw new Error('JSON Patch is not a list');
  const root: { doc: unknown } = { doc: clone(object) };
  for (const op of patch) {
    if (!isRecord(op) || typeof op.op !== 'string' || typeof op.path !== 'string') {
      throw new Error('JSON Patch operation needs op and path');
    }
    const tokens = op.path === '' ? [] : op.path.split('/').slice(1);
    const keys = tokens.map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
    let parent: unknown = root;
    let last = 'doc';
    for (const key of keys) {
      const next: unknown = Array.isArray(parent) ? parent[Number(last)] : (parent as Json)[last];
      parent = next;
      last = key;
      if (typeof parent !== 'object' || parent === null)
        throw new Error(`JSON Patch path ${op.path} does not exist`);
    }
    const container = parent as Json | unknown[];
    if (Array.isArray(container)) {
      const index = last === '-' ? container.length : Number(last);
      if (!Number.isInteger(index) || index < 0 || index > container.length) {
        throw new Error(`JSON Patch index ${last} out of range`);
      }
      if (op.op === 'add') container.splice(index, 0, clone(op.value));
      else if (op.op === 'remove') container.splice(index, 1);
      else if (op.op === 'replace') container[index] = clone(op.value);
      else if (op.op === 'test') {
        if (JSON.stringify(container[index]) !== JSON.stringify(op.value))
          throw new Error(`JSON Patch test failed at ${op.path}`);
      } else throw new Error(`JSON Patch op ${op.op} is not supported`);
    } else {
      if ((op.op === 'remove' || op.op === 'replace') && !(last in container)) {
        throw new Error(`JSON Patch path ${op.path} does not exist`);
      }
      if (op.op === 'add' || op.op === 'replace') container[last] = clone(op.value);
      else if (op.op === 'remove') delete container[last];
      else if (op.op === 'test') {
        if (JSON.stringify(container[last]) !== JSON.stringify(op.value))
          throw new Error(`JSON Patch test failed at ${op.path}`);
      } else throw new Error(`JSON Patch op ${op.op} is not supported`);
    }
  }
  if (!isRecord(root.doc)) throw new Error('JSON Patch replaced the object with a non-object');
  return root.doc;
}

/** Applies an RFC 7386 JSON Merge Patch to a copy of `target` (null deletes a key; lists are replaced whole). */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return clone(patch);
  const result: Json = isRecord(target) ? clone(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = applyMergePatch(result[key], value);
  }
  return result;
}

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

class Ipam {
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

export class FakeApiServer {
  readonly token: string;
  readonly tls: { key: string; cert: string } | undefined;
  readonly requests: RequestRecord[] = [];
  /** TCP connections accepted so far. */
  connections = 0;
  /**
   * Runs before a resource request is handled (after it is recorded, with its verb and resource):
   * a test can hold a request back (say, until a competing one has arrived), write directly in
   * between, or throw a StatusError to fail it.
   */
  beforeHandle: ((record: RequestRecord) => Promise<void> | void) | undefined;

  readonly #historyLimit: number;
  readonly #onAdmit: AdmissionHook | undefined;
  readonly #bookmarkIntervalMs: number;
  #port: number;
  #server: http.Server | undefined;
  readonly #sockets = new Set<Socket>();
  #down = true;

  #rv = 100;
  readonly #objects: Record<StoredResource, Map<string, Json>> = {
    services: new Map(),
    namespaces: new Map(),
    secrets: new Map(),
    mutatingwebhookconfigurations: new Map(),
  };
  #history: EventRecord[] = [];
  #compactedRv = 0;
  readonly #watchers = new Set<Watcher>();
  #held = false;
  readonly #continues = new Map<string, ContinueSnapshot>();
  readonly #ipam = new Ipam();
  #bookmarkTimer: NodeJS.Timeout | undefined;

  private constructor(options: FakeApiServerOptions) {
    this.token = options.token ?? randomBytes(16).toString('hex');
    this.tls = options.tls;
    this.#historyLimit = options.historyLimit ?? 1000;
    this.#onAdmit = options.onAdmit;
    this.#bookmarkIntervalMs = options.bookmarkIntervalMs ?? 0;
    this.#port = options.port ?? 0;
    for (const name of options.namespaces ?? ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
      this.#commit('namespaces', 'ADDED', undefined, name, this.#defaultNamespace({ metadata: { name } }));
    }
  }

  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const server = new FakeApiServer(options);
    await server.comeBack();
    if (server.#bookmarkIntervalMs > 0) {
      server.#bookmarkTimer = setInterval(() => server.injectBookmark(), server.#bookmarkIntervalMs);
      server.#bookmarkTimer.unref();
    }
    return server;
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.#port}`;
  }

  get port(): number {
    return this.#port;
  }

  get isDown(): boolean {
    return this.#down;
  }

  /** The cluster's current resourceVersion (the last write's). */
  get resourceVersion(): number {
    return this.#rv;
  }

  kubeconfig(): string {
    return kubeconfigYaml({
      server: this.url,
      ...(this.token ? { token: this.token } : {}),
      ...(this.tls ? { caPem: this.tls.cert } : {}),
    });
  }

  async writeKubeconfig(path: string): Promise<string> {
    await writeFile(path, this.kubeconfig(), { mode: 0o600 });
    return path;
  }

  /** Open watch connections (of one resource, or all). */
  openWatches(resource?: StoredResource): number {
    let n = 0;
    for (const w of this.#watchers) if (!w.closed && (resource === undefined || w.resource === resource)) n++;
    return n;
  }

  count(verb: RequestRecord['verb'], resource?: StoredResource): number {
    return this.requests.filter((r) => r.verb === verb && (resource === undefined || r.resource === resource))
      .length;
  }

  // --- test controls ------------------------------------------------------------------------

  /** 'reset': destroy the sockets (a network failure); 'end': finish the responses cleanly (a server-side timeout). */
  dropWatches(how: 'reset' | 'end' = 'reset', resource?: StoredResource): number {
    let n = 0;
    for (const w of [...this.#watchers]) {
      if (resource !== undefined && w.resource !== resource) continue;
      n++;
      if (how === 'reset') {
        w.res.socket?.destroy();
        this.#closeWatcher(w);
      } else {
        this.#endWatcher(w);
      }
    }
    return n;
  }

  /** Sends every open watch an ERROR event with a 410 Status and closes it (as after a watch-cache reset). */
  expireWatches(resource?: StoredResource): void {
    for (const w of [...this.#watchers]) {
      if (resource !== undefined && w.resource !== resource) continue;
      w.queue = [];
      const status = statusObject(410, 'Expired', `too old resource version: watch expired (${this.#rv})`);
      if (!w.res.writableEnded) w.res.write(`${JSON.stringify({ type: 'ERROR', object: status })}\n`);
      this.#endWatcher(w);
    }
  }

  /** Forgets the event history: a watch from any resourceVersion older than now gets 410, and continue tokens expire. */
  compact(): void {
    this.#history = [];
    this.#compactedRv = this.#rv;
    this.#continues.clear();
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allowed bookmarks. */
  injectBookmark(resource?: StoredResource): void {
    for (const w of this.#watchers) {
      if (!w.bookmarks || (resource !== undefined && w.resource !== resource)) continue;
      const object = {
        kind: RESOURCES[w.resource].kind,
        apiVersion: RESOURCES[w.resource].apiVersion,
        metadata: { resourceVersion: String(this.#rv) },
      };
      this.#send(w, `${JSON.stringify({ type: 'BOOKMARK', object })}\n`);
    }
  }

  /** Stops delivering watch events (they queue) until releaseWatches(). New watches are held too. */
  holdWatches(): void {
    this.#held = true;
  }

  releaseWatches(): void {
    this.#held = false;
    for (const w of this.#watchers) {
      const queued = w.queue;
      w.queue = [];
      for (const line of queued) this.#send(w, line);
    }
  }

  /** Closes the listener and every connection: clients get ECONNREFUSED until comeBack(). State is kept. */
  async goDown(): Promise<void> {
    if (this.#down) return;
    this.#down = true;
    const server = this.#server;
    this.#server = undefined;
    for (const w of [...this.#watchers]) this.#closeWatcher(w);
    for (const socket of this.#sockets) socket.destroy();
    this.#sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Listens again on the same port. */
  async comeBack(): Promise<void> {
    if (!this.#down) return;
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      void this.#handle(req, res);
    };
    const server = this.tls
      ? https.createServer({ key: this.tls.key, cert: this.tls.cert }, handler)
      : http.createServer(handler);
    server.keepAliveTimeout = 30_000;
    server.on('connection', (socket: Socket) => {
      this.connections++;
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.#port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    if (address && typeof address === 'object') this.#port = address.port;
    this.#server = server;
    this.#down = false;
  }

  async close(): Promise<void> {
    clearInterval(this.#bookmarkTimer);
    await this.goDown();
  }

  // --- direct access (no HTTP, no admission; works while down) ------------------------------

  getService(namespace: string, name: string): Json | undefined {
    const object = this.#objects.services.get(keyOf(namespace, name));
    return object ? clone(object) : undefined;
  }

  getNamespace(name: string): Json | undefined {
    const object = this.#objects.namespaces.get(name);
    return object ? clone(object) : undefined;
  }

  listServices(): Json[] {
    return [...this.#objects.services.values()].map(clone);
  }

  async createService(object: Json): Promise<Json> {
    const namespace = str(isRecord(object.metadata) ? object.metadata.namespace : undefined) ?? 'default';
    return this.#create('services', namespace, clone(object), false);
  }

  async updateService(object: Json): Promise<Json> {
    const metadata = isRecord(object.metadata) ? object.metadata : {};
    const namespace = str(metadata.namespace) ?? 'default';
    return this.#update('services', namespace, str(metadata.name) ?? '', clone(object), false);
  }

  async deleteService(namespace: string, name: string): Promise<Json> {
    return this.#delete('services', namespace, name);
  }

  async createNamespace(name: string, labels: Record<string, string> = {}): Promise<Json> {
    return this.#create('namespaces', undefined, { metadata: { name, labels } }, false);
  }

  async updateNamespace(object: Json): Promise<Json> {
    const name = str(isRecord(object.metadata) ? object.metadata.name : undefined) ?? '';
    return this.#update('namespaces', undefined, name, clone(object), false);
  }

  async deleteNamespace(name: string): Promise<Json> {
    return this.#delete('namespaces', undefined, name);
  }

  getSecret(namespace: string, name: string): Json | undefined {
    const object = this.#objects.secrets.get(keyOf(namespace, name));
    return object ? clone(object) : undefined;
  }

  /** A Secret's `data`, base64-decoded to text (undefined when there is no such Secret). */
  secretData(namespace: string, name: string): Record<string, string> | undefined {
    const object = this.#objects.secrets.get(keyOf(namespace, name));
    if (!object) return undefined;
    const data = isRecord(object.data) ? object.data : {};
    return Object.fromEntries(
      Object.entries(data).map(([key, value]) => [
        key,
        Buffer.from(String(value), 'base64').toString('utf8'),
      ]),
    );
  }

  /** Creates a Secret (`stringData` is accepted, as by the real server). */
  async createSecret(object: Json): Promise<Json> {
    const namespace = str(isRecord(object.metadata) ? object.metadata.namespace : undefined) ?? 'default';
    return this.#create('secrets', namespace, clone(object), false);
  }

  async updateSecret(object: Json): Promise<Json> {
    const metadata = isRecord(object.metadata) ? object.metadata : {};
    return this.#update(
      'secrets',
      str(metadata.namespace) ?? 'default',
      str(metadata.name) ?? '',
      clone(object),
      false,
    );
  }

  async deleteSecret(namespace: string, name: string): Promise<Json> {
    return this.#delete('secrets', namespace, name);
  }

  getMutatingWebhookConfiguration(name: string): Json | undefined {
    const object = this.#objects.mutatingwebhookconfigurations.get(name);
    return object ? clone(object) : undefined;
  }

  /** The decoded `clientConfig.caBundle` of each webhook ('' where there is none). */
  caBundles(name: string): string[] | undefined {
    const object = this.#objects.mutatingwebhookconfigurations.get(name);
    if (!object) return undefined;
    const webhooks = Array.isArray(object.webhooks) ? object.webhooks : [];
    return webhooks.map((webhook) => {
      const config = isRecord(webhook) && isRecord(webhook.clientConfig) ? webhook.clientConfig : {};
      return Buffer.from(String(config.caBundle ?? ''), 'base64').toString('utf8');
    });
  }

  async createMutatingWebhookConfiguration(object: Json): Promise<Json> {
    return this.#create('mutatingwebhookconfigurations', undefined, clone(object), false);
  }

  async updateMutatingWebhookConfiguration(object: Json): Promise<Json> {
    const name = str(isRecord(object.metadata) ? object.metadata.name : undefined) ?? '';
    return this.#update('mutatingwebhookconfigurations', undefined, name, clone(object), false);
  }

  async deleteMutatingWebhookConfiguration(name: string): Promise<Json> {
    return this.#delete('mutatingwebhookconfigurations', undefined, name);
  }

  // --- storage --------------------------------------------------------------------------------

  #commit(
    resource: StoredResource,
    type: 'ADDED' | 'MODIFIED' | 'DELETED',
    namespace: string | undefined,
    name: string,
    object: Json,
  ): Json {
    const rv = ++this.#rv;
    const stored = clone(object);
    child(stored, 'metadata').resourceVersion = String(rv);
    const key = keyOf(namespace, name);
    if (type === 'DELETED') this.#objects[resource].delete(key);
    else this.#objects[resource].set(key, stored);
    const line = `${JSON.stringify({ type, object: stored })}\n`;
    this.#history.push({ rv, resource, namespace, line });
    if (this.#history.length > this.#historyLimit) {
      const dropped = this.#history.splice(0, this.#history.length - this.#historyLimit);
      const last = dropped[dropped.length - 1];
      if (last) this.#compactedRv = Math.max(this.#compactedRv, last.rv);
    }
    for (const w of this.#watchers) {
      if (w.resource === resource && (w.namespace === undefined || w.namespace === namespace))
        this.#send(w, line);
    }
    return clone(stored);
  }

  #defaulted(resource: StoredResource, object: Json): Json {
    switch (resource) {
      case 'services':
        return this.#defaultService(object);
      case 'namespaces':
        return this.#defaultNamespace(object);
      case 'secrets':
        return this.#defaultSecret(object);
      case 'mutatingwebhookconfigurations':
        return this.#defaultWebhookConfiguration(object);
    }
  }

  #validate(resource: StoredResource, object: Json, old: Json | undefined): void {
    if (resource === 'services') this.#validateService(object);
    else if (resource === 'secrets') this.#validateSecret(object, old);
    else if (resource === 'mutatingwebhookconfigurations') this.#validateWebhookConfiguration(object);
  }

  #defaultSecret(object: Json): Json {
    object.apiVersion = 'v1';
    object.kind = 'Secret';
    if (!str(object.type)) object.type = 'Opaque';
    if (object.data !== undefined && object.data !== null && !isRecord(object.data)) {
      throw new StatusError(
        400,
        'BadRequest',
        'Secret in version "v1" cannot be handled: data must be a map',
      );
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

  #validateSecret(object: Json, old: Json | undefined): void {
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

  #defaultWebhookConfiguration(object: Json): Json {
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

  #validateWebhookConfiguration(object: Json): void {
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

  #defaultNamespace(object: Json): Json {
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

  #defaultService(object: Json): Json {
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

  #validateService(object: Json): void {
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
      if (
        typeof port.port !== 'number' ||
        !Number.isInteger(port.port) ||
        port.port < 1 ||
        port.port > 65535
      ) {
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

  #allocate(object: Json, old: Json | undefined): void {
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
      if (ips[i] === undefined) ips[i] = this.#ipam.next(family);
      else this.#ipam.used.add(ips[i]);
    }
    spec.clusterIPs = ips;
    spec.clusterIP = ips[0];
    spec.ipFamilies = wanted;
  }

  #managedFields(manager: string, operation: 'Update' | 'Apply', apiVersion = 'v1'): Json[] {
    return [
      {
        manager,
        operation,
        apiVersion,
        time: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        fieldsType: 'FieldsV1',
        fieldsV1: {
          'f:metadata': { 'f:annotations': {}, 'f:labels': {} },
          'f:spec': { 'f:ports': {}, 'f:type': {} },
        },
      },
    ];
  }

  async #admit(request: AdmissionRequest): Promise<Json> {
    if (!this.#onAdmit) return request.object;
    let result: Json | undefined;
    try {
      result = await this.#onAdmit(request);
    } catch (error) {
      const code = error instanceof AdmissionDenied ? error.code : 500;
      const message = error instanceof Error ? error.message : String(error);
      throw new StatusError(
        code,
        code === 500 ? 'InternalError' : code === 403 ? 'Forbidden' : 'BadRequest',
        `admission webhook "fake.slipstream.dev" denied the request: ${message}`,
      );
    }
    const object = result ?? request.object;
    const metadata = isRecord(object.metadata) ? object.metadata : {};
    if (
      metadata.name !== request.name ||
      (request.namespace !== undefined && metadata.namespace !== request.namespace)
    ) {
      throw new StatusError(500, 'InternalError', 'admission changed the name or namespace of the object');
    }
    return object;
  }

  async #create(
    resource: StoredResource,
    namespace: string | undefined,
    body: Json,
    admit: boolean,
  ): Promise<Json> {
    const info = RESOURCES[resource];
    if (body.kind !== undefined && body.kind !== info.kind) {
      throw new StatusError(
        400,
        'BadRequest',
        `the kind of the object must be ${info.kind}, not ${String(body.kind)}`,
      );
    }
    const metadata = child(body, 'metadata');
    if (!str(metadata.name) && str(metadata.generateName)) {
      metadata.name = `${metadata.generateName}${randomBytes(3).toString('hex').slice(0, 5)}`;
    }
    const name = str(metadata.name);
    if (!name)
      throw new StatusError(
        422,
        'Invalid',
        `${info.kind} "" is invalid: metadata.name: Required value: name or generateName is required`,
      );
    const subdomain = resource === 'secrets' || resource === 'mutatingwebhookconfigurations';
    if (subdomain ? !SUBDOMAIN.test(name) || name.length > 253 : !NAME.test(name) || name.length > 63) {
      throw new StatusError(
        422,
        'Invalid',
        `${info.kind} "${name}" is invalid: metadata.name: Invalid value: "${name}": a ${subdomain ? 'lowercase RFC 1123 subdomain' : 'DNS-1035 label'}`,
      );
    }
    if (namespace !== undefined) {
      if (metadata.namespace !== undefined && metadata.namespace !== namespace) {
        throw new StatusError(
          400,
          'BadRequest',
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      }
      metadata.namespace = namespace;
      if (!this.#objects.namespaces.has(namespace)) {
        throw new StatusError(404, 'NotFound', `namespaces "${namespace}" not found`, {
          name: namespace,
          kind: 'namespaces',
        });
      }
    }
    const key = keyOf(namespace, name);
    const exists = (): void => {
      if (this.#objects[resource].has(key)) {
        throw new StatusError(409, 'AlreadyExists', `${resource} "${name}" already exists`, {
          name,
          kind: resource,
        });
      }
    };
    exists();
    for (const field of ['uid', 'resourceVersion', 'creationTimestamp', 'managedFields', 'deletionTimestamp'])
      delete metadata[field];
    let object = this.#defaulted(resource, body);
    this.#validate(resource, object, undefined);
    if (admit && (resource === 'services' || resource === 'namespaces')) {
      object = await this.#admit({
        operation: 'CREATE',
        resource,
        kind: resource === 'services' ? 'Service' : 'Namespace',
        ...(namespace !== undefined ? { namespace } : {}),
        name,
        object: clone(object),
      });
      this.#validate(resource, object, undefined);
    }
    exists();
    if (namespace !== undefined && !this.#objects.namespaces.has(namespace)) {
      throw new StatusError(404, 'NotFound', `namespaces "${namespace}" not found`, {
        name: namespace,
        kind: 'namespaces',
      });
    }
    const meta = child(object, 'metadata');
    meta.uid = randomUUID();
    meta.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    meta.managedFields = this.#managedFields('kubectl-client-side-apply', 'Update', info.apiVersion);
    if (resource === 'services') {
      this.#allocate(object, undefined);
      object.status = { loadBalancer: {} };
    } else if (resource === 'namespaces') {
      object.status = { phase: 'Active' };
    }
    return this.#commit(resource, 'ADDED', namespace, name, object);
  }

  async #update(
    resource: StoredResource,
    namespace: string | undefined,
    name: string,
    body: Json,
    admit: boolean,
  ): Promise<Json> {
    const info = RESOURCES[resource];
    const key = keyOf(namespace, name);
    const current = this.#objects[resource].get(key);
    if (!current)
      throw new StatusError(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
    const metadata = child(body, 'metadata');
    if (metadata.name !== name) {
      throw new StatusError(
        400,
        'BadRequest',
        `the name of the object (${String(metadata.name)}) does not match the name on the URL (${name})`,
      );
    }
    if (namespace !== undefined) {
      if (metadata.namespace !== undefined && metadata.namespace !== namespace) {
        throw new StatusError(
          400,
          'BadRequest',
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      }
      metadata.namespace = namespace;
    }
    const conflict = (): never => {
      throw new StatusError(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${resource} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, kind: resource },
      );
    };
    const currentMeta = child(current, 'metadata');
    const expectedRv = str(metadata.resourceVersion);
    if (expectedRv !== undefined && expectedRv !== currentMeta.resourceVersion) conflict();
    metadata.uid = currentMeta.uid;
    metadata.creationTimestamp = currentMeta.creationTimestamp;
    delete metadata.managedFields;
    let object = this.#defaulted(resource, body);
    this.#validate(resource, object, current);
    if (resource === 'services') this.#allocate(object, current);
    if (admit && (resource === 'services' || resource === 'namespaces')) {
      object = await this.#admit({
        operation: 'UPDATE',
        resource,
        kind: resource === 'services' ? 'Service' : 'Namespace',
        ...(namespace !== undefined ? { namespace } : {}),
        name,
        object: clone(object),
        oldObject: clone(current),
      });
      this.#validate(resource, object, current);
      if (resource === 'services') this.#allocate(object, current);
    }
    const latest = this.#objects[resource].get(key);
    if (!latest)
      throw new StatusError(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
    if (latest !== current) conflict();
    if (current.status !== undefined) object.status = current.status;
    const comparable = (o: Json): string => {
      const copy = clone(o);
      const m = child(copy, 'metadata');
      delete m.resourceVersion;
      delete m.managedFields;
      return JSON.stringify(copy);
    };
    if (comparable(object) === comparable(current)) return clone(current); // a no-op update writes nothing
    child(object, 'metadata').managedFields = [
      ...(Array.isArray(currentMeta.managedFields) ? currentMeta.managedFields : []),
      ...this.#managedFields('kubectl-edit', 'Update', info.apiVersion),
    ].slice(-4);
    return this.#commit(resource, 'MODIFIED', namespace, name, object);
  }

  /**
   * PATCH, JSON Patch or JSON Merge Patch. As in kube-apiserver, the patched object's
   * metadata.resourceVersion is the precondition: a patch that does not touch it applies to the
   * latest object; one that sets a stale value gets 409 Conflict. A failing JSON Patch `test`
   * operation is 422 (kube-apiserver answers every patch application error so).
   */
  async #patch(
    resource: StoredResource,
    namespace: string | undefined,
    name: string,
    contentType: string,
    raw: string,
  ): Promise<Json> {
    const current = this.#objects[resource].get(keyOf(namespace, name));
    if (!current)
      throw new StatusError(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
    if (contentType !== JSON_PATCH && contentType !== MERGE_PATCH) {
      throw new StatusError(
        415,
        'UnsupportedMediaType',
        `the body of the request was in an unknown format - accepted media types include: ${JSON_PATCH}, ${MERGE_PATCH}`,
      );
    }
    let patch: unknown;
    try {
      patch = JSON.parse(raw);
    } catch (error) {
      throw new StatusError(400, 'BadRequest', `error decoding patch: ${String(error)}`);
    }
    let patched: unknown;
    if (contentType === JSON_PATCH) {
      if (!Array.isArray(patch))
        throw new StatusError(400, 'BadRequest', 'error decoding patch: not a JSON Patch list');
      try {
        patched = applyJsonPatch(current, patch);
      } catch (error) {
        throw new StatusError(422, 'Invalid', (error as Error).message);
      }
    } else {
      if (!isRecord(patch))
        throw new StatusError(400, 'BadRequest', 'error decoding patch: not a JSON object');
      patched = applyMergePatch(current, patch);
    }
    if (!isRecord(patched))
      throw new StatusError(422, 'Invalid', 'the patch replaced the object with a non-object');
    return this.#update(
      resource,
      namespace,
      name,
      patched,
      resource === 'services' || resource === 'namespaces',
    );
  }

  #delete(resource: StoredResource, namespace: string | undefined, name: string): Json {
    const current = this.#objects[resource].get(keyOf(namespace, name));
    if (!current)
      throw new StatusError(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
    if (resource === 'namespaces') {
      for (const kind of ['services', 'secrets'] as const) {
        for (const [key, object] of [...this.#objects[kind]]) {
          if (key.startsWith(`${name}/`))
            this.#commit(kind, 'DELETED', name, key.slice(name.length + 1), object);
        }
      }
    }
    return this.#commit(resource, 'DELETED', namespace, name, current);
  }

  // --- watches --------------------------------------------------------------------------------

  #send(w: Watcher, line: string): void {
    if (w.closed || w.res.writableEnded) return;
    if (this.#held) w.queue.push(line);
    else w.res.write(line);
  }

  #closeWatcher(w: Watcher): void {
    w.closed = true;
    clearTimeout(w.timer);
    this.#watchers.delete(w);
  }

  #endWatcher(w: Watcher): void {
    this.#closeWatcher(w);
    if (!w.res.writableEnded) w.res.end();
  }

  #watch(
    resource: StoredResource,
    namespace: string | undefined,
    query: URLSearchParams,
    res: http.ServerResponse,
  ): void {
    const raw = query.get('resourceVersion') ?? '';
    if (raw !== '' && !/^[0-9]+$/.test(raw)) {
      throw new StatusError(400, 'BadRequest', `resourceVersion: Invalid value: "${raw}": must be a number`);
    }
    const from = raw === '' ? 0 : Number(raw);
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();
    if (from !== 0 && from < this.#compactedRv) {
      const oldest = this.#history[0]?.rv ?? this.#rv;
      const status = statusObject(410, 'Expired', `too old resource version: ${from} (${oldest})`);
      res.end(`${JSON.stringify({ type: 'ERROR', object: status })}\n`);
      return;
    }
    const watcher: Watcher = {
      resource,
      namespace,
      bookmarks: query.get('allowWatchBookmarks') === 'true',
      res,
      queue: [],
      timer: undefined,
      closed: false,
    };
    this.#watchers.add(watcher);
    res.on('close', () => this.#closeWatcher(watcher));
    const timeout = Number(query.get('timeoutSeconds') ?? '0');
    if (timeout > 0) watcher.timer = setTimeout(() => this.#endWatcher(watcher), timeout * 1000);
    if (from === 0) {
      // "Get state and start at most recent": synthetic ADDED events for what exists now.
      for (const [key, object] of this.#objects[resource]) {
        if (namespace === undefined || key.startsWith(`${namespace}/`)) {
          this.#send(watcher, `${JSON.stringify({ type: 'ADDED', object })}\n`);
        }
      }
      return;
    }
    for (const event of this.#history) {
      if (
        event.rv > from &&
        event.resource === resource &&
        (namespace === undefined || event.namespace === namespace)
      ) {
        this.#send(watcher, event.line);
      }
    }
  }

  #list(resource: StoredResource, namespace: string | undefined, query: URLSearchParams): Json {
    const info = RESOURCES[resource];
    const limit = Number(query.get('limit') ?? '0');
    const token = query.get('continue');
    let snapshot: ContinueSnapshot;
    if (token) {
      const found = this.#continues.get(token);
      if (
        !found ||
        found.rv < this.#compactedRv ||
        found.resource !== resource ||
        found.namespace !== namespace
      ) {
        this.#continues.delete(token);
        throw new StatusError(
          410,
          'Expired',
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
        );
      }
      this.#continues.delete(token);
      snapshot = { ...found, limit: limit > 0 ? limit : found.limit };
    } else {
      const items: Json[] = [];
      const keys = [...this.#objects[resource].keys()].sort();
      for (const key of keys) {
        if (namespace !== undefined && !key.startsWith(`${namespace}/`)) continue;
        const object = this.#objects[resource].get(key);
        if (object) items.push(object);
      }
      snapshot = { rv: this.#rv, resource, namespace, items, limit };
    }
    const page = snapshot.limit > 0 ? snapshot.items.slice(0, snapshot.limit) : snapshot.items;
    const rest = snapshot.limit > 0 ? snapshot.items.slice(snapshot.limit) : [];
    const metadata: Json = { resourceVersion: String(snapshot.rv) };
    if (rest.length > 0) {
      const next = randomBytes(12).toString('base64url');
      this.#continues.set(next, { ...snapshot, items: rest });
      while (this.#continues.size > 64) {
        const oldest = this.#continues.keys().next().value;
        if (oldest === undefined) break;
        this.#continues.delete(oldest);
      }
      metadata.continue = next;
      metadata.remainingItemCount = rest.length;
    }
    return {
      kind: info.listKind,
      apiVersion: info.apiVersion,
      metadata,
      // The real server sends list items without kind and apiVersion.
      items: page.map(({ kind: _kind, apiVersion: _apiVersion, ...rest }) => rest),
    };
  }

  // --- HTTP -----------------------------------------------------------------------------------

  #record(record: RequestRecord): void {
    this.requests.push(record);
    if (this.requests.length > 10_000) this.requests.splice(0, this.requests.length - 10_000);
  }

  async #body(req: http.IncomingMessage): Promise<Json> {
    const text = await this.#rawBody(req);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new StatusError(
        400,
        'BadRequest',
        `the body of the request could not be decoded: ${String(error)}`,
      );
    }
    if (!isRecord(parsed))
      throw new StatusError(400, 'BadRequest', 'the body of the request is not an object');
    return parsed;
  }

  async #rawBody(req: http.IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      const buffer = chunk as Buffer;
      size += buffer.length;
      if (size > 3 * 1024 * 1024)
        throw new StatusError(413, 'RequestEntityTooLarge', 'request entity too large');
      chunks.push(buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  #reply(res: http.ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    const parts = url.pathname
      .split('/')
      .filter((p) => p !== '')
      .map(decodeURIComponent);
    const record: RequestRecord = { method, path: url.pathname, query: url.search, verb: 'other' };
    if (req.socket.remotePort !== undefined) record.remotePort = req.socket.remotePort;
    this.#record(record);
    res.on('finish', () => {
      record.status = res.statusCode;
    });
    try {
      if (this.token && req.headers.authorization !== `Bearer ${this.token}`) {
        throw new StatusError(401, 'Unauthorized', 'Unauthorized');
      }
      if (
        method === 'GET' &&
        (url.pathname === '/healthz' || url.pathname === '/readyz' || url.pathname === '/livez')
      ) {
        res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok');
        return;
      }
      if (method === 'GET' && url.pathname === '/version') {
        this.#reply(res, 200, {
          major: '1',
          minor: '33',
          gitVersion: 'v1.33.0-fake',
          platform: 'linux/amd64',
        });
        return;
      }
      const notFound = () =>
        new StatusError(404, 'NotFound', 'the server could not find the requested resource');
      const core = parts[0] === 'api' && parts[1] === 'v1';
      const admission =
        parts[0] === 'apis' && parts[1] === 'admissionregistration.k8s.io' && parts[2] === 'v1';
      if (!core && !admission) throw notFound();
      const rest = parts.slice(core ? 2 : 3);
      let resource: StoredResource;
      let namespace: string | undefined;
      let name: string | undefined;
      if (admission) {
        if (rest[0] !== 'mutatingwebhookconfigurations' || rest.length > 2) throw notFound();
        resource = 'mutatingwebhookconfigurations';
        name = rest[1];
      } else if (rest.length === 1 && rest[0] === 'services') {
        resource = 'services';
        if (method !== 'GET')
          throw new StatusError(
            405,
            'MethodNotAllowed',
            `the server does not allow this method on the requested resource`,
          );
      } else if (rest[0] === 'namespaces' && rest.length <= 2) {
        resource = 'namespaces';
        name = rest[1];
      } else if (
        rest[0] === 'namespaces' &&
        (rest[2] === 'services' || rest[2] === 'secrets') &&
        rest.length <= 4
      ) {
        resource = rest[2];
        namespace = rest[1];
        name = rest[3];
      } else {
        throw notFound();
      }
      record.resource = resource;
      const isWatch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
      const itemVerbs: Record<string, RequestRecord['verb']> = {
        GET: 'get',
        PUT: 'update',
        PATCH: 'patch',
        DELETE: 'delete',
      };
      if (name === undefined) {
        record.verb =
          method === 'GET' ? (isWatch ? 'watch' : 'list') : method === 'POST' ? 'create' : 'other';
      } else record.verb = itemVerbs[method] ?? 'other';
      if (this.beforeHandle) await this.beforeHandle(record);
      if (name === undefined) {
        if (method === 'GET' && isWatch) {
          record.verb = 'watch';
          this.#watch(resource, namespace, url.searchParams, res);
        } else if (method === 'GET') {
          record.verb = 'list';
          this.#reply(res, 200, this.#list(resource, namespace, url.searchParams));
        } else if (method === 'POST') {
          record.verb = 'create';
          this.#reply(res, 201, await this.#create(resource, namespace, await this.#body(req), true));
        } else {
          throw new StatusError(
            405,
            'MethodNotAllowed',
            'the server does not allow this method on the requested resource',
          );
        }
        return;
      }
      if (method === 'GET') {
        record.verb = 'get';
        const object = this.#objects[resource].get(keyOf(namespace, name));
        if (!object)
          throw new StatusError(404, 'NotFound', `${resource} "${name}" not found`, { name, kind: resource });
        this.#reply(res, 200, object);
      } else if (method === 'PUT') {
        record.verb = 'update';
        this.#reply(res, 200, await this.#update(resource, namespace, name, await this.#body(req), true));
      } else if (method === 'PATCH') {
        record.verb = 'patch';
        const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        record.contentType = contentType;
        this.#reply(
          res,
          200,
          await this.#patch(resource, namespace, name, contentType, await this.#rawBody(req)),
        );
      } else if (method === 'DELETE') {
        record.verb = 'delete';
        this.#reply(res, 200, this.#delete(resource, namespace, name));
      } else {
        throw new StatusError(
          405,
          'MethodNotAllowed',
          'the server does not allow this method on the requested resource',
        );
      }
    } catch (error) {
      const status =
        error instanceof StatusError
          ? statusObject(error.code, error.reason, error.message, error.details)
          : statusObject(
              500,
              'InternalError',
              `an error on the server has prevented the request from succeeding: ${String(error)}`,
            );
      if (res.headersSent) {
        res.end();
        return;
      }
      this.#reply(res, Number(status.code), status);
    }
  }
}
