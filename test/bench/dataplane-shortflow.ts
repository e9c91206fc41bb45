// Short TCP connections for the data-plane benchmark (run inside the VM by
// test/kernel/scenarios/bench-dataplane.sh, with the repo's Node 24):
//
//   node test/bench/dataplane-shortflow.ts server PORT
//       answers every connection's first bytes with a short reply and closes it
//   node test/bench/dataplane-shortflow.ts client HOST PORT COUNT CONCURRENCY
//       opens COUNT connections (CONCURRENCY at a time), each: connect, send 4 bytes, read the reply,
//       close; prints {"connections", "failed", "ms", "perSecond"} as one JSON line. Only the loop is
//       timed (not Node's start-up, which is seconds under emulation).
//
// One connection is ~10 packets (handshake, request, reply, FINs and ACKs), fewer than any offload
// threshold, so these connections always take the slow path: they measure what Slipstream's rules cost
// the connections it does not offload.

import { connect, createServer } from 'node:net';

const REQUEST = Buffer.from('ping');
const REPLY = Buffer.from('pong\n');

function serve(port: number): void {
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    socket.once('data', () => socket.end(REPLY));
    socket.on('error', () => socket.destroy());
  });
  server.listen(port, '::', () => process.stderr.write(`shortflow server on ${port}\n`));
}

function once(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    let got = 0;
    const socket = connect({ host, port, noDelay: true });
    socket.once('connect', () => socket.write(REQUEST));
    socket.on('data', (b: Buffer) => {
      got += b.length;
    });
    socket.once('end', () => socket.end());
    socket.once('close', (hadError) => resolve(!hadError && got === REPLY.length));
    socket.once('error', () => socket.destroy());
    socket.setTimeout(10_000, () => socket.destroy());
  });
}

async function client(host: string, port: number, count: number, concurrency: number): Promise<void> {
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      if (!(await once(host, port))) failed++;
    }
  };
  // One connection first: resolves ARP/ND and warms the code paths outside the timed loop.
  await once(host, port);
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const ms = performance.now() - t0;
  process.stdout.write(
    `${JSON.stringify({ connections: count, failed, ms: Math.round(ms), perSecond: (count / ms) * 1000 })}\n`,
  );
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') {
  serve(Number(args[0]));
} else if (mode === 'client') {
  await client(args[0]!, Number(args[1]), Number(args[2]), Number(args[3] ?? 1));
} else {
  process.stderr.write('usage: dataplane-shortflow.ts server PORT | client HOST PORT COUNT CONCURRENCY\n');
  process.exitCode = 2;
}
