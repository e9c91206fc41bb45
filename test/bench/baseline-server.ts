// The benchmark's baseline: a bare node:https server that reads each request body and answers a
// constant AdmissionReview (the webhook's real answer to the benchmark's request), with the same
// certificate and keep-alive settings as the webhook. Usage: node baseline-server.ts CERT KEY RESPONSE
// Prints {"port": N} when listening; exits on SIGTERM.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';

const [certFile = '', keyFile = '', responseFile = ''] = process.argv.slice(2);
const answer = readFileSync(responseFile);
const headers = { 'content-type': 'application/json', 'content-length': answer.length };

const server = createServer(
  { cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.2' },
  (req, res) => {
    req.on('data', () => {});
    req.on('end', () => {
      res.writeHead(200, headers);
      res.end(answer);
    });
  },
);
server.keepAliveTimeout = 120_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
});
process.once('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
});
