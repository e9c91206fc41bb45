import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { describe, expect, test } from 'vitest';
import { CHARTS_DIR, chartSpecs, renderSvg } from './charts.ts';
import { type Figures, loadGoals, RESULTS_JSON } from './run.ts';

/** `key: value` pairs of the aria-labels Vega gives each data mark (axes, legends, titles and lines left out). */
function markData(svg: string): { key: string; value: string }[] {
  const tree = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '' }).parse(svg) as unknown;
  const labels: string[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const n of node) walk(n);
      return;
    }
    if (typeof node !== 'object' || node === null) return;
    const o = node as Record<string, unknown>;
    if (o['aria-roledescription'] === 'axis' || o['aria-roledescription'] === 'legend') return;
    // A line's path is labelled with its first datum only; its points carry every datum.
    if (typeof o.class === 'string' && o.class.includes('mark-line')) return;
    const label = o['aria-label'];
    if (typeof label === 'string' && !/^(Title|Subtitle) text /.test(label)) labels.push(label);
    for (const [k, v] of Object.entries(o)) if (k !== 'aria-label') walk(v);
  };
  walk(tree);
  return labels.flatMap((l) =>
    l.split('; ').map((pair) => {
      const at = pair.lastIndexOf(': ');
      return { key: pair.slice(0, at), value: pair.slice(at + 2) };
    }),
  );
}

/** The numbers a chart plots, as its SVG carries them. */
function plotted(svg: string): number[] {
  return markData(svg)
    .map((d) => Number(d.value))
    .filter((n) => Number.isFinite(n));
}

const results = JSON.parse(readFileSync(RESULTS_JSON, 'utf8')) as Figures;
// The goals the charts are drawn with, as run.ts collects them from the benchmark modules.
const goals = await loadGoals();

type Spread = { median: number; min: number; max: number };
const get = <T>(key: string): T => results[key] as T;

/** Every figure of results.json that each chart must plot. */
function expectedFigures(name: string): number[] {
  switch (name) {
    case 'long-flow-throughput':
      return Object.values(get<Record<string, Record<string, Spread>>>('dataplane.longFlowMbps')).flatMap(
        (byMode) => Object.values(byMode).flatMap((s) => [s.median, s.min, s.max]),
      );
    case 'short-connection-rate':
      return Object.values(get<Record<string, Spread>>('dataplane.shortFlowPerSecond')).flatMap((s) => [
        s.median,
        s.min,
        s.max,
      ]);
    case 'service-add-latency': {
      const add = get<{ add: { latencyMs: Record<string, number>; latencySamplesMs?: number[] } }>(
        'daemon.details',
      ).add;
      return [add.latencyMs.min!, add.latencyMs.max!, ...(add.latencySamplesMs ?? [add.latencyMs.p50!])];
    }
    case 'daemon-memory':
      return [
        get<number>('daemon.rssMB100k'),
        ...Object.values(get<Record<string, number>>('daemon.rssMBByServices') ?? {}),
      ];
    default:
      throw new Error(`no expectations for chart ${name}`);
  }
}

describe('benchmark charts', () => {
  const { charts, missing } = chartSpecs(results, goals);

  test('the committed results hold the figures of every chart', () => {
    expect(missing).toEqual([]);
    expect(charts.map((c) => c.name).sort()).toEqual([
      'daemon-memory',
      'long-flow-throughput',
      'service-add-latency',
      'short-connection-rate',
    ]);
  });

  test.each(charts.map((c) => [c.name, c] as const))(
    '%s.svg is committed as rendered from results.json, parses, and plots its figures',
    async (name, chart) => {
      const committed = readFileSync(join(CHARTS_DIR, `${name}.svg`), 'utf8');
      expect(XMLValidator.validate(committed), `${name}.svg is well-formed XML`).toBe(true);
      expect(committed.startsWith('<svg ')).toBe(true);
      // Re-rendered from the committed results: the picture in the README is the one these figures make.
      expect(await renderSvg(chart.spec), `${name}.svg is stale: node test/bench/charts.ts`).toBe(committed);
      const values = plotted(committed);
      for (const figure of expectedFigures(name)) expect(values, `${name} plots ${figure}`).toContain(figure);
    },
  );

  test('figures that are not there leave their chart out, and only that chart', () => {
    const some: Figures = {
      'dataplane.shortFlowPerSecond': {
        on: { median: 100, min: 90, max: 110 },
        off: { median: 50, min: 45, max: 55 },
      },
      'dataplane.shortFlowRatio': 2,
      'daemon.rssMB100k': 123.4,
    };
    const { charts: drawn, missing: absent } = chartSpecs(some);
    expect(drawn.map((c) => c.name)).toEqual(['short-connection-rate', 'daemon-memory']);
    expect(absent).toEqual(['long-flow-throughput', 'service-add-latency']);
  });

  test('the latency chart plots every add when the results keep them, else the percentiles', async () => {
    const samples = [3.1, 9.9, 4.2, 5.5];
    const withSamples = chartSpecs({
      'daemon.details': {
        add: { servicesPresent: 10, latencySamplesMs: samples, latencyMs: { min: 3.1, max: 9.9 } },
      },
    }).charts[0]!;
    const pairs = markData(await renderSvg(withSamples.spec));
    const points = (key: string) => pairs.filter((d) => d.key === key).map((d) => Number(d.value));
    expect(points('ms').sort()).toEqual([...samples].sort());
    // Sorted, each at its percentile: the 2nd smallest of 4 is the 50th.
    expect(points('percentile')).toEqual([25, 50, 75, 100]);

    const summary = chartSpecs({
      'daemon.details': { add: { latencyMs: { min: 1, p50: 2, p90: 3, p99: 4, max: 5 } } },
    }).charts[0]!;
    expect(plotted(await renderSvg(summary.spec))).toEqual(
      expect.arrayContaining([0, 1, 50, 2, 90, 3, 99, 4, 100, 5]),
    );
  });
});
