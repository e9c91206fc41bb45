// The benchmark results as pictures: Vega-Lite specs built from results.json (chartSpecs, pure), rendered to
// SVG by Vega's headless view (no browser, no canvas) into test/bench/charts/. `npm run bench` renders them
// after every run; `node test/bench/charts.ts` re-renders them from the committed results.json.
//
// Every plotted value is inline data in its spec, and Vega writes each mark's data into its aria-label, so the
// SVG itself carries the figures (charts.test.ts checks that it does). A chart whose figures are not in the
// results (a benchmark that has not run here yet) is left out and named.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { Figures, Goal } from './run.ts';

export const CHARTS_DIR = join(dirname(fileURLToPath(import.meta.url)), 'charts');

export interface Chart {
  /** File name without `.svg`. */
  name: string;
  /** What it shows, for the README and the alt text. */
  title: string;
  spec: TopLevelSpec;
}

interface Spread {
  median: number;
  min: number;
  max: number;
}

function isSpread(v: unknown): v is Spread {
  const s = v as Spread;
  return typeof s === 'object' && s !== null && [s.median, s.min, s.max].every((x) => typeof x === 'number');
}

function record(v: unknown): Record<string, unknown> | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

/** "5 runs, load 1.9, 2026-11-25": where a figure comes from, for a subtitle. */
function provenance(results: Figures, prefix: string): string {
  const ctx = record(results[`${prefix}.context`]);
  const date = typeof ctx?.date === 'string' ? ctx.date.slice(0, 10) : undefined;
  const load = typeof ctx?.loadAverage1m === 'number' ? `load average ${ctx.loadAverage1m}` : undefined;
  return [date, load].filter(Boolean).join(', ');
}

const WIDTH = 420;
const HEIGHT = 240;
const COLORS = ['#1f77b4', '#ff7f0e', '#9e9e9e'];
const base = {
  $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
  width: WIDTH,
  height: HEIGHT,
  background: 'white',
  // Subtitle lines stay short: without a canvas Vega estimates text widths generously, and a long line
  // widens the picture with blank space.
  config: {
    font: 'sans-serif',
    title: { anchor: 'start', subtitleColor: '#555', subtitleFontSize: 11 },
    axisX: { labelAngle: 0 },
    legend: { labelLimit: 0 },
  },
} as const;

function longFlow(results: Figures): Chart | undefined {
  const mbps = record(results['dataplane.longFlowMbps']);
  const ratios = record(results['dataplane.longFlowRatioByRules']);
  if (!mbps || !ratios) return undefined;
  const series = [
    ['clusterIpOn', 'ClusterIP, with offload'],
    ['clusterIpOff', 'ClusterIP, without offload'],
    ['podIp', 'pod IP, without offload'],
  ] as const;
  const rows: Record<string, string | number>[] = [];
  for (const rules of Object.keys(mbps).sort((a, b) => Number(a) - Number(b))) {
    const ratio = record(ratios[rules])?.ratio;
    const forward = `${Number(rules).toLocaleString('en')} rules: ${typeof ratio === 'number' ? `${ratio.toFixed(2)}x` : '?'}`;
    for (const [key, label] of series) {
      const s = record(mbps[rules])?.[key];
      if (isSpread(s))
        rows.push({ rules: Number(rules), forward, series: label, median: s.median, min: s.min, max: s.max });
    }
  }
  if (rows.length === 0) return undefined;
  const x = {
    field: 'forward',
    type: 'nominal',
    sort: { field: 'rules', op: 'min' },
    title: 'firewall rules in the forward path: speed-up with offload',
  } as const;
  return {
    name: 'long-flow-throughput',
    title: 'Long-flow throughput with and without offload, by forward-path size',
    spec: {
      ...base,
      title: {
        text: 'Long-flow throughput to a ClusterIP, by forward-path size',
        subtitle: [
          'iperf3 Mbit/s, median and min-max of interleaved runs,',
          'Linux 6.1 under qemu TCG: compare the bars, the absolute',
          `numbers are emulated. ${provenance(results, 'dataplane')}`,
        ],
      },
      data: { values: rows },
      encoding: { x, xOffset: { field: 'series', sort: series.map((s) => s[1]) } },
      layer: [
        {
          mark: 'bar',
          encoding: {
            y: { field: 'median', type: 'quantitative', title: 'Mbit/s' },
            color: {
              field: 'series',
              sort: series.map((s) => s[1]),
              scale: { range: COLORS },
              legend: { orient: 'top', direction: 'vertical', title: null },
            },
          },
        },
        {
          mark: { type: 'rule', color: '#333' },
          encoding: { y: { field: 'min', type: 'quantitative' }, y2: { field: 'max' } },
        },
      ],
    },
  };
}

function shortFlow(results: Figures): Chart | undefined {
  const rate = record(results['dataplane.shortFlowPerSecond']);
  const ratio = results['dataplane.shortFlowRatio'];
  if (!rate || !isSpread(rate.on) || !isSpread(rate.off) || typeof ratio !== 'number') return undefined;
  const rows = [
    { mode: 'with Slipstream', ...rate.on },
    { mode: 'without Slipstream', ...rate.off },
  ];
  return {
    name: 'short-connection-rate',
    title: 'Short-connection rate with and without Slipstream',
    spec: {
      ...base,
      height: 160,
      title: {
        text: `Short connections per second: ${ratio.toFixed(3)}x with Slipstream`,
        subtitle: [
          'connections below the threshold (never offloaded) to a',
          'ClusterIP, 500 firewall rules; median and min-max of',
          `interleaved runs, qemu TCG. ${provenance(results, 'dataplane')}`,
        ],
      },
      data: { values: rows },
      encoding: { y: { field: 'mode', type: 'nominal', title: null } },
      layer: [
        {
          mark: 'bar',
          encoding: {
            x: { field: 'median', type: 'quantitative', title: 'connections/s' },
            color: { field: 'mode', scale: { range: COLORS }, legend: null },
          },
        },
        {
          mark: { type: 'rule', color: '#333' },
          encoding: { x: { field: 'min', type: 'quantitative' }, x2: { field: 'max' } },
        },
      ],
    },
  };
}

/** Latency by percentile: every add when the bench kept them, else the summary it always keeps. */
function addLatencyPoints(add: Record<string, unknown>): { percentile: number; ms: number }[] {
  const samples = add.latencySamplesMs;
  if (Array.isArray(samples) && samples.length > 0 && samples.every((v) => typeof v === 'number')) {
    const sorted = [...(samples as number[])].sort((a, b) => a - b);
    return sorted.map((ms, i) => ({ percentile: Math.round(((i + 1) / sorted.length) * 1000) / 10, ms }));
  }
  const s = record(add.latencyMs);
  const at: [number, unknown][] = [
    [0, s?.min],
    [50, s?.p50],
    [90, s?.p90],
    [99, s?.p99],
    [100, s?.max],
  ];
  return at
    .filter((p): p is [number, number] => typeof p[1] === 'number')
    .map(([percentile, ms]) => ({ percentile, ms }));
}

function addLatency(results: Figures, goals: Record<string, Goal>): Chart | undefined {
  const add = record(record(results['daemon.details'])?.add);
  if (!add) return undefined;
  const points = addLatencyPoints(add);
  if (points.length === 0) return undefined;
  const present = typeof add.servicesPresent === 'number' ? add.servicesPresent.toLocaleString('en') : '?';
  const goal = goals['daemon.addP99Ms']?.max;
  return {
    name: 'service-add-latency',
    title: 'Service-add latency distribution',
    spec: {
      ...base,
      title: {
        text: 'Service add -> its elements readable in the kernel',
        subtitle: [
          `${points.length > 5 ? `each of ${points.length} adds` : 'adds'} by percentile, ${present} Services present,`,
          `real kernel (degraded). ${provenance(results, 'daemon')}`,
        ],
      },
      layer: [
        {
          data: { values: points },
          mark: { type: 'line', interpolate: 'step-after', point: { size: 14 } },
          encoding: {
            x: {
              field: 'percentile',
              type: 'quantitative',
              title: 'percentile',
              scale: { domain: [0, 100] },
            },
            y: { field: 'ms', type: 'quantitative', title: 'ms' },
          },
        },
        ...(goal === undefined
          ? []
          : [
              {
                data: { values: [{ goal, label: `goal: p99 < ${goal} ms` }] },
                layer: [
                  {
                    mark: { type: 'rule' as const, color: '#d62728', strokeDash: [4, 3] },
                    encoding: { y: { field: 'goal', type: 'quantitative' as const } },
                  },
                  {
                    mark: { type: 'text' as const, align: 'left' as const, dx: 4, dy: -6, color: '#d62728' },
                    encoding: {
                      y: { field: 'goal', type: 'quantitative' as const },
                      x: { datum: 0, type: 'quantitative' as const },
                      text: { field: 'label' },
                    },
                  },
                ],
              },
            ]),
      ],
    },
  };
}

function daemonMemory(results: Figures, goals: Record<string, Goal>): Chart | undefined {
  const byCount = record(results['daemon.rssMBByServices']) ?? {};
  const points = Object.entries(byCount)
    .filter((e): e is [string, number] => typeof e[1] === 'number')
    .map(([services, rssMB]) => ({ services: Number(services), rssMB }));
  const at100k = results['daemon.rssMB100k'];
  if (typeof at100k === 'number' && !points.some((p) => p.services === 100_000))
    points.push({ services: 100_000, rssMB: at100k });
  if (points.length === 0) return undefined;
  points.sort((a, b) => a.services - b.services);
  const goal = goals['daemon.rssMB100k']?.max;
  return {
    name: 'daemon-memory',
    title: 'Daemon memory by Service count',
    spec: {
      ...base,
      title: {
        text: 'Daemon memory (VmRSS at ready) by Service count',
        subtitle: [
          'the real daemon process, one port per Service,',
          `embedded mode. ${provenance(results, 'daemon')}`,
          ...(points.length === 1 ? ['(the other counts: from the next npm run bench -- daemon)'] : []),
        ],
      },
      layer: [
        {
          data: { values: points },
          mark: { type: 'line', point: true },
          encoding: {
            x: {
              field: 'services',
              type: 'quantitative',
              title: 'Services',
              scale: { type: 'log' },
              axis: { format: '~s', values: points.map((p) => p.services) },
            },
            y: { field: 'rssMB', type: 'quantitative', title: 'MB' },
          },
        },
        ...(goal === undefined
          ? []
          : [
              {
                data: { values: [{ services: 100_000, goal, label: `goal at 100k: < ${goal} MB` }] },
                layer: [
                  {
                    mark: {
                      type: 'point' as const,
                      shape: 'diamond',
                      color: '#d62728',
                      filled: true,
                      size: 80,
                    },
                    encoding: {
                      x: { field: 'services', type: 'quantitative' as const },
                      y: { field: 'goal', type: 'quantitative' as const },
                    },
                  },
                  {
                    mark: {
                      type: 'text' as const,
                      align: 'right' as const,
                      dx: -8,
                      dy: -12,
                      color: '#d62728',
                    },
                    encoding: {
                      x: { field: 'services', type: 'quantitative' as const },
                      y: { field: 'goal', type: 'quantitative' as const },
                      text: { field: 'label' },
                    },
                  },
                ],
              },
            ]),
      ],
    },
  };
}

/** The charts these results hold figures for, and the names of those they do not. */
export function chartSpecs(
  results: Figures,
  goals: Record<string, Goal> = {},
): { charts: Chart[]; missing: string[] } {
  const all: [string, Chart | undefined][] = [
    ['long-flow-throughput', longFlow(results)],
    ['short-connection-rate', shortFlow(results)],
    ['service-add-latency', addLatency(results, goals)],
    ['daemon-memory', daemonMemory(results, goals)],
  ];
  return {
    charts: all.flatMap(([, c]) => (c ? [c] : [])),
    missing: all.filter(([, c]) => !c).map(([name]) => name),
  };
}

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return `${await view.toSVG()}\n`;
  } finally {
    view.finalize();
  }
}

/** Renders every chart the results hold into `dir` (<name>.svg); returns the files written. */
export async function renderCharts(
  results: Figures,
  goals: Record<string, Goal>,
  dir = CHARTS_DIR,
): Promise<string[]> {
  const { charts, missing } = chartSpecs(results, goals);
  if (missing.length > 0) process.stderr.write(`charts: no figures yet for ${missing.join(', ')}\n`);
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const chart of charts) {
    const file = join(dir, `${chart.name}.svg`);
    writeFileSync(file, await renderSvg(chart.spec));
    written.push(file);
  }
  return written;
}

// `node test/bench/charts.ts`: re-render from the committed results.json.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { RESULTS_JSON, loadGoals } = await import('./run.ts');
  const results = JSON.parse(readFileSync(RESULTS_JSON, 'utf8')) as Figures;
  for (const file of await renderCharts(results, await loadGoals())) process.stdout.write(`${file}\n`);
}
