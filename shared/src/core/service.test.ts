import { describe, expect, it } from 'vitest';
import { readService, serviceKey } from './service.ts';

describe('serviceKey', () => {
  it('is namespace/name, for a read Service and for a bare reference alike', () => {
    const read = readService({
      metadata: { name: 'db', namespace: 'shop' },
      spec: { ports: [{ port: 5432 }] },
    });
    expect(read.ok && serviceKey(read.value)).toBe('shop/db');
    expect(serviceKey({ namespace: 'shop', name: 'db' })).toBe('shop/db');
  });
});
