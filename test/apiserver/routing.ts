// HTTP in the API server stand-in: which resource, namespace, name and verb a request is for
// (`route`), bearer-token auth, bodies, and every error answered as a Status object. The rest of
// the server is reached through `ServerParts`.

import type http from 'node:http';
import { isRecord } from '@slipstream/shared/core/record';
import type { Lister } from './list.ts';
import { patchedObject } from './patch.ts';
import type { Json, StoredResource } from './resources.ts';
import { notFound, StatusError, toStatus } from './status.ts';
import type { Admit, ObjectStore } from './store.ts';
import type { WatchHub } from './watch.ts';

export type Verb = 'list' | 'watch' | 'get' | 'create' | 'update' | 'patch' | 'delete' | 'other';

export interface RequestRecord {
  method: string;
  path: string;
  query: string;
  verb: Verb;
  resource?: StoredResource;
  /** The client's TCP port: requests with the same one shared a connection. */
  remotePort?: number;
  /** The HTTP status answered (set when the response is finished). */
  status?: number;
  /** Content-Type of a PATCH. */
  contentType?: string;
}

export interface Route {
  resource: StoredResource;
  namespace?: string;
  name?: string;
  verb: Verb;
}

const methodNotAllowed = () =>
  new StatusError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
const unknownPath = () =>
  new StatusError(404, 'NotFound', 'the server could not find the requested resource');

/**
 * The resource a request is for, and its verb. Throws the 404 or 405 the real server answers for
 * a path or method it does not serve.
 */
export function route(method: string, pathname: string, query: URLSearchParams): Route {
  const parts = pathname
    .split('/')
    .filter((p) => p !== '')
    .map(decodeURIComponent);
  const core = parts[0] === 'api' && parts[1] === 'v1';
  const admission = parts[0] === 'apis' && parts[1] === 'admissionregistration.k8s.io' && parts[2] === 'v1';
  if (!core && !admission) throw unknownPath();
  const rest = parts.slice(core ? 2 : 3);
  let resource: StoredResource;
  let namespace: string | undefined;
  let name: string | undefined;
  if (admission) {
    if (rest[0] !== 'mutatingwebhookconfigurations' || rest.length > 2) throw unknownPath();
    resource = 'mutatingwebhookconfigurations';
    name = rest[1];
  } else if (rest.length === 1 && rest[0] === 'services') {
    resource = 'services'; // every namespace: list and watch only
    if (method !== 'GET') throw methodNotAllowed();
  } else if (rest[0] === 'namespaces' && rest.length <= 2) {
    resource = 'namespaces';
    name = rest[1];
  } else if (
    rest[0] === 'namespaces' &&
    rest[2] === 'pods' &&
    rest[4] === 'portforward' &&
    rest.length === 5
  ) {
    // Served as a WebSocket upgrade (port-forward.ts); a plain request gets what the real server says.
    throw new StatusError(400, 'BadRequest', 'Upgrade request required');
  } else if (
    rest[0] === 'namespaces' &&
    (rest[2] === 'services' || rest[2] === 'secrets' || rest[2] === 'pods') &&
    rest.length <= 4
  ) {
    resource = rest[2];
    namespace = rest[1];
    name = rest[3];
  } else {
    throw unknownPath();
  }
  const watch = query.get('watch') === 'true' || query.get('watch') === '1';
  const verb: Verb =
    name === undefined
      ? method === 'GET'
        ? watch
          ? 'watch'
          : 'list'
        : method === 'POST'
          ? 'create'
          : 'other'
      : (({ GET: 'get', PUT: 'update', PATCH: 'patch', DELETE: 'delete' } as const)[
          method as 'GET' | 'PUT' | 'PATCH' | 'DELETE'
        ] ?? 'other');
  return {
    resource,
    ...(namespace !== undefined ? { namespace } : {}),
    ...(name !== undefined ? { name } : {}),
    verb,
  };
}

export interface ServerParts {
  /** The bearer token required ('' for none). */
  token: string;
  store: ObjectStore;
  lister: Lister;
  watches: WatchHub;
  admit: Admit;
  /** Keeps a record of the request (its verb and resource are filled in once routed). */
  record(record: RequestRecord): void;
  /** A test's hook, run after the request is routed and before it is served. */
  beforeHandle(): ((record: RequestRecord) => Promise<void> | void) | undefined;
}

/** The request handler of the server. */
export function createHandler(
  parts: ServerParts,
): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => void handle(parts, req, res);
}

async function handle(
  parts: ServerParts,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://fake');
  const method = req.method ?? 'GET';
  const record: RequestRecord = { method, path: url.pathname, query: url.search, verb: 'other' };
  if (req.socket.remotePort !== undefined) record.remotePort = req.socket.remotePort;
  parts.record(record);
  res.on('finish', () => {
    record.status = res.statusCode;
  });
  try {
    if (parts.token && req.headers.authorization !== `Bearer ${parts.token}`) {
      throw new StatusError(401, 'Unauthorized', 'Unauthorized');
    }
    if (method === 'GET' && ['/healthz', '/readyz', '/livez'].includes(url.pathname)) {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok');
      return;
    }
    if (method === 'GET' && url.pathname === '/version') {
      reply(res, 200, { major: '1', minor: '33', gitVersion: 'v1.33.0-fake', platform: 'linux/amd64' });
      return;
    }
    const { resource, namespace, name, verb } = route(method, url.pathname, url.searchParams);
    record.resource = resource;
    record.verb = verb;
    await parts.beforeHandle()?.(record);
    const { store } = parts;
    switch (verb) {
      case 'watch':
        parts.watches.open(resource, namespace, url.searchParams, res);
        return;
      case 'list':
        reply(res, 200, parts.lister.list(resource, namespace, url.searchParams));
        return;
      case 'create':
        reply(res, 201, await store.create(resource, namespace, await body(req), parts.admit));
        return;
      case 'get': {
        const object = store.get(resource, namespace, name!);
        if (!object) throw notFound(resource, name!);
        reply(res, 200, object);
        return;
      }
      case 'update':
        reply(res, 200, await store.update(resource, namespace, name!, await body(req), parts.admit));
        return;
      case 'patch': {
        const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        record.contentType = contentType;
        const raw = await rawBody(req);
        const current = store.get(resource, namespace, name!);
        if (!current) throw notFound(resource, name!);
        const patched = patchedObject(current, contentType, raw);
        reply(res, 200, await store.update(resource, namespace, name!, patched, parts.admit));
        return;
      }
      case 'delete':
        reply(res, 200, store.delete(resource, namespace, name!));
        return;
      default:
        throw methodNotAllowed();
    }
  } catch (error) {
    if (res.headersSent) {
      res.end();
      return;
    }
    const status = toStatus(error);
    reply(res, Number(status.code), status);
  }
}

function reply(res: http.ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function body(req: http.IncomingMessage): Promise<Json> {
  const text = await rawBody(req);
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
  if (!isRecord(parsed)) throw new StatusError(400, 'BadRequest', 'the body of the request is not an object');
  return parsed;
}

async function rawBody(req: http.IncomingMessage): Promise<string> {
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
