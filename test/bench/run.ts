// `npm run bench [-- FILTER ...]`: runs test/bench/*.bench.ts (all, or those whose name contains a
// filter), merges their figures into test/bench/results.json (figures of modules not run this
// time are kept), writes the table in test/bench/RESULTS.md and renders the charts (charts.ts) from the
// merged results into test/bench/charts/.
//
// A benchmark module exports `run(): Promise<Record<string, number | string | object>>` (figure
// names carry the module's prefix, e.g. `webhook.p99Ms`) and may export `goals`, figure name ->
// `{ max }` or `{ min }` (and a `note`), which the table checks, and `notes(results)`, lines that
// explain this run's figures (what each change bought), written under the table. A module that
// runs replaces all of its previous figures, so renamed or dropped ones do not linger.

import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export type Figures = Record<string, number | string | object>;
export interface Goal {
  max?: number;
  min?: number;
  note?: string;
}
export interface BenchModule {
  run(): Promise<Figures>;
  goals?: Record<string, Goal>;
  notes?: (results: Figures) => string[];
}

const DIR = dirname(fileURLToPath(import.meta.url));
export const RESULTS_JSON = join(DIR, 'results.json');
export const RESULTS_MD = join(DIR, 'RESULTS.md');

export function benchFiles(dir = DIR): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.bench.ts'))
    .sort();
}

export function selected(files: string[], filters: string[]): string[] {
  return filters.length === 0 ? files : files.filter((f) => filters.some((x) => f.includes(x)));
}

/** The previous results with this run's figures on top; `module`'s previous figures are dropped. */
export function merge(previous: Figures, fresh: Figures, module?: string): Figures {
  const kept = Object.entries(previous).filter(([k]) => module === undefined || !k.startsWith(`${module}.`));
  return Object.fromEntries(
    Object.entries({ ...Object.fromEntries(kept), ...fresh }).sort(([a], [b]) => a.localeCompare(b)),
  );
}

function format(value: unknown): string {
  if (typeof value === 'number')
    return Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 3 : 1);
  if (typeof value === 'string') return value;
  return `\`${JSON.stringify(value)}\``;
}

export function verdict(value: unknown, goal: Goal | undefined): string {
  // A goal entry with a note only (a context figure) has no verdict.
  if (!goal || typeof value !== 'number' || (goal.max === undefined && goal.min === undefined)) return '';
  const ok = (goal.max === undefined || value < goal.max) && (goal.min === undefined || value >= goal.min);
  return ok ? 'yes' : 'MISSED';
}

function goalText(goal: Goal | undefined): string {
  if (!goal) return '';
  const parts = [];
  if (goal.min !== undefined) parts.push(`>= ${goal.min}`);
  if (goal.max !== undefined) parts.push(`< ${goal.max}`);
  return parts.join(', ');
}

/** A Markdown table with padded columns (the layout the project's formatter gives tables). */
function markdownTable(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(3, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(rows[0]!), line(widths.map((w) => '-'.repeat(w))), ...rows.slice(1).map(line)];
}

export function table(
  results: Figures,
  goals: Record<string, Goal>,
  notes: Record<string, string[]> = {},
): string {
  const numbers = Object.entries(results).filter(([, v]) => typeof v === 'number');
  const others = Object.entries(results).filter(([, v]) => typeof v !== 'number');
  const rows = [
    ['figure', 'value', 'goal', 'met'],
    ...numbers.map(([name, value]) => [
      name,
      format(value),
      goalText(goals[name]),
      verdict(value, goals[name]),
    ]),
  ];
  const lines = [
    '# Benchmark results',
    '',
    'Written by `npm run bench` (test/bench/run.ts) from test/bench/results.json. Speed depends on the',
    'machine and on what else runs on it: compare runs on the same one, and read the context below.',
    '',
    ...markdownTable(rows),
  ];
  if (others.length > 0) lines.push('', ...others.map(([name, value]) => `- \`${name}\`: ${format(value)}`));
  const goalNotes = Object.entries(goals).filter(([name, g]) => g.note && name in results);
  if (goalNotes.length > 0)
    lines.push('', 'Goals:', '', ...goalNotes.map(([name, g]) => `- \`${name}\`: ${g.note}`));
  for (const [module, text] of Object.entries(notes)) {
    if (text.length > 0) lines.push('', `Notes on ${module}:`, '', ...text.map((t) => `- ${t}`));
  }
  return `${lines.join('\n')}\n`;
}

function context(): Figures {
  const cpu = cpus();
  return {
    node: process.version,
    cpus: cpu.length,
    cpuModel: cpu[0]?.model ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    loadAverage1m: Number(loadavg()[0]?.toFixed(2)),
    date: new Date().toISOString(),
  };
}

function readPrevious(): Figures {
  try {
    return JSON.parse(readFileSync(RESULTS_JSON, 'utf8')) as Figures;
  } catch {
    return {};
  }
}

/** The benchmark modules, by file; one that cannot load here is left out (and named) unless it is `required`. */
async function loadModules(files: string[], required: string[] = []): Promise<Map<string, BenchModule>> {
  const mods = new Map<string, BenchModule>();
  for (const file of files) {
    try {
      mods.set(file, (await import(pathToFileURL(join(DIR, file)).href)) as BenchModule);
    } catch (error) {
      // A module that cannot load here only loses its goals in the table, unless it was asked for.
      if (required.includes(file)) throw error;
      process.stderr.write(`bench ${file}: not loaded (${(error as Error).message.split('\n')[0]})\n`);
    }
  }
  return mods;
}

/** The goals of every benchmark module that loads here. */
export async function loadGoals(): Promise<Record<string, Goal>> {
  const goals: Record<string, Goal> = {};
  for (const mod of (await loadModules(benchFiles())).values()) Object.assign(goals, mod.goals);
  return goals;
}

async function main(filters: string[]): Promise<number> {
  const all = benchFiles();
  const chosen = selected(all, filters);
  if (chosen.length === 0) {
    process.stderr.write(`no benchmark matches ${filters.join(' ')}; there are: ${all.join(', ')}\n`);
    return 2;
  }
  const goals: Record<string, Goal> = {};
  const notes: Record<string, (results: Figures) => string[]> = {};
  let results = readPrevious();
  for (const [file, mod] of await loadModules(all, chosen)) {
    Object.assign(goals, mod.goals);
    const name = file.replace(/\.bench\.ts$/, '');
    if (mod.notes) notes[name] = mod.notes;
    if (!chosen.includes(file)) continue;
    process.stderr.write(`bench ${name}: running\n`);
    const started = performance.now();
    const figures = await mod.run();
    const ctx = { ...context(), seconds: Math.round((performance.now() - started) / 1000) };
    results = merge(results, { ...figures, [`${name}.context`]: ctx }, name);
    // Written after each module, so a later failure keeps what finished.
    writeFileSync(RESULTS_JSON, `${JSON.stringify(results, null, 2)}\n`);
  }
  const noteLines = Object.fromEntries(
    Object.entries(notes).map(([module, write]) => {
      try {
        return [module, write(results)];
      } catch {
        return [module, []]; // figures of an older run without what the notes refer to
      }
    }),
  );
  const text = table(results, goals, noteLines);
  writeFileSync(RESULTS_MD, text);
  process.stdout.write(text);
  // Imported here: charts.ts, run as a program, imports this module.
  const { renderCharts } = await import('./charts.ts');
  for (const file of await renderCharts(results, goals)) process.stderr.write(`chart: ${file}\n`);
  const missed = Object.entries(results).filter(([k, v]) => verdict(v, goals[k]) === 'MISSED');
  if (missed.length > 0) process.stderr.write(`goals missed: ${missed.map(([k]) => k).join(', ')}\n`);
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = await main(process.argv.slice(2));
}
