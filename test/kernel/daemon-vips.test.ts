/**
 * Every way traffic reaches a Service, on a real kernel (scenarios/daemon-vips.sh, one VM boot): the real
 * daemon programs one LoadBalancer Service, and a connection to each of its addresses (ClusterIP,
 * externalIP, load balancer IP, and the nodePort on the node's own address) is offloaded after its port's
 * threshold. Two ports of that Service carry their own thresholds (5432 at 20, http at 100); the observer's
 * forward-hook counters count what still took the slow path. No timing assertions (TCG, shared host).
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { type CtEntry, commentCounters, type NftJson, setElements, verdictMap } from './evidence.ts';
import { bootScenario, type Evidence, expectBulk, HOOK_TIMEOUT_MS } from './suite.ts';

interface Flows {
  elapsedMs: number;
  conditionsMet: boolean;
  nodeIp: string;
  running: Record<string, boolean>;
}

describe('daemon end to end: ClusterIP, externalIP, load balancer IP and nodePort (one VM boot)', () => {
  let ev: Evidence;
  let ct: CtEntry[];
  let nft: NftJson;
  let observer: Record<string, number>;
  let flows: Flows;

  const vm = bootScenario('daemon-vips', 'bash test/kernel/scenarios/daemon-vips.sh');
  beforeAll(async () => {
    ({ ev } = vm);
    ct = await ev.ct('ct.txt');
    nft = await ev.json<NftJson>('nft.json');
    observer = commentCounters(nft, 'observer');
    flows = await ev.json<Flows>('flows.json');
    console.info(`[vmlab] slow-path packets per address (observer): ${JSON.stringify(observer)}`);
  }, HOOK_TIMEOUT_MS);

  test('every address of the Service has its element, and the nodePort is matched on the node address set', () => {
    expect(flows.conditionsMet, JSON.stringify(flows)).toBe(true);
    expect(Object.values(flows.running).every(Boolean), JSON.stringify(flows.running)).toBe(true);
    const svc4 = verdictMap(nft, 'slipstream', 'svc4');
    for (const vip of ['10.96.5.10', '198.51.100.10', '203.0.113.10'])
      expect(svc4.get(`${vip} . tcp . 5432`), `${vip}:5432`).toBe('jump threshold-20');
    expect(svc4.get('10.96.5.10 . tcp . 8080'), 'the http port at its own threshold').toBe(
      'jump threshold-100',
    );
    const nodeports = verdictMap(nft, 'slipstream', 'nodeports');
    expect(nodeports.get('tcp . 30432')).toBe('jump threshold-20');
    expect(nodeports.get('tcp . 30080')).toBe('jump threshold-100');
    expect(setElements(nft, 'slipstream', 'node4'), 'the node address the client reaches').toContain(
      flows.nodeIp,
    );
  });

  test('a long flow to each address is offloaded after its threshold', () => {
    for (const [key, vip, port] of [
      ['cluster', '10.96.5.10', 5432],
      ['external', '198.51.100.10', 5432],
      ['lb', '203.0.113.10', 5432],
      ['nodeport', flows.nodeIp, 30432],
    ] as const) {
      const conn = expectBulk(ct, 'tcp', vip, port, true);
      // iperf3's control connection (~15 packets) and the data flow's first 20 or so take the slow path.
      expect(observer[key], `${key}: slow-path packets (${conn.line})`).toBeLessThan(200);
      expect(conn.packets, `${key}: long (${conn.line})`).toBeGreaterThan(1000);
    }
  });

  test('two ports of one Service: each offloads after its own threshold (20 and 100)', () => {
    const http = expectBulk(ct, 'tcp', '10.96.5.10', 8080, true);
    // Both directions count: at least 100 of the flow's packets took the slow path before its flow add.
    expect(observer.http, `http: slow-path packets (${http.line})`).toBeGreaterThanOrEqual(100);
    expect(observer.http, 'http: offloaded soon after its threshold').toBeLessThan(400);
    expect(observer.http!, 'the http port (100) took more slow-path packets than 5432 (20)').toBeGreaterThan(
      observer.cluster!,
    );
  });
});
