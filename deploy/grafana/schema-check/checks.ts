// The types every benchtel dashboard must satisfy: Grafana's published
// schema (@grafana/schema: the dashboard model, and each panel plugin's
// Options and FieldConfig), plus benchtel's own rules: every panel, query
// and template query uses the `datasource` variable (Loki and Tempo panels
// the `loki` and `tempo` variables), and the first variable is that
// datasource variable.
//
// gen.mjs turns each dashboard JSON into a TypeScript literal typed with
// these (generated/*.ts), so that tsc checks literal values and reports
// unknown keys; see README.md in this directory for why not a JSON import.

import type * as schema from '@grafana/schema';
import type * as raw from '@grafana/schema/dist/esm/raw/dashboard/x/Dashboard_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as bargauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as statetimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as heatmap from '@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as logs from '@grafana/schema/dist/esm/raw/composable/logs/panelcfg/x/LogsPanelCfg_types.gen';

/**
 * A schema type as JSON spells it: the schema declares some fields as
 * TypeScript string enums (e.g. `BigValueColorMode`), to which a plain
 * string literal is not assignable; this maps each to the union of its
 * values ("background" | "value" | ...) and leaves everything else as is.
 */
export type Plain<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Plain<U>[]
      : T extends object
        ? { [K in keyof T]: Plain<T[K]> }
        : T;

/** The only datasource reference allowed: the dashboard's variable. */
export interface DS {
  type: 'prometheus';
  uid: '${datasource}';
}

/** Loki panels use the dashboard's `loki` variable, Tempo panels `tempo`. */
export interface LokiDS {
  type: 'loki';
  uid: '${loki}';
}
export interface TempoDS {
  type: 'tempo';
  uid: '${tempo}';
}

/**
 * A Loki query, after the `LokiQuery` of Grafana's Loki data source plugin
 * (not part of @grafana/schema either).
 */
export interface LokiTarget {
  datasource: LokiDS;
  refId: string;
  expr: string;
  editorMode?: 'code' | 'builder';
  queryType?: 'range' | 'instant';
  maxLines?: number;
  legendFormat?: string;
  hide?: boolean;
}

/**
 * A TraceQL search, after the `TempoQuery` of Grafana's Tempo data source
 * plugin: `tableType` "traces" lists one row per trace, with a link to it.
 */
export interface TempoTarget {
  datasource: TempoDS;
  refId: string;
  queryType: 'traceql';
  query: string;
  tableType?: 'traces' | 'spans' | 'raw';
  limit?: number;
  spss?: number;
  hide?: boolean;
}

/**
 * A Prometheus query, after the `PromQuery` of Grafana's Prometheus data
 * source plugin (its schema is not part of @grafana/schema).
 */
export interface PromTarget {
  datasource: DS;
  refId: string;
  expr: string;
  editorMode?: 'code' | 'builder';
  format?: 'time_series' | 'table' | 'heatmap';
  instant?: boolean;
  range?: boolean;
  exemplar?: boolean;
  legendFormat?: string;
  interval?: string;
  intervalFactor?: number;
  hide?: boolean;
}

type Defaults<Custom> = Omit<Plain<raw.FieldConfig>, 'custom'> & { custom?: Plain<Custom> };

type PanelOf<Type extends string, Options, Custom, Source = DS, Target = PromTarget> = Omit<
  Plain<raw.Panel>,
  'type' | 'datasource' | 'targets' | 'options' | 'fieldConfig'
> & {
  type: Type;
  id: number;
  title: string;
  datasource: Source;
  targets: Target[];
  options: Plain<Options>;
  fieldConfig: {
    defaults: Defaults<Custom>;
    overrides: Plain<raw.FieldConfigSource['overrides']>;
  };
};

export type TimeSeriesPanel = PanelOf<'timeseries', timeseries.Options, timeseries.FieldConfig>;
// Stat and bar gauge panels have no custom field config.
export type StatPanel = PanelOf<'stat', stat.Options, never>;
export type BarGaugePanel = PanelOf<'bargauge', bargauge.Options, never>;
export type StateTimelinePanel = PanelOf<'state-timeline', statetimeline.Options, statetimeline.FieldConfig>;
export type HeatmapPanel = PanelOf<'heatmap', heatmap.Options, heatmap.FieldConfig>;
export type TablePanel = PanelOf<'table', table.Options, table.FieldConfig>;
/** A table of Tempo search results (boots, failed runs). */
export type TraceTablePanel = PanelOf<'table', table.Options, table.FieldConfig, TempoDS, TempoTarget>;
/** Log lines have no field config of their own; the key is still there. */
export type LogsPanel = Omit<PanelOf<'logs', logs.Options, never, LokiDS, LokiTarget>, 'fieldConfig'> & {
  fieldConfig?: { defaults: Record<string, never>; overrides: never[] };
};

/** An expanded row: its panels follow it in the dashboard's list. */
export type RowPanel = Omit<Plain<raw.RowPanel>, 'panels' | 'datasource'> & { panels: never[]; title: string };

export type AnyPanel =
  | TimeSeriesPanel
  | StatPanel
  | BarGaugePanel
  | StateTimelinePanel
  | HeatmapPanel
  | TablePanel
  | TraceTablePanel
  | LogsPanel
  | RowPanel;

export type DatasourceVariable = Omit<Plain<schema.VariableModel>, 'datasource'> & {
  type: 'datasource';
  name: 'datasource';
  query: 'prometheus';
};

/** The Loki and Tempo data source variables, after the Prometheus one. */
export type LogsTracesVariable = Omit<Plain<schema.VariableModel>, 'datasource'> & {
  type: 'datasource';
  name: 'loki' | 'tempo';
  query: 'loki' | 'tempo';
};

export type QueryVariable = Omit<Plain<schema.VariableModel>, 'datasource' | 'query'> & {
  type: 'query';
  datasource: DS;
  definition: string;
  query: { query: string; refId: string };
};

export type Dashboard = Omit<Plain<schema.Dashboard>, 'panels' | 'templating'> & {
  uid: string;
  title: string;
  panels: AnyPanel[];
  templating: { list: [DatasourceVariable, ...(LogsTracesVariable | QueryVariable)[]] };
};
