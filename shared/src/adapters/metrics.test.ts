import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from './log.ts';
import { createMetricsRegistry, PolicyMetrics, serveMetrics } from './metrics.ts';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

async function serve(registry = createMetricsRegistry('daemon')): Promise<string> {
  const server = await serveMetrics({ host: '127.0.0.1', port: 0 }, registry, silentLogger);
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('createMetricsRegistry', () => {
  it('carries the default process and runtime metrics and the build info', async () => {
    const text = await createMetricsRegistry('webhook').metrics();
    expect(text).toMatch(/^process_cpu_seconds_total \d/m);
    expect(text).toMatch(/^process_resident_memory_bytes \d/m);
    expect(text).toMatch(/^nodejs_heap_size_used_bytes \d/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds /m);
    expect(text).toContain('slipstream_build_info{component="webhook",version="0.1.0"} 1');
  });

  it('gives each component its own registry', async () => {
    const a = createMetricsRegistry('daemon');
    const b = createMetricsRegistry('webhook');
    expect(await a.metrics()).not.toContain('component="webhook"');
    expect(await b.metrics()).not.toContain('component="daemon"');
  });
});

describe('serveMetrics', () => {
  it('serves the text format at GET /metrics', async () => {
    const url = await serve();
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(await res.text()).toContain('# TYPE slipstream_build_info gauge');
  });

  it('serves nothing else: 404 for other paths, 405 for other methods', async () => {
    const url = await serve();
    expect((await fetch(`${url}/status`)).status).toBe(404);
    expect((await fetch(`${url}/`)).status).toBe(404);
    expect((await fetch(`${url}/metrics`, { method: 'POST' })).status).toBe(405);
    const head = await fetch(`${url}/metrics`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('rejects with the reason when the address is taken', async () => {
    const url = await serve();
    const port = Number(new URL(url).port);
    await expect(
      serveMetrics({ host: '127.0.0.1', port }, createMetricsRegistry('daemon'), silentLogger),
    ).rejects.toThrow(/EADDRINUSE/);
  });
});

describe('PolicyMetrics', () => {
  it('counts reloads and failures, and names the policy in force', async () => {
    const registry = createMetricsRegistry('daemon');
    const policy = new PolicyMetrics(registry, 'default@1#aaa');
    let text = await registry.metrics();
    expect(text).toContain('slipstream_policy_reloads_total{result="success"} 0');
    expect(text).toContain('slipstream_policy_reloads_total{result="failure"} 0');
    expect(text).toContain('slipstream_policy_info{policy="default@1#aaa"} 1');
    policy.failed();
    policy.reloaded('default@2#bbb');
    text = await registry.metrics();
    expect(text).toContain('slipstream_policy_reloads_total{result="success"} 1');
    expect(text).toContain('slipstream_policy_reloads_total{result="failure"} 1');
    expect(text).toContain('slipstream_policy_info{policy="default@2#bbb"} 1');
    expect(text).not.toContain('default@1#aaa');
  });
});
