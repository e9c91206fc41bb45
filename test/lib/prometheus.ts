// Test support: a real Prometheus server (Debian's `prometheus` package) on loopback, with a temp
// config and storage, a short scrape interval and the project's alert rules; PromQL over its HTTP
// API; and promtool. Tests start their own server and stop it; nothing here touches another.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePort, hasCommand, until } from './process.ts';

export const hasPrometheus = (): boolean =>
  hasCommand('prometheus', ['--version']) && hasCommand('promtool', ['--version']);

const MISSING =
  "prometheus/promtool are not installed: Debian's prometheus package (scripts/setup.sh installs it)";

/** Runs promtool (with `input` on stdin); its exit code and everything it printed. */
export function promtool(args: string[], options: { cwd?: string; input?: string } = {}) {
  const r = spawnSync('promtool', args, {
    encoding: 'utf8',
    timeout: 60_000,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.input !== undefined ? { input: options.input } : {}),
  });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') throw new Error(MISSING);
  return { code: r.status, output: `${r.stdout}${r.stderr}` };
}

export interface ScrapeTarget {
  job: string;
  /** `127.0.0.1:PORT` */
  address: string;
  labels?: Record<string, string>;
}

export interface Sample {
  metric: Record<string, string>;
  value: number;
}

export class PrometheusServer {
  readonly url: string;
  readonly #child: ChildProcess;
  #log = '';

  private constructor(url: string, child: ChildProcess) {
    this.url = url;
    this.#child = child;
    child.stderr?.setEncoding('utf8').on('data', (c: string) => {
      this.#log = (this.#log + c).slice(-20_000);
    });
  }

  /** Starts Prometheus in `dir` (config, rules and storage there) and waits until it is ready. */
  static async start(options: {
    dir: string;
    targets: ScrapeTarget[];
    rules?: object;
    intervalSeconds?: number;
  }): Promise<PrometheusServer> {
    if (!hasPrometheus()) throw new Error(MISSING);
    const interval = `${options.intervalSeconds ?? 1}s`;
    const config: Record<string, unknown> = {
      global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
      scrape_configs: options.targets.map((t) => ({
        job_name: t.job,
        static_configs: [{ targets: [t.address], ...(t.labels ? { labels: t.labels } : {}) }],
      })),
    };
    if (options.rules) {
      writeFileSync(join(options.dir, 'rules.yaml'), stringify(options.rules));
      config.rule_files = ['rules.yaml'];
    }
    const configFile = join(options.dir, 'prometheus.yaml');
    writeFileSync(configFile, stringify(config));
    const port = await freePort();
    const child = spawn(
      'prometheus',
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${join(options.dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const server = new PrometheusServer(`http://127.0.0.1:${port}`, child);
    try {
      await until(
        'Prometheus to be ready',
        async () => {
          if (child.exitCode !== null)
            throw new Error(`prometheus exited with ${child.exitCode}\n${server.#log}`);
          return (await fetch(`${server.url}/-/ready`).catch(() => null))?.ok;
        },
        () => server.#log,
      );
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }

  /** An instant query: the samples of its vector result. */
  async query(promql: string): Promise<Sample[]> {
    const res = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    if (body.status !== 'success') throw new Error(`query ${promql} failed: ${body.error}`);
    if (body.data?.resultType !== 'vector') throw new Error(`query ${promql}: not a vector`);
    return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  /** Waits until `promql` returns a sample that satisfies `predicate`; returns it. */
  async waitFor(promql: string, predicate: (s: Sample) => boolean, what = promql): Promise<Sample> {
    let last: Sample[] = [];
    return until(
      what,
      async () => {
        last = await this.query(promql);
        return last.find(predicate);
      },
      () => `last result of ${promql}: ${JSON.stringify(last)}\n${this.#log}`,
    );
  }

  async stop(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.#child.once('close', resolve));
    this.#child.kill('SIGTERM');
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
}
