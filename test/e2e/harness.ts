// Support for the end-to-end tests: a local OTLP/HTTP receiver, a webhook that never answers, the
// webhook's certificate, and the rendered deploy/. The processes, bounded polling and the kernel
// view are in test/lib (process.ts, netns.ts).

import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { gunzipSync } from 'node:zlib';
import { parseAllDocuments } from 'yaml';
import { ROOT } from '../lib/process.ts';

// --- OTLP/HTTP ---------------------------------------------------------------------------------

export interface ReceivedLink {
  traceId: string;
  spanId: string;
  attributes: Record<string, unknown>;
}

export interface ReceivedSpan {
  /** The resource's `service.name`. */
  service: string;
  scope: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  links: ReceivedLink[];
  status: { code?: number; message?: string };
}

type AnyValue = {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
  arrayValue?: { values?: AnyValue[] };
};
type KeyValue = { key: string; value?: AnyValue };

function anyValue(v: AnyValue | undefined): unknown {
  if (!v) return undefined;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  if (v.arrayValue) return (v.arrayValue.values ?? []).map(anyValue);
  return undefined;
}

function attributes(list: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, anyValue(kv.value)]));
}

/** OTLP/JSON carries ids as hex; protobuf-JSON mappings use base64. Either becomes lowercase hex. */
function hexId(value: unknown): string {
  if (typeof value !== 'string' || value === '') return '';
  if (/^[0-9a-fA-F]+$/.test(value) && (value.length === 32 || value.length === 16))
    return value.toLowerCase();
  return Buffer.from(value, 'base64').toString('hex');
}

/** Decodes an OTLP/JSON ExportTraceServiceRequest into flat spans. */
export function decodeOtlpJson(body: unknown): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  const doc = body as {
    resourceSpans?: {
      resource?: { attributes?: KeyValue[] };
      scopeSpans?: {
        scope?: { name?: string };
        spans?: {
          traceId?: string;
          spanId?: string;
          parentSpanId?: string;
          name?: string;
          kind?: number;
          attributes?: KeyValue[];
          links?: { traceId?: string; spanId?: string; attributes?: KeyValue[] }[];
          status?: { code?: number; message?: string };
        }[];
      }[];
    }[];
  };
  for (const rs of doc.resourceSpans ?? []) {
    const service = String(attributes(rs.resource?.attributes)['service.name'] ?? '');
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        spans.push({
          service,
          scope: ss.scope?.name ?? '',
          traceId: hexId(s.traceId),
          spanId: hexId(s.spanId),
          parentSpanId: hexId(s.parentSpanId),
          name: s.name ?? '',
          kind: s.kind ?? 0,
          attributes: attributes(s.attributes),
          links: (s.links ?? []).map((l) => ({
            traceId: hexId(l.traceId),
            spanId: hexId(l.spanId),
            attributes: attributes(l.attributes),
          })),
          status: s.status ?? {},
        });
      }
    }
  }
  return spans;
}

/**
 * An OTLP/HTTP trace receiver on 127.0.0.1 (POST /v1/traces). It takes OTLP/JSON, which is what
 * the components' exporter (@opentelemetry/exporter-trace-otlp-http) sends; a protobuf body is
 * recorded as an error so that a change of wire format fails the test instead of losing spans.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];
  readonly requests: { path: string; contentType: string; encoding: string }[] = [];
  readonly errors: string[] = [];
  readonly #server: http.Server;

  private constructor(server: http.Server) {
    this.#server = server;
  }

  static async start(): Promise<OtlpReceiver> {
    let receiver: OtlpReceiver | undefined;
    const server = http.createServer((req, res) => void receiver?.handle(req, res));
    receiver = new OtlpReceiver(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return receiver;
  }

  /** The value for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces). */
  get endpoint(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const contentType = String(req.headers['content-type'] ?? '');
    const encoding = String(req.headers['content-encoding'] ?? '');
    this.requests.push({ path: req.url ?? '', contentType, encoding });
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404).end();
      return;
    }
    try {
      let raw = Buffer.concat(chunks);
      if (encoding === 'gzip') raw = gunzipSync(raw);
      if (!contentType.startsWith('application/json')) {
        throw new Error(`content-type ${contentType} (only OTLP/JSON is decoded here)`);
      }
      this.spans.push(...decodeOtlpJson(JSON.parse(raw.toString('utf8'))));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    } catch (error) {
      this.errors.push(String(error));
      res.writeHead(400, { 'content-type': 'application/json' }).end('{}');
    }
  }

  find(predicate: (s: ReceivedSpan) => boolean): ReceivedSpan | undefined {
    return this.spans.find(predicate);
  }

  summary(): string {
    return this.spans
      .map(
        (s) =>
          `${s.service} ${s.name} ${s.traceId}/${s.spanId} links=${s.links.map((l) => l.spanId).join(',')}`,
      )
      .join('\n');
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((r) => this.#server.close(() => r()));
  }
}

// --- a webhook that never answers -------------------------------------------------------------

/** A TCP server that accepts connections and never sends a byte (not even a TLS handshake). */
export class HangingServer {
  connections = 0;
  readonly #server: NetServer;
  readonly #sockets = new Set<Socket>();

  private constructor(server: NetServer) {
    this.#server = server;
  }

  static async start(): Promise<HangingServer> {
    let self: HangingServer | undefined;
    const server = createNetServer((socket) => {
      const owner = self;
      if (!owner) return;
      owner.connections++;
      owner.#sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => owner.#sockets.delete(socket));
    });
    self = new HangingServer(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return self;
  }

  get port(): number {
    return (this.#server.address() as AddressInfo).port;
  }

  close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    return new Promise((r) => this.#server.close(() => r()));
  }
}

// --- TLS ----------------------------------------------------------------------------------------

/**
 * The certificate a TLS server presents, fetched without verification and then pinned: it must
 * have the SHA-256 fingerprint the process logged for its in-memory certificate. The PEM then
 * goes into the configuration's caBundle and every admission call verifies against it.
 */
export async function pinnedCertificate(port: number, fingerprint256: string): Promise<string> {
  const der = await new Promise<Buffer>((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve(cert.raw);
    });
    socket.once('error', reject);
  });
  const pem = `-----BEGIN CERTIFICATE-----\n${der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
  const actual = new X509Certificate(pem).fingerprint256;
  if (actual !== fingerprint256) {
    throw new Error(`the webhook serves ${actual}, but logged ${fingerprint256}: not pinning it`);
  }
  return pem;
}

// --- deploy/ --------------------------------------------------------------------------------------

/** `kubectl kustomize deploy/`, as objects. */
export function renderDeploy(): Record<string, unknown>[] {
  const text = execFileSync('kubectl', ['kustomize', join(ROOT, 'deploy')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return parseAllDocuments(text)
    .map((d) => d.toJS() as Record<string, unknown> | null)
    .filter((d): d is Record<string, unknown> => d !== null);
}
