// Writes generated/<dashboard>.ts for each ../dashboards/*.json: every panel
// as a literal of its plugin's type from checks.ts, and the dashboard as a
// literal of checks.Dashboard. Then writes generated/mutants.ts: each entry
// of mutants.json applied to a copy of a real panel or dashboard, under
// `// @ts-expect-error`, so tsc fails if the check stops catching it.
import { readFileSync, readdirSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dashboards = join(here, '..', 'dashboards');
const out = join(here, 'generated');

/** Panel plugin id -> its type in checks.ts. A new kind of panel needs both. */
const KIND = {
  timeseries: 'TimeSeriesPanel',
  stat: 'StatPanel',
  bargauge: 'BarGaugePanel',
  'state-timeline': 'StateTimelinePanel',
  heatmap: 'HeatmapPanel',
  table: 'TablePanel',
  logs: 'LogsPanel',
  row: 'RowPanel',
};

function kindOf(file, panel) {
  // A table of Tempo search results is typed by its data source.
  if (panel.type === 'table' && panel.datasource?.type === 'tempo') return 'TraceTablePanel';
  const kind = KIND[panel.type];
  if (!kind) {
    throw new Error(
      `${file}: panel ${panel.id} "${panel.title}" is of type "${panel.type}", which gen.mjs does not know: ` +
        `add its Options/FieldConfig from @grafana/schema to checks.ts and to KIND`,
    );
  }
  return kind;
}

function load(file) {
  return JSON.parse(readFileSync(join(dashboards, file), 'utf8'));
}

function emitDashboard(file, dash) {
  const lines = ["import type * as C from '../checks';", ''];
  dash.panels.forEach((p, i) => {
    lines.push(`// ${p.type} "${p.title}"`);
    lines.push(`const p${i}: C.${kindOf(file, p)} = ${JSON.stringify(p, null, 2)};`, '');
  });
  const top = { ...dash, panels: '@@PANELS@@' };
  const refs = `[${dash.panels.map((_, i) => `p${i}`).join(', ')}]`;
  lines.push(`export const dashboard: C.Dashboard = ${JSON.stringify(top, null, 2).replace('"@@PANELS@@"', refs)};`, '');
  return lines.join('\n');
}

/** Sets (or deletes, when `value` is absent) `path` ("a.b.0.c") in `obj`. */
function mutate(obj, path, entry) {
  const keys = path.split('.');
  let at = obj;
  for (const k of keys.slice(0, -1)) {
    if (at[k] === undefined) throw new Error(`mutants.json: ${path} does not exist`);
    at = at[k];
  }
  const last = keys[keys.length - 1];
  if ('value' in entry) at[last] = entry.value;
  else if (last in at) delete at[last];
  else throw new Error(`mutants.json: ${path} does not exist`);
}

function emitMutants(mutants) {
  const lines = ["import type * as C from '../checks';", ''];
  mutants.forEach((m, i) => {
    const dash = load(m.dashboard);
    let subject = dash;
    let type = 'Dashboard';
    if (m.panel) {
      subject = dash.panels.find((p) => p.title === m.panel);
      if (!subject) throw new Error(`mutants.json: no panel "${m.panel}" in ${m.dashboard}`);
      type = kindOf(m.dashboard, subject);
      subject = structuredClone(subject);
    } else {
      subject = { ...structuredClone(dash), panels: [] };
    }
    mutate(subject, m.path, m);
    // One line, so that the directive covers the error wherever it lands.
    lines.push(`// ${m.why}`, '// @ts-expect-error', `export const m${i}: C.${type} = ${JSON.stringify(subject)};`, '');
  });
  return lines.join('\n');
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out);
const files = readdirSync(dashboards).filter((f) => f.endsWith('.json')).sort();
if (files.length === 0) throw new Error(`no dashboards in ${dashboards}`);
for (const file of files) {
  writeFileSync(join(out, file.replace(/\.json$/, '.ts')), emitDashboard(file, load(file)));
}
const mutants = JSON.parse(readFileSync(join(here, 'mutants.json'), 'utf8'));
writeFileSync(join(out, 'mutants.ts'), emitMutants(mutants));
console.log(`generated ${files.length} dashboards and ${mutants.length} mutants for tsc`);
