import { readService } from '@slipstream/shared/core/service';
import { describe, expect, it } from 'vitest';
import { LAST_APPLIED_ANNOTATION, slim, stripObject } from './slim.ts';

describe('stripObject', () => {
  it('drops managedFields, status and last-applied without touching the input', () => {
    const input = {
      metadata: {
        name: 'a',
        managedFields: [{ manager: 'kubectl' }],
        annotations: { [LAST_APPLIED_ANNOTATION]: '{}', keep: 'me' },
      },
      spec: { ports: [] },
      status: { loadBalancer: {} },
    };
    expect(stripObject(input)).toEqual({
      metadata: { name: 'a', annotations: { keep: 'me' } },
      spec: { ports: [] },
    });
    expect(input.metadata.managedFields).toHaveLength(1);
    expect(input.metadata.annotations[LAST_APPLIED_ANNOTATION]).toBe('{}');
    expect(stripObject('x')).toBe('x');
  });
});

describe('slim', () => {
  it('keeps the identity and the typed Service, nothing of the raw object', () => {
    const entry = slim(
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'db', namespace: 'shop', resourceVersion: '42', labels: { big: 'x'.repeat(1000) } },
        spec: { clusterIPs: ['10.96.0.5'], ports: [{ port: 5432, protocol: 'TCP' }] },
      },
      readService,
    );
    expect(entry.metadata).toEqual({ name: 'db', namespace: 'shop', resourceVersion: '42' });
    expect(entry.value).toMatchObject({ namespace: 'shop', name: 'db', clusterIPs: ['10.96.0.5'] });
    expect(entry.error).toBeUndefined();
    expect(JSON.stringify(entry)).not.toContain('xxxx');
  });

  it('keeps why an object cannot be read, under its identity', () => {
    const entry = slim(
      { metadata: { name: 'bad', namespace: 'shop' }, spec: { ports: 'nope' } },
      readService,
    );
    expect(entry.metadata).toEqual({ name: 'bad', namespace: 'shop' });
    expect(entry.value).toBeUndefined();
    expect(entry.error).toBe('spec.ports is not a list');
  });
});
