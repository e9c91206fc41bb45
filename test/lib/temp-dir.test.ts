import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDir } from './temp-dir.ts';

describe('tempDir', () => {
  let made = '';
  it('makes a fresh, writable directory', () => {
    made = tempDir('slipstream-lib-');
    expect(made).toMatch(/slipstream-lib-/);
    writeFileSync(join(made, 'f'), 'x');
    expect(tempDir('slipstream-lib-')).not.toBe(made);
  });
  it('removed it when the test that made it finished', () => {
    expect(made).not.toBe('');
    expect(existsSync(made)).toBe(false);
  });
});
