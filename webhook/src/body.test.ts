import { describe, expect, it } from 'vitest';
import { checkContentType, HttpError, nestingExceeds, parseJsonBody } from './body.ts';

const bytes = (s: string) => Buffer.from(s);

describe('nestingExceeds', () => {
  it('counts objects and arrays, not brackets inside strings', () => {
    expect(nestingExceeds(bytes('[[[1]]]'), 3)).toBe(false);
    expect(nestingExceeds(bytes('[[[[1]]]]'), 3)).toBe(true);
    expect(nestingExceeds(bytes('{"a":{"b":{"c":1}}}'), 3)).toBe(false);
    expect(nestingExceeds(bytes(`["${'['.repeat(100)}"]`), 3)).toBe(false);
    expect(nestingExceeds(bytes(`["\\"${'['.repeat(100)}"]`), 3)).toBe(false);
    expect(nestingExceeds(bytes(`["\\\\",${'['.repeat(5)}`), 3)).toBe(true);
  });

  it('measures depth, not the number of containers', () => {
    expect(nestingExceeds(bytes(JSON.stringify(Array.from({ length: 10_000 }, () => [{}]))), 3)).toBe(false);
  });

  it('stops at the limit on pathological input without recursion', () => {
    expect(nestingExceeds(bytes('['.repeat(1_000_000)))).toBe(true);
  });
});

describe('parseJsonBody', () => {
  it('parses JSON within the limits', () => {
    expect(parseJsonBody(bytes('{"a":[1,{"b":null}]}'))).toEqual({ a: [1, { b: null }] });
    expect(parseJsonBody(bytes(`${'['.repeat(64)}${']'.repeat(64)}`))).toBeInstanceOf(Array);
  });

  it.each([
    ['', /empty/],
    ['{"a":', /not JSON/],
    ['\u00ff\u00fe', /not JSON/],
    [`${'['.repeat(65)}${']'.repeat(65)}`, /deeper than 64/],
  ])('refuses %j with a 400', (text, message) => {
    try {
      parseJsonBody(bytes(text));
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(HttpError);
      expect((error as HttpError).status).toBe(400);
      expect((error as HttpError).message).toMatch(message);
    }
  });
});

describe('checkContentType', () => {
  it.each(['application/json', 'application/json; charset=utf-8', 'Application/JSON;charset="UTF-8"'])(
    'accepts %s',
    (type) => {
      expect(() => checkContentType({ 'content-type': type })).not.toThrow();
    },
  );

  it.each([
    undefined,
    'text/json',
    'application/json-patch+json',
    'application/json; charset=iso-8859-1',
    'application/yaml',
  ])('refuses %s with a 415', (type) => {
    expect(() => checkContentType(type === undefined ? {} : { 'content-type': type })).toThrow(
      expect.objectContaining({ status: 415 }),
    );
  });

  it('refuses compressed bodies', () => {
    expect(() =>
      checkContentType({ 'content-type': 'application/json', 'content-encoding': 'gzip' }),
    ).toThrow(/Content-Encoding/);
  });
});
