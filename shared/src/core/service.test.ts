import { describe, expect, it } from 'vitest';
import { internedService, readService, serviceKey, splitServiceKey } from './service.ts';

describe('serviceKey', () => {
  it('is namespace/name, for a read Service and for a bare reference alike', () => {
    const read = readService({
      metadata: { name: 'db', namespace: 'shop' },
      spec: { ports: [{ port: 5432 }] },
    });
    expect(read.ok && serviceKey(read.value)).toBe('shop/db');
    expect(serviceKey({ namespace: 'shop', name: 'db' })).toBe('shop/db');
    expect(splitServiceKey('shop/db')).toEqual({ namespace: 'shop', name: 'db' });
  });
});

describe('compact Service records', () => {
  const object = (name: string, annotations?: Record<string, string>) => ({
    metadata: { name, namespace: 'shop', uid: `uid-${name}`, ...(annotations ? { annotations } : {}) },
    spec: {
      type: 'NodePort',
      clusterIP: '10.96.0.10',
      externalTrafficPolicy: 'Local',
      ports: [
        { name: 'http', port: 80, nodePort: 30080, appProtocol: 'http' },
        { port: 53, protocol: 'UDP' },
      ],
    },
  });

  it('Services without annotations share one frozen empty object', () => {
    const a = readService(object('a'));
    const b = readService(object('b'));
    if (!a.ok || !b.ok) throw new Error('not read');
    expect(a.value.annotations).toEqual({});
    expect(a.value.annotations).toBe(b.value.annotations);
    expect(Object.isFrozen(a.value.annotations)).toBe(true);
  });

  it('internedService keeps every field, in readService order, and takes repeated strings from the interner', () => {
    const read = readService(object('a', { 'hints.slipstream.dev/offload': 'true' }));
    if (!read.ok) throw new Error('not read');
    const asked: string[] = [];
    const interned = internedService(read.value, (text) => {
      asked.push(text);
      return text;
    });
    expect(interned).toEqual(read.value);
    expect(JSON.stringify(interned)).toBe(JSON.stringify(read.value));
    expect(asked).toEqual(expect.arrayContaining(['shop', 'http', 'hints.slipstream.dev/offload', 'true']));
    expect(asked).not.toContain('a');
    expect(asked).not.toContain('uid-a');
  });
});
