import { useEffect, useRef, useState, type ReactNode, type TdHTMLAttributes } from 'react'
import * as echarts from 'echarts/core'
import { BarChart, LineChart } from 'echarts/charts'
import { GridComponent, LegendComponent, TooltipComponent } from 'echarts/components'
import { CanvasRenderer } from 'echarts/renderers'

echarts.use([LineChart, BarChart, GridComponent, LegendComponent, TooltipComponent, CanvasRenderer])
import type { Vocabulary } from './api'

// ---- dates -------------------------------------------------------------------------------------------
export function ymd(d: Date): string {
  return d.toISOString().slice(0, 10)
}
export function daysAgo(n: number): string {
  const d = new Date()
  d.setUTCDate(d.getUTCDate() - n)
  return ymd(d)
}
export const compact = (iso: string) => iso.replaceAll('-', '') // YYYY-MM-DD -> YYYYMMDD (the API's form)

// ---- async state -------------------------------------------------------------------------------------
export type Async<T> = { state: 'idle' } | { state: 'loading' } | { state: 'error'; message: string } | { state: 'done'; data: T }

/** Runs `load` whenever `key` changes (a serialized query); stale answers are dropped. With `keep`, a reload
 *  keeps showing the previous answer until the new one arrives (periodic refreshes don't flash "Loading…"). */
export function useAsync<T>(key: string | null, load: () => Promise<T>, keep = false): Async<T> {
  const [value, setValue] = useState<Async<T>>({ state: 'idle' })
  useEffect(() => {
    if (key === null) {
      setValue({ state: 'idle' })
      return
    }
    let live = true
    setValue((v) => (keep && v.state === 'done' ? v : { state: 'loading' }))
    load().then(
      (data) => live && setValue({ state: 'done', data }),
      (err: unknown) => live && setValue({ state: 'error', message: err instanceof Error ? err.message : String(err) }),
    )
    return () => {
      live = false
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key])
  return value
}

export function StateView<T>({
  value,
  isEmpty,
  empty,
  idle,
  children,
}: {
  value: Async<T>
  isEmpty: (d: T) => boolean
  empty?: string
  idle?: string
  children: (d: T) => ReactNode
}) {
  if (value.state === 'idle') return <div className="state" data-testid="state-idle">{idle ?? 'Pick events to start.'}</div>
  if (value.state === 'loading') return <div className="state loading" data-testid="state-loading">Loading…</div>
  if (value.state === 'error')
    return (
      <div className="state error" role="alert" data-testid="state-error">
        {value.message}
      </div>
    )
  if (isEmpty(value.data)) return <div className="state" data-testid="state-empty">{empty ?? 'No data for this range.'}</div>
  return <>{children(value.data)}</>
}

// ---- ECharts ------------------------------------------------------------------------------------------
export function EChart({ option, height = 320, testId }: { option: echarts.EChartsCoreOption; height?: number; testId?: string }) {
  const ref = useRef<HTMLDivElement>(null)
  const chart = useRef<echarts.ECharts | null>(null)
  useEffect(() => {
    if (!ref.current) return
    chart.current = echarts.init(ref.current, undefined, { renderer: 'canvas' })
    const onResize = () => chart.current?.resize()
    const observer = new ResizeObserver(onResize)
    observer.observe(ref.current)
    return () => {
      observer.disconnect()
      chart.current?.dispose()
      chart.current = null
    }
  }, [])
  useEffect(() => {
    chart.current?.setOption(option, true)
  }, [option])
  return <div ref={ref} className="echart" style={{ height }} data-testid={testId} />
}

// ---- pickers -------------------------------------------------------------------------------------------
export function EventSelect({
  vocab,
  value,
  onChange,
  label,
  special = [],
  testId,
  none = '— choose —',
}: {
  vocab: Vocabulary | null
  value: string
  onChange: (v: string) => void
  label: string
  special?: { value: string; label: string }[]
  testId?: string
  none?: string // the label of the empty choice
}) {
  return (
    <label className="field">
      <span>{label}</span>
      <select value={value} onChange={(e) => onChange(e.target.value)} data-testid={testId}>
        <option value="">{none}</option>
        {special.map((s) => (
          <option key={s.value} value={s.value}>
            {s.label}
          </option>
        ))}
        {(vocab?.event_types ?? []).map((e) => (
          <option key={e.name} value={e.name}>
            {e.name}
            {e.planned ? ' (plan)' : ''}
          </option>
        ))}
      </select>
    </label>
  )
}

export interface Prop {
  type: 'event' | 'user'
  value: string
}

export function propKey(p: Prop | null): string {
  return p ? `${p.type}:${p.value}` : ''
}

export function PropertySelect({
  vocab,
  value,
  onChange,
  label,
  testId,
}: {
  vocab: Vocabulary | null
  value: Prop | null
  onChange: (v: Prop | null) => void
  label: string
  testId?: string
}) {
  return (
    <label className="field">
      <span>{label}</span>
      <select
        value={propKey(value)}
        data-testid={testId}
        onChange={(e) => {
          const [type, ...rest] = e.target.value.split(':')
          onChange(e.target.value ? { type: type as Prop['type'], value: rest.join(':') } : null)
        }}
      >
        <option value="">none</option>
        <optgroup label="User properties">
          {(vocab?.properties.user ?? []).map((p) => (
            <option key={`u${p}`} value={`user:${p}`}>
              {p}
            </option>
          ))}
        </optgroup>
        <optgroup label="Event properties">
          {(vocab?.properties.event ?? []).map((p) => (
            <option key={`e${p}`} value={`event:${p}`}>
              {p}
            </option>
          ))}
        </optgroup>
      </select>
    </label>
  )
}

export interface Filter {
  prop: Prop | null
  op: string
  values: string
}

export const FILTER_OPS = ['is', 'is not', 'contains', 'does not contain', 'less', 'greater', 'set is', 'set is not']

/** Event filters inside an event object (`e` parameter): Amplitude's subprop form. */
export function toEventFilters(filters: Filter[]): object[] {
  return filters
    .filter((f) => f.prop)
    .map((f) => ({
      subprop_type: f.prop!.type,
      subprop_key: f.prop!.value,
      subprop_op: f.op,
      subprop_value: f.values.split(',').map((v) => v.trim()).filter(Boolean),
    }))
}

export function FilterEditor({
  vocab,
  filters,
  onChange,
}: {
  vocab: Vocabulary | null
  filters: Filter[]
  onChange: (f: Filter[]) => void
}) {
  const update = (i: number, patch: Partial<Filter>) => onChange(filters.map((f, j) => (i === j ? { ...f, ...patch } : f)))
  return (
    <div className="filters">
      {filters.map((f, i) => (
        <div className="filter-row" key={i} data-testid="filter-row">
          <PropertySelect vocab={vocab} label="where" value={f.prop} onChange={(prop) => update(i, { prop })} />
          <label className="field">
            <span>op</span>
            <select value={f.op} onChange={(e) => update(i, { op: e.target.value })}>
              {FILTER_OPS.map((op) => (
                <option key={op}>{op}</option>
              ))}
            </select>
          </label>
          <label className="field">
            <span>values (comma-separated)</span>
            <input value={f.values} onChange={(e) => update(i, { values: e.target.value })} />
          </label>
          <button className="link" onClick={() => onChange(filters.filter((_, j) => j !== i))} aria-label="remove filter">
            ✕
          </button>
        </div>
      ))}
      <button className="link" onClick={() => onChange([...filters, { prop: null, op: 'is', values: '' }])}>
        + filter
      </button>
    </div>
  )
}

export function DateRange({
  start,
  end,
  onChange,
}: {
  start: string
  end: string
  onChange: (start: string, end: string) => void
}) {
  return (
    <>
      <label className="field">
        <span>from</span>
        <input type="date" value={start} onChange={(e) => onChange(e.target.value, end)} data-testid="start" />
      </label>
      <label className="field">
        <span>to</span>
        <input type="date" value={end} onChange={(e) => onChange(start, e.target.value)} data-testid="end" />
      </label>
    </>
  )
}

export function Select({
  label,
  value,
  options,
  onChange,
  testId,
}: {
  label: string
  value: string
  options: [string, string][]
  onChange: (v: string) => void
  testId?: string
}) {
  return (
    <label className="field">
      <span>{label}</span>
      <select value={value} onChange={(e) => onChange(e.target.value)} data-testid={testId}>
        {options.map(([v, l]) => (
          <option key={v} value={v}>
            {l}
          </option>
        ))}
      </select>
    </label>
  )
}

// ---- series normalisation -------------------------------------------------------------------------------
export interface Series {
  x: string[]
  lines: { name: string; values: number[] }[]
}

function label(l: unknown, i: number): string {
  if (Array.isArray(l)) return l.slice(1).map(String).join(', ') || String(l[0] ?? i)
  if (l && typeof l === 'object') return String((l as Record<string, unknown>).label ?? (l as Record<string, unknown>).name ?? i)
  return l === undefined || l === null || l === 0 ? `series ${i + 1}` : String(l)
}

/** The v2 endpoints' `{series, seriesLabels, xValues}` (arrays or objects of arrays) as named lines. */
export function toSeries(data: unknown): Series {
  const d = (data ?? {}) as Record<string, unknown>
  const x = ((d.xValues as unknown[]) ?? []).map(String)
  const raw = d.series
  const labels = (d.seriesLabels ?? d.seriesMeta ?? []) as unknown[]
  const num = (v: unknown) => (typeof v === 'number' ? v : v && typeof v === 'object' ? Number((v as Record<string, unknown>).value ?? 0) : Number(v ?? 0))
  let lines: Series['lines'] = []
  if (Array.isArray(raw)) lines = raw.map((s, i) => ({ name: label(labels[i], i), values: ((s as unknown[]) ?? []).map(num) }))
  else if (raw && typeof raw === 'object')
    lines = Object.entries(raw as Record<string, unknown[]>).map(([name, s]) => ({ name, values: (s ?? []).map(num) }))
  return { x, lines }
}

export function csvOf(rows: (string | number)[][]): string {
  const cell = (v: string | number) => {
    const s = String(v)
    return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s
  }
  return rows.map((r) => r.map(cell).join(',')).join('\n') + '\n'
}

export function download(name: string, text: string) {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }))
  const a = document.createElement('a')
  a.href = url
  a.download = name
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}

export function SeriesView({ series, kind, testId }: { series: Series; kind: 'line' | 'bar'; testId?: string }) {
  const option = {
    tooltip: { trigger: 'axis' },
    legend: { type: 'scroll', top: 0 },
    grid: { left: 48, right: 16, top: 36, bottom: 32, containLabel: true },
    xAxis: { type: 'category', data: series.x },
    yAxis: { type: 'value' },
    series: series.lines.map((l) => ({ name: l.name, type: kind, data: l.values, showSymbol: series.x.length < 60 })),
  }
  return <EChart option={option} testId={testId} />
}

// ---- tables ------------------------------------------------------------------------------------------------
type CellAttrs = Omit<TdHTMLAttributes<HTMLTableCellElement>, 'children'> & { 'data-testid'?: string; 'data-count'?: string | number }

export interface Column<R> {
  key: string
  header: ReactNode
  cell: (row: R, index: number) => ReactNode
  /** extra attributes of the cell (test ids, data-* values, heat-map colours) */
  attrs?: (row: R, index: number) => CellAttrs
}

/** The one table of the UI: the first column is each row's header (<th>), wide tables scroll sideways
 *  inside their box (never the page), tall ones scroll inside `maxHeight`. */
export function DataTable<R>({
  columns,
  rows,
  rowKey,
  rowTestId,
  testId,
  className,
  maxHeight,
}: {
  columns: Column<R>[]
  rows: R[]
  rowKey: (row: R, index: number) => string
  rowTestId?: (row: R, index: number) => string
  testId?: string
  className?: string
  maxHeight?: number
}) {
  return (
    <div className="table-wrap" style={maxHeight ? { maxHeight, overflowY: 'auto' } : undefined}>
      <table data-testid={testId} className={className}>
        <thead>
          <tr>
            {columns.map((c) => (
              <th key={c.key}>{c.header}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r, i) => (
            <tr key={rowKey(r, i)} data-testid={rowTestId?.(r, i)}>
              {columns.map((c, j) => {
                const Cell = j === 0 ? 'th' : 'td'
                return (
                  <Cell key={c.key} {...(c.attrs?.(r, i) ?? {})}>
                    {c.cell(r, i)}
                  </Cell>
                )
              })}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  )
}

export const fmtNum = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(3))

/** A series table: one row per line, one column per x value. */
export function SeriesTable({ series, testId = 'series-table', rowTestId }: { series: Series; testId?: string; rowTestId?: (name: string) => string }) {
  const columns: Column<Series['lines'][number]>[] = [
    { key: 'series', header: 'series', cell: (l) => l.name },
    ...series.x.map((x, i) => ({ key: `x${i}`, header: x, cell: (l: Series['lines'][number]) => fmtNum(l.values[i] ?? 0) })),
  ]
  return <DataTable columns={columns} rows={series.lines} rowKey={(l) => l.name} testId={testId} rowTestId={rowTestId && ((l) => rowTestId(l.name))} />
}

export function fmtDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–'
  const s = ms / 1000
  if (s < 60) return `${s.toFixed(0)} s`
  if (s < 3600) return `${(s / 60).toFixed(1)} min`
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`
  return `${(s / 86400).toFixed(1)} d`
}
