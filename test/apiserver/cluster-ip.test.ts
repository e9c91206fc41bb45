// ClusterIP allocation, directly.

import { describe, expect, it } from 'vitest';
import { allocate, Ipam } from './cluster-ip.ts';
import type { Json } from './resources.ts';
import { StatusError } from './status.ts';

const service = (spec: Json): Json => ({ metadata: { name: 'a' }, spec: { type: 'ClusterIP', ...spec } });
const specOf = (object: Json) => object.spec as Json;

describe('allocate', () => {
  it('gives single-stack Services an IPv4 address from 10.96.0.0/16, never the same twice', () => {
    const ipam = new Ipam();
    const seen = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const s = service({});
      allocate(s, undefined, ipam);
      const ip = String(specOf(s).clusterIP);
      expect(ip).toMatch(/^10\.96\.\d+\.\d+$/);
      expect(ip).not.toMatch(/\.(0|255)$/);
      expect(seen.has(ip)).toBe(false);
      seen.add(ip);
      expect(specOf(s)).toMatchObject({
        clusterIPs: [ip],
        ipFamilies: ['IPv4'],
        ipFamilyPolicy: 'SingleStack',
      });
    }
  });

  it('dual stack: one address per family, the asked family first', () => {
    const ipam = new Ipam();
    const dual = service({ ipFamilyPolicy: 'RequireDualStack' });
    allocate(dual, undefined, ipam);
    expect(specOf(dual).ipFamilies).toEqual(['IPv4', 'IPv6']);
    expect(specOf(dual).clusterIPs).toEqual([
      expect.stringMatching(/^10\.96\./),
      expect.stringMatching(/^fd00:10:96::/),
    ]);
    const v6first = service({ ipFamilyPolicy: 'PreferDualStack', ipFamilies: ['IPv6'] });
    allocate(v6first, undefined, ipam);
    expect(specOf(v6first).ipFamilies).toEqual(['IPv6', 'IPv4']);
    expect(String(specOf(v6first).clusterIP)).toMatch(/^fd00:10:96::/);
  });

  it('keeps a requested address and takes it out of the pool', () => {
    const ipam = new Ipam();
    const fixed = service({ clusterIP: '10.96.0.10' });
    allocate(fixed, undefined, ipam);
    expect(specOf(fixed).clusterIPs).toEqual(['10.96.0.10']);
    const next = service({});
    allocate(next, undefined, ipam);
    expect(specOf(next).clusterIP).not.toBe('10.96.0.10');
  });

  it('headless Services get None, ExternalName ones no address at all', () => {
    const ipam = new Ipam();
    const headless = service({ clusterIP: 'None' });
    allocate(headless, undefined, ipam);
    expect(specOf(headless)).toMatchObject({
      clusterIP: 'None',
      clusterIPs: ['None'],
      ipFamilyPolicy: 'SingleStack',
    });
    const external = service({
      type: 'ExternalName',
      externalName: 'db.example.com',
      clusterIP: '10.96.0.99',
    });
    allocate(external, undefined, ipam);
    expect(specOf(external).clusterIP).toBeUndefined();
    expect(specOf(external).clusterIPs).toBeUndefined();
  });

  it('an update keeps the addresses; changing them is 422 (immutable)', () => {
    const ipam = new Ipam();
    const old = service({});
    allocate(old, undefined, ipam);
    const update = service({});
    allocate(update, old, ipam);
    expect(specOf(update).clusterIPs).toEqual(specOf(old).clusterIPs);
    const moved = service({ clusterIPs: ['10.96.9.9'] });
    expect(() => allocate(moved, old, ipam)).toThrow(StatusError);
    expect(() => allocate(service({ clusterIPs: ['10.96.9.9'] }), old, ipam)).toThrow(
      /may not change once set/,
    );
  });
});
