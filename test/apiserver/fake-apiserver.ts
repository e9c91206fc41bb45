// A stand-in for kube-apiserver, for tests only.
//
// No real kube-apiserver (or etcd, kind, k3s, envtest) can run on this machine, so the daemon's
// Kubernetes source and the webhook are tested against this server instead. It speaks the real
// wire protocol for the small part of the Kubernetes API that Slipstream uses (README.md lists
// the endpoints and what matches the real server), so the tests run the REAL
// @kubernetes/client-node code (KubeConfig, CoreV1Api, AdmissionregistrationV1Api, Watch,
// ListWatch) against it. One module per concept:
//
//   store.ts       objects, the cluster-wide resourceVersion, history; create/update/delete
//   defaults.ts    per-kind defaults and validation; cluster-ip.ts: ClusterIP allocation
//   list.ts        lists, limit/continue paging over a snapshot
//   watch.ts       watch streams, history replay, 410, bookmarks; faults of open watches
//   patch.ts       JSON Patch and merge patch (libraries), the PATCH content types
//   admission.ts   the `onAdmit` hook, AdmissionReview bodies
//   routing.ts     paths to resources and verbs, auth, bodies, Status errors (status.ts)
//   faults.ts      the listener that goes down and comes back
//   port-forward.ts  pods/{name}/portforward over WebSocket, to an address the test registered
//   kubeconfig.ts  a kubeconfig for it
//
// This file puts them together and keeps the test controls: direct reads and writes (no HTTP,
// no admission; they work while the server is down), and the faults a test injects.

import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { isRecord } from '@slipstream/shared/core/record';
import { type AdmissionHook, admit } from './admission.ts';
import { defaultNamespace } from './defaults.ts';
import { Listener } from './faults.ts';
import { kubeconfigYaml } from './kubeconfig.ts';
import { Lister } from './list.ts';
import { type PodPorts, portForwardUpgrade } from './port-forward.ts';
import { clone, type Json, keyOf, type StoredResource, str } from './resources.ts';
import { createHandler, type RequestRecord } from './routing.ts';
import { ObjectStore } from './store.ts';
import { WatchHub } from './watch.ts';

export type { Json } from './resources.ts';
export type { RequestRecord } from './routing.ts';

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

/** Requests kept in `requests` (the oldest go first). */
const MAX_RECORDS = 10_000;

export class FakeApiServer {
  readonly token: string;
  readonly tls: { key: string; cert: string } | undefined;
  readonly requests: RequestRecord[] = [];
  /**
   * Runs before a resource request is handled (after it is recorded, with its verb and resource):
   * a test can hold a request back (say, until a competing one has arrived), write directly in
   * between, or throw a StatusError (status.ts) to fail it.
   */
  beforeHandle: ((record: RequestRecord) => Promise<void> | void) | undefined;

  readonly #store: ObjectStore;
  readonly #watches: WatchHub;
  readonly #lister: Lister;
  readonly #listener: Listener;
  readonly #podPorts: PodPorts = new Map();
  #bookmarkTimer: NodeJS.Timeout | undefined;

  private constructor(options: FakeApiServerOptions) {
    this.token = options.token ?? randomBytes(16).toString('hex');
    this.tls = options.tls;
    this.#store = new ObjectStore(options.historyLimit ?? 1000);
    this.#watches = new WatchHub(this.#store);
    this.#store.onCommit = (event) => this.#watches.publish(event);
    this.#lister = new Lister(this.#store);
    const onAdmit = options.onAdmit;
    const record = (r: RequestRecord) => {
      this.requests.push(r);
      if (this.requests.length > MAX_RECORDS) this.requests.splice(0, this.requests.length - MAX_RECORDS);
    };
    this.#listener = new Listener({
      handler: createHandler({
        token: this.token,
        store: this.#store,
        lister: this.#lister,
        watches: this.#watches,
        admit: (request) => admit(onAdmit, request),
        record,
        beforeHandle: () => this.beforeHandle,
      }),
      onUpgrade: portForwardUpgrade({
        token: this.token,
        store: this.#store,
        podPorts: this.#podPorts,
        record: (path, query, status) =>
          record({ method: 'GET', path, query, verb: 'other', resource: 'pods', status }),
      }),
      tls: options.tls,
      port: options.port,
      onDown: () => this.#watches.closeAll(),
    });
    for (const name of options.namespaces ?? ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
      this.#store.commit('namespaces', 'ADDED', undefined, name, defaultNamespace({ metadata: { name } }));
    }
    const bookmarkIntervalMs = options.bookmarkIntervalMs ?? 0;
    if (bookmarkIntervalMs > 0) {
      this.#bookmarkTimer = setInterval(() => this.injectBookmark(), bookmarkIntervalMs);
      this.#bookmarkTimer.unref();
    }
  }

  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const server = new FakeApiServer(options);
    try {
      await server.comeBack();
    } catch (error) {
      clearInterval(server.#bookmarkTimer);
      throw error;
    }
    return server;
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.#listener.port}`;
  }

  get port(): number {
    return this.#listener.port;
  }

  get isDown(): boolean {
    return this.#listener.isDown;
  }

  /** TCP connections accepted so far. */
  get connections(): number {
    return this.#listener.connections;
  }

  /** The cluster's current resourceVersion (the last write's). */
  get resourceVersion(): number {
    return this.#store.resourceVersion;
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
    return this.#watches.count(resource);
  }

  count(verb: RequestRecord['verb'], resource?: StoredResource): number {
    return this.requests.filter((r) => r.verb === verb && (resource === undefined || r.resource === resource))
      .length;
  }

  // --- faults -------------------------------------------------------------------------------

  /** 'reset': destroy the sockets (a network failure); 'end': finish the responses cleanly (a server-side timeout). */
  dropWatches(how: 'reset' | 'end' = 'reset', resource?: StoredResource): number {
    return this.#watches.drop(how, resource);
  }

  /** Sends every open watch an ERROR event with a 410 Status and closes it (as after a watch-cache reset). */
  expireWatches(resource?: StoredResource): void {
    this.#watches.expire(resource);
  }

  /** Forgets the event history: a watch from any resourceVersion older than now gets 410, and continue tokens expire. */
  compact(): void {
    this.#store.compact();
    this.#lister.clear();
  }

  /** Sends a BOOKMARK at the current resourceVersion to every watch that allowed bookmarks. */
  injectBookmark(resource?: StoredResource): void {
    this.#watches.bookmark(resource);
  }

  /** Stops delivering watch events (they queue) until releaseWatches(). New watches are held too. */
  holdWatches(): void {
    this.#watches.hold();
  }

  releaseWatches(): void {
    this.#watches.release();
  }

  /** Closes the listener and every connection: clients get ECONNREFUSED until comeBack(). State is kept. */
  goDown(): Promise<void> {
    return this.#listener.goDown();
  }

  /** Listens again on the same port. */
  comeBack(): Promise<void> {
    return this.#listener.comeBack();
  }

  async close(): Promise<void> {
    clearInterval(this.#bookmarkTimer);
    await this.goDown();
  }

  // --- direct access (no HTTP, no admission; works while down) ------------------------------

  getService(namespace: string, name: string): Json | undefined {
    return this.#copy('services', namespace, name);
  }

  getNamespace(name: string): Json | undefined {
    return this.#copy('namespaces', undefined, name);
  }

  listServices(): Json[] {
    return this.#store.current('services').map(clone);
  }

  createService(object: Json): Promise<Json> {
    return this.#store.create('services', namespaceOf(object), clone(object));
  }

  updateService(object: Json): Promise<Json> {
    return this.#store.update('services', namespaceOf(object), nameOf(object), clone(object));
  }

  /** Writes a Service's status (as a cloud controller does when its load balancer is ready). */
  setServiceStatus(namespace: string, name: string, status: Json): Json {
    return this.#store.updateStatus('services', namespace, name, status);
  }

  async deleteService(namespace: string, name: string): Promise<Json> {
    return this.#store.delete('services', namespace, name);
  }

  createNamespace(name: string, labels: Record<string, string> = {}): Promise<Json> {
    return this.#store.create('namespaces', undefined, { metadata: { name, labels } });
  }

  updateNamespace(object: Json): Promise<Json> {
    return this.#store.update('namespaces', undefined, nameOf(object), clone(object));
  }

  async deleteNamespace(name: string): Promise<Json> {
    return this.#store.delete('namespaces', undefined, name);
  }

  getSecret(namespace: string, name: string): Json | undefined {
    return this.#copy('secrets', namespace, name);
  }

  /** A Secret's `data`, base64-decoded to text (undefined when there is no such Secret). */
  secretData(namespace: string, name: string): Record<string, string> | undefined {
    const object = this.#store.get('secrets', namespace, name);
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
  createSecret(object: Json): Promise<Json> {
    return this.#store.create('secrets', namespaceOf(object), clone(object));
  }

  updateSecret(object: Json): Promise<Json> {
    return this.#store.update('secrets', namespaceOf(object), nameOf(object), clone(object));
  }

  async deleteSecret(namespace: string, name: string): Promise<Json> {
    return this.#store.delete('secrets', namespace, name);
  }

  /**
   * Creates a Pod as the scheduler and kubelet would have it (give `spec.nodeName` and
   * `status.phase`). `ports` maps a container port to where it listens on this host: what a
   * port-forward to the pod reaches (several "nodes" share one host in a test).
   */
  createPod(
    object: Json,
    ports: Record<number, number | { host: string; port: number }> = {},
  ): Promise<Json> {
    const namespace = namespaceOf(object);
    this.#podPorts.set(
      keyOf(namespace, nameOf(object)),
      new Map(
        Object.entries(ports).map(([podPort, at]) => [
          Number(podPort),
          typeof at === 'number' ? { host: '127.0.0.1', port: at } : at,
        ]),
      ),
    );
    return this.#store.create('pods', namespace, clone(object));
  }

  async deletePod(namespace: string, name: string): Promise<Json> {
    this.#podPorts.delete(keyOf(namespace, name));
    return this.#store.delete('pods', namespace, name);
  }

  getMutatingWebhookConfiguration(name: string): Json | undefined {
    return this.#copy('mutatingwebhookconfigurations', undefined, name);
  }

  /** The decoded `clientConfig.caBundle` of each webhook ('' where there is none). */
  caBundles(name: string): string[] | undefined {
    const object = this.#store.get('mutatingwebhookconfigurations', undefined, name);
    if (!object) return undefined;
    const webhooks = Array.isArray(object.webhooks) ? object.webhooks : [];
    return webhooks.map((webhook) => {
      const config = isRecord(webhook) && isRecord(webhook.clientConfig) ? webhook.clientConfig : {};
      return Buffer.from(String(config.caBundle ?? ''), 'base64').toString('utf8');
    });
  }

  createMutatingWebhookConfiguration(object: Json): Promise<Json> {
    return this.#store.create('mutatingwebhookconfigurations', undefined, clone(object));
  }

  updateMutatingWebhookConfiguration(object: Json): Promise<Json> {
    return this.#store.update('mutatingwebhookconfigurations', undefined, nameOf(object), clone(object));
  }

  async deleteMutatingWebhookConfiguration(name: string): Promise<Json> {
    return this.#store.delete('mutatingwebhookconfigurations', undefined, name);
  }

  #copy(resource: StoredResource, namespace: string | undefined, name: string): Json | undefined {
    const object = this.#store.get(resource, namespace, name);
    return object ? clone(object) : undefined;
  }
}

function namespaceOf(object: Json): string {
  return str(isRecord(object.metadata) ? object.metadata.namespace : undefined) ?? 'default';
}

function nameOf(object: Json): string {
  return str(isRecord(object.metadata) ? object.metadata.name : undefined) ?? '';
}
