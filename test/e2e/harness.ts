// Support for the end-to-end tests: the real component processes, a local OTLP/HTTP receiver,
// the kernel as `nft` shows it, the webhook's certificate, and bounded polling. Nothing here
// measures time: every wait polls a condition until a bound and then fails with context.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import http from 'node:http';
import {
  type AddressInfo,
  createServer as createNetServer,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { parseAllDocuments } from 'yaml';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const WEBHOOK_MAIN = join(ROOT, 'webhook/src/main.ts');
export const DAEMON_MAIN = join(ROOT, 'daemon/src/main.ts');
export const WAIT_MS = 20_000;

/** Node 24 (the project's), never the system's older node. */
export const NODE =
  Number(process.versions.node.split('.')[0]) >= 24 ? process.execPath : join(ROOT, 'node_modules/.bin/node');

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns something truthy; fails after `WAIT_MS` with `context()`. */
export async function until<T>(
  what: string,
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  context: () => string = () => '',
  boundMs = WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`);
    await sleep(50);
  }
}

export function hasCommand(command: string, args: string[]): boolean {
  try {
    execFileSync(command, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export async function freePort(): Promise<number> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

export type LogEntry = Record<string, unknown> & { msg?: string; level?: string };

/** A component process, its stderr read as JSON log lines. */
export class Proc {
  readonly name: string;
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  #done = false;

  constructor(name: string, script: string, args: string[], env: Record<string, string | undefined>) {
    this.name = name;
    const clean = Object.fromEntries(
      Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined),
    );
    this.child = spawn(NODE, [script, ...args], { env: clean, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.stdout += c));
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
    this.exited = new Promise((resolve) =>
      this.child.once('close', (code, signal) => {
        this.#done = true;
        resolve({ code, signal });
      }),
    );
  }

  get running(): boolean {
    return !this.#done;
  }

  logs(): LogEntry[] {
    return this.stderr
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => {
        try {
          return JSON.parse(l) as LogEntry;
        } catch {
          return { raw: l };
        }
      });
  }

  /** The first log line that satisfies `predicate`; fails if the process exits or the bound passes. */
  waitForLog(what: string, predicate: (l: LogEntry) => boolean): Promise<LogEntry> {
    return until(
      `${this.name}: ${what}`,
      () => {
        const found = this.logs().find(predicate);
        if (found) return found;
        if (!this.running) throw new Error(`${this.name} exited before ${what}\n${this.stderr}`);
        return undefined;
      },
      () => this.stderr,
    );
  }

  /** Sends `signal` and waits for the exit (SIGKILL after the bound). */
  async stop(
    signal: NodeJS.Signals = 'SIGTERM',
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (!this.running) return this.exited;
    this.child.kill(signal);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), WAIT_MS);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

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

// --- the kernel, seen through the nft CLI ---------------------------------------------------------

export function nftJson(netns: string): string | null {
  try {
    return execFileSync('ip', ['netns', 'exec', netns, 'nft', '-j', 'list', 'table', 'inet', 'slipstream'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    }).toString();
  } catch {
    return null;
  }
}

type Elem = [{ concat: (string | number)[] }, { jump?: { target: string }; goto?: { target: string } }];

/** The table's map elements as `svc4 ADDR PROTO PORT -> CHAIN` (sorted), and its chains; null without a table. */
export function kernelState(netns: string): { elements: string[]; chains: string[] } | null {
  const text = nftJson(netns);
  if (text === null) return null;
  const doc = JSON.parse(text) as {
    nftables: { map?: { name: string; elem?: Elem[] }; chain?: { name: string } }[];
  };
  const elements = doc.nftables
    .flatMap((i) =>
      (i.map?.elem ?? []).map(
        (e) => `${i.map?.name} ${e[0].concat.join(' ')} -> ${e[1].jump?.target ?? e[1].goto?.target ?? '?'}`,
      ),
    )
    .sort();
  const chains = doc.nftables.flatMap((i) => (i.chain ? [i.chain.name] : [])).sort();
  return { elements, chains };
}

export function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
}
