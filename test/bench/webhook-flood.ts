// The webhook under a flood of worst-case bodies: 32 clients, each on its own keep-alive
// connection, sending AdmissionReviews just under the 1 MiB body limit back to back, while a
// probe asks /healthz the way the kubelet does (a new connection each time) and another sends
// ordinary reviews. What counts: the webhook's peak RSS, and how long /healthz and the ordinary
// reviews took meanwhile. The flood's clients run in a child process of their own (encrypting
// 32 MiB a round is work), so that the probes measure the webhook, not their neighbour.
//
//   node webhook-flood.ts URL CLIENTS SECONDS    runs the flood's clients, prints their answers

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Agent, request } from 'node:https';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MAX_PORTS } from '@slipstream/shared/core/bounds';
import { percentile } from './https-load.ts';

const KIB = 1024;

function admissionReview(uid: string, object: unknown) {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Service' },
      resource: { group: '', version: 'v1', resource: 'services' },
      operation: 'CREATE',
      namespace: 'flood',
      name: uid,
      object,
    },
  };
}

function service(
  name: string,
  extra: { ports: unknown[]; annotations?: Record<string, string>; padding?: string },
) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace: 'flood',
      ...(extra.annotations ? { annotations: extra.annotations } : {}),
      // What a large real object carries besides its spec: field-manager bookkeeping.
      ...(extra.padding
        ? { managedFields: [{ manager: 'flood', operation: 'Update', fieldsV1: { padding: extra.padding } }] }
        : {}),
    },
    spec: { type: 'ClusterIP', clusterIP: '10.96.7.7', ports: extra.ports },
  };
}

/** Pads a body with managedFields until it is `bytes` long (to within a few bytes). */
function padded(build: (padding: string) => unknown, bytes: number): Buffer {
  const bare = Buffer.byteLength(JSON.stringify(build('')));
  return Buffer.from(JSON.stringify(build('x'.repeat(Math.max(0, bytes - bare)))));
}

/**
 * The worst cases, each just under 1 MiB: the most ports a body can hold (the issue's 70,000), the
 * most annotations, and the most a review evaluates in full (MAX_PORTS ports and annotations just under
 * Kubernetes' 256 KiB, padded).
 */
export function worstCaseBodies(): { name: string; body: Buffer }[] {
  const target = 1010 * KIB;
  const manyPorts = Array.from({ length: 70_000 }, (_, i) => ({ port: (i % 65_535) + 1 }));
  const annotations: Record<string, string> = {};
  for (let i = 0; Buffer.byteLength(JSON.stringify(annotations)) < target - 2 * KIB; i++) {
    for (let j = 0; j < 1000; j++) annotations[`flood.example/k${i * 1000 + j}`] = 'v'.repeat(8);
  }
  const justUnder: Record<string, string> = {};
  for (let i = 0; i < 250; i++) justUnder[`flood.example/big-${i}`] = 'v'.repeat(1000);
  const evaluated = Array.from({ length: MAX_PORTS }, (_, i) => ({
    name: `p${i}`,
    port: 10_000 + i,
    protocol: 'TCP',
  }));
  return [
    {
      name: '70,000 ports',
      body: padded(
        (p) => admissionReview('flood-ports', service('ports', { ports: manyPorts, padding: p })),
        target,
      ),
    },
    {
      name: `${Object.keys(annotations).length} annotations`,
      body: padded(
        (p) =>
          admissionReview(
            'flood-annotations',
            service('annotations', { ports: [{ port: 80 }], annotations, padding: p }),
          ),
        target,
      ),
    },
    {
      name: '1,000 ports + 250 kB annotations, evaluated',
      body: padded(
        (p) =>
          admissionReview(
            'flood-evaluated',
            service('evaluated', { ports: evaluated, annotations: justUnder, padding: p }),
          ),
        target,
      ),
    },
  ];
}

interface Timed {
  status: number;
  ms: number;
}

function call(
  url: URL,
  options: { method: string; body?: Buffer; agent: Agent | false; timeoutMs: number },
): Promise<Timed> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: options.method,
        agent: options.agent,
        rejectUnauthorized: false,
        timeout: options.timeoutMs,
        headers: options.body
          ? { 'content-type': 'application/json', 'content-length': options.body.length }
          : { 'content-length': 0 },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: -1, ms: performance.now() - t0 }));
    req.end(options.body);
  });
}

export interface FloodResult {
  seconds: number;
  /** Answers to the flood's requests by HTTP status (-1: the connection failed or was closed). */
  floodAnswers: Record<string, number>;
  healthz: { n: number; p50Ms: number; maxMs: number; failures: number };
  ordinary: { n: number; p50Ms: number; p99Ms: number; maxMs: number; non200: number };
}

/** The flood's clients, for `seconds`: each sends the bodies in turn, one request at a time. */
async function floodClients(url: string, clients: number, seconds: number): Promise<Record<string, number>> {
  const bodies = worstCaseBodies().map((b) => b.body);
  const mutate = new URL('/mutate?timeout=3s', url);
  const deadline = performance.now() + seconds * 1000;
  const answers: Record<string, number> = {};
  const agent = new Agent({ keepAlive: true, maxSockets: clients });
  const client = async (index: number) => {
    for (let i = index; performance.now() < deadline; i++) {
      const { status } = await call(mutate, {
        method: 'POST',
        body: bodies[i % bodies.length]!,
        agent,
        timeoutMs: 30_000,
      });
      answers[status] = (answers[status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: clients }, (_, i) => client(i)));
  agent.destroy();
  return answers;
}

export async function flood(options: {
  url: string;
  ordinary: Buffer;
  clients: number;
  seconds: number;
}): Promise<FloodResult> {
  const base = new URL(options.url);
  if (base.hostname !== '127.0.0.1') throw new Error('the flood goes to 127.0.0.1 only');
  const mutate = new URL('/mutate?timeout=3s', base);
  const child = spawn(
    process.execPath,
    [fileURLToPath(import.meta.url), options.url, String(options.clients), String(options.seconds)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => {
    out += c;
  });
  const exited = once(child, 'exit');
  // The clients build their bodies first; the probes start with the flood.
  await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
  const deadline = performance.now() + options.seconds * 1000;
  const healthz: Timed[] = [];
  const probeHealth = async () => {
    while (performance.now() < deadline) {
      healthz.push(await call(new URL('/healthz', base), { method: 'GET', agent: false, timeoutMs: 30_000 }));
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const ordinary: Timed[] = [];
  const ordinaryAgent = new Agent({ keepAlive: true, maxSockets: 1 });
  const probeReviews = async () => {
    while (performance.now() < deadline) {
      ordinary.push(
        await call(mutate, {
          method: 'POST',
          body: options.ordinary,
          agent: ordinaryAgent,
          timeoutMs: 30_000,
        }),
      );
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const t0 = performance.now();
  await Promise.all([probeHealth(), probeReviews()]);
  await exited;
  ordinaryAgent.destroy();
  const answers = JSON.parse(out.slice(out.indexOf('\n') + 1)) as Record<string, number>;
  const ms = (xs: Timed[]) => xs.map((x) => x.ms);
  const r = (x: number) => Math.round(x * 10) / 10;
  return {
    seconds: r((performance.now() - t0) / 1000),
    floodAnswers: answers,
    healthz: {
      n: healthz.length,
      p50Ms: r(percentile(ms(healthz), 50)),
      maxMs: r(Math.max(...ms(healthz))),
      failures: healthz.filter((h) => h.status !== 200).length,
    },
    ordinary: {
      n: ordinary.length,
      p50Ms: r(percentile(ms(ordinary), 50)),
      p99Ms: r(percentile(ms(ordinary), 99)),
      maxMs: r(Math.max(...ms(ordinary))),
      non200: ordinary.filter((o) => o.status !== 200).length,
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [url = '', clients = '32', seconds = '15'] = process.argv.slice(2);
  if (new URL(url).hostname !== '127.0.0.1') throw new Error('the flood goes to 127.0.0.1 only');
  worstCaseBodies();
  process.stdout.write('ready\n');
  const answers = await floodClients(url, Number(clients), Number(seconds));
  process.stdout.write(`${JSON.stringify(answers)}\n`);
}
