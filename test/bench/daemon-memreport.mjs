// Preloaded (`node --import`) into the daemon only by the benchmark's diagnostic run: on SIGUSR2
// it writes `slipstream-bench-memory {process.memoryUsage()}` as one line on stderr, so that the
// daemon's RSS can be split into V8 heap and native memory. Plain JavaScript: a .ts preload would
// load Node's TypeScript stripper (3.6 MB of source text in the heap) into the process measured.

process.on('SIGUSR2', () => {
  process.stderr.write(`slipstream-bench-memory ${JSON.stringify(process.memoryUsage())}\n`);
});
