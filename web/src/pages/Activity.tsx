// Active users (/api/2/users), lifecycle (/api/2/lifecycle), stickiness (/api/2/stickiness) and realtime
// (/api/2/realtime): a few parameters, an ECharts chart and a table of the very numbers the API answered.
import { useEffect, useState } from 'react'
import { get, type Vocabulary } from '../api'
import {
  DataTable,
  DateRange,
  EChart,
  EventSelect,
  Select,
  SeriesTable,
  SeriesView,
  StateView,
  compact,
  daysAgo,
  fmtNum,
  toSeries,
  useAsync,
  type Column,
  type Series,
} from '../components'

export type ActivityKind = 'users' | 'lifecycle' | 'stickiness' | 'realtime'

export interface ActDef {
  kind: ActivityKind
  metric: string // users: active | new
  event: string // lifecycle, stickiness, realtime: the event counted ('' = any active event)
  interval: string
  start: string
  end: string
}

export const actDefault = (kind: ActivityKind): ActDef => ({
  kind,
  metric: 'active',
  event: '',
  interval: kind === 'stickiness' ? '7' : '1',
  start: daysAgo(kind === 'stickiness' ? 28 : 7),
  end: daysAgo(0),
})

const TITLES: Record<ActivityKind, string> = {
  users: 'Active users',
  lifecycle: 'Lifecycle',
  stickiness: 'Stickiness',
  realtime: 'Realtime (active users today and yesterday, per 5 minutes)',
}

const INTERVALS: Record<ActivityKind, [string, string][]> = {
  users: [
    ['1', 'Daily'],
    ['7', 'Weekly'],
    ['30', 'Monthly'],
  ],
  lifecycle: [
    ['1', 'Daily'],
    ['7', 'Weekly'],
    ['30', 'Monthly'],
  ],
  stickiness: [
    ['7', 'Days in a week'],
    ['30', 'Days in a month'],
  ],
  realtime: [],
}

export function actParams(d: ActDef): Record<string, string> {
  if (d.kind === 'realtime') return {} // every event of the project, 5-minute buckets
  const base: Record<string, string> = { start: compact(d.start), end: compact(d.end), i: d.interval }
  if (d.kind === 'users') return { m: d.metric, ...base }
  return d.event ? { e: JSON.stringify({ event_type: d.event }), ...base } : base
}

// ---- lifecycle: new / resurrected / current above the axis, dormant below (negative bars) -----------------
export const LIFECYCLE = ['new', 'resurrected', 'current', 'dormant'] as const
const LIFECYCLE_COLORS: Record<string, string> = { new: '#16a34a', resurrected: '#0ea5e9', current: '#4f46e5', dormant: '#dc2626' }

interface Lifecycle {
  x: string[]
  series: Record<string, number[]>
}

function toLifecycle(data: unknown): Lifecycle {
  const d = (data ?? {}) as { xValues?: unknown[]; series?: Record<string, unknown[]> }
  const raw = d.series ?? {}
  const series: Record<string, number[]> = {}
  for (const name of [...LIFECYCLE, ...Object.keys(raw).filter((k) => !(LIFECYCLE as readonly string[]).includes(k))])
    if (raw[name]) series[name] = raw[name].map((v) => Number(v ?? 0))
  return { x: (d.xValues ?? []).map(String), series }
}

function LifecycleChart({ lc }: { lc: Lifecycle }) {
  const option = {
    tooltip: { trigger: 'axis', valueFormatter: (v: number) => String(Math.abs(v)) },
    legend: { top: 0 },
    grid: { left: 48, right: 16, top: 36, bottom: 32, containLabel: true },
    xAxis: { type: 'category', data: lc.x },
    yAxis: { type: 'value', axisLabel: { formatter: (v: number) => String(Math.abs(v)) } },
    series: Object.entries(lc.series).map(([name, values]) => ({
      name,
      type: 'bar',
      stack: name === 'dormant' ? 'out' : 'in',
      itemStyle: { color: LIFECYCLE_COLORS[name] },
      data: name === 'dormant' ? values.map((v) => -v) : values,
    })),
  }
  return <EChart option={option} testId="lifecycle-chart" />
}

function LifecycleTable({ lc }: { lc: Lifecycle }) {
  const series: Series = { x: lc.x, lines: Object.entries(lc.series).map(([name, values]) => ({ name, values })) }
  return <SeriesTable series={series} testId="lifecycle-table" rowTestId={(name) => `lifecycle-row-${name}`} />
}

// ---- stickiness: users active on exactly k days (bars) and on at least k days (line) -------------------------
interface Stickiness {
  x: string[]
  exactly: number[]
  atLeast: number[]
  total: number
}

function toStickiness(data: unknown): Stickiness {
  const d = (data ?? {}) as { xValues?: unknown[]; series?: unknown[][]; cumulative?: unknown[][]; total?: unknown }
  const first = (s: unknown[][] | undefined) => ((s?.[0] ?? []) as unknown[]).map((v) => Number(v ?? 0))
  return { x: (d.xValues ?? []).map(String), exactly: first(d.series), atLeast: first(d.cumulative), total: Number(d.total ?? 0) }
}

function StickinessChart({ st }: { st: Stickiness }) {
  const option = {
    tooltip: { trigger: 'axis' },
    legend: { top: 0 },
    grid: { left: 48, right: 16, top: 36, bottom: 32, containLabel: true },
    xAxis: { type: 'category', data: st.x, name: 'days active', nameLocation: 'middle', nameGap: 24 },
    yAxis: { type: 'value' },
    series: [
      { name: 'on exactly k days', type: 'bar', data: st.exactly, itemStyle: { color: '#4f46e5' } },
      { name: 'on at least k days', type: 'line', data: st.atLeast, itemStyle: { color: '#0ea5e9' } },
    ],
  }
  return <EChart option={option} testId="stickiness-chart" />
}

function StickinessTable({ st, interval }: { st: Stickiness; interval: string }) {
  const series: Series = {
    x: st.x,
    lines: [
      { name: 'exactly', values: st.exactly },
      { name: 'at least', values: st.atLeast },
    ],
  }
  return (
    <>
      <p className="summary">
        <b data-testid="stickiness-total">{st.total}</b> active users (a user counts once per {interval === '30' ? 'month' : 'week'})
      </p>
      <SeriesTable series={series} testId="stickiness-table" rowTestId={(name) => `stickiness-row-${name.replace(' ', '-')}`} />
    </>
  )
}

// ---- realtime: today against yesterday, 5-minute buckets --------------------------------------------------------
interface Realtime {
  x: string[]
  lines: { name: string; values: (number | null)[] }[]
}

function toRealtime(data: unknown): Realtime {
  const d = (data ?? {}) as { xValues?: unknown[]; seriesLabels?: unknown[]; series?: unknown[][] }
  const labels = d.seriesLabels ?? []
  return {
    x: (d.xValues ?? []).map(String),
    lines: (d.series ?? []).map((s, i) => ({
      name: String(labels[i] ?? `series ${i + 1}`),
      values: (s ?? []).map((v) => (v === null || v === undefined ? null : Number(v))),
    })),
  }
}

const sum = (values: (number | null)[]) => values.reduce<number>((a, v) => a + (v ?? 0), 0)

function RealtimeChart({ rt }: { rt: Realtime }) {
  const option = {
    tooltip: { trigger: 'axis' },
    legend: { top: 0 },
    grid: { left: 48, right: 16, top: 36, bottom: 32, containLabel: true },
    xAxis: { type: 'category', data: rt.x },
    yAxis: { type: 'value' },
    series: rt.lines.map((l, i) => ({
      name: l.name,
      type: 'line',
      data: l.values,
      showSymbol: false,
      lineStyle: i === 0 ? { width: 2 } : { width: 1.5, type: 'dashed' },
      itemStyle: { color: i === 0 ? '#4f46e5' : '#9ca3af' },
    })),
  }
  return <EChart option={option} testId="realtime-chart" />
}

function RealtimeTable({ rt }: { rt: Realtime }) {
  // newest bucket first
  const columns: Column<number>[] = [
    { key: 'time', header: 'time', cell: (i) => rt.x[i] },
    ...rt.lines.map((l, j) => ({
      key: `s${j}`,
      header: l.name,
      cell: (i: number) => (l.values[i] === null || l.values[i] === undefined ? '–' : fmtNum(l.values[i]!)),
    })),
  ]
  return (
    <>
      <p className="summary">
        latest 5 minutes ({rt.x[rt.x.length - 1]}):{' '}
        {rt.lines.map((l, j) => (
          <span key={j}>
            {l.name} <b data-testid={`realtime-latest-${j}`}>{fmtNum(l.values[l.values.length - 1] ?? 0)}</b>{' '}
          </span>
        ))}
      </p>
      <DataTable columns={columns} rows={rt.x.map((_, i) => rt.x.length - 1 - i)} rowKey={(i) => rt.x[i]} rowTestId={() => 'realtime-row'} testId="realtime-table" maxHeight={360} />
    </>
  )
}

// ---- the views (also used by dashboard tiles, without their tables) ---------------------------------------
type Shaped = { kind: 'users'; s: Series } | { kind: 'lifecycle'; lc: Lifecycle } | { kind: 'stickiness'; st: Stickiness } | { kind: 'realtime'; rt: Realtime }

function shape(kind: ActivityKind, data: unknown): Shaped {
  if (kind === 'lifecycle') return { kind, lc: toLifecycle(data) }
  if (kind === 'stickiness') return { kind, st: toStickiness(data) }
  if (kind === 'realtime') return { kind, rt: toRealtime(data) }
  return { kind: 'users', s: toSeries(data) }
}

function isEmpty(v: Shaped): boolean {
  switch (v.kind) {
    case 'lifecycle':
      return v.lc.x.length === 0 || Object.values(v.lc.series).every((s) => s.every((n) => n === 0))
    case 'stickiness':
      return v.st.x.length === 0 || v.st.total === 0
    case 'realtime':
      return v.rt.x.length === 0 || v.rt.lines.every((l) => sum(l.values) === 0)
    default:
      return v.s.lines.length === 0 || v.s.x.length === 0
  }
}

const EMPTY: Record<ActivityKind, string> = {
  users: 'No active users in this range.',
  lifecycle: 'No user was active in this range.',
  stickiness: 'No user was active in this range.',
  realtime: 'No events today or yesterday.',
}

export function ActivityView({ def, full = false }: { def: ActDef; full?: boolean }) {
  const params = actParams(def)
  const [tick, setTick] = useState(0)
  useEffect(() => {
    if (def.kind !== 'realtime') return
    const t = setInterval(() => setTick((n) => n + 1), 60_000) // realtime refreshes itself every minute
    return () => clearInterval(t)
  }, [def.kind])
  const value = useAsync<Shaped>(
    `${def.kind}?${JSON.stringify(params)}#${tick}`,
    async () => shape(def.kind, (await get<{ data: unknown }>(`/api/2/${def.kind}`, params)).data),
    def.kind === 'realtime', // its minute refreshes keep the chart on screen; a new query shows "Loading…"
  )
  return (
    <StateView value={value} isEmpty={isEmpty} empty={EMPTY[def.kind]}>
      {(v) => {
        switch (v.kind) {
          case 'lifecycle':
            return (
              <>
                <LifecycleChart lc={v.lc} />
                {full && <LifecycleTable lc={v.lc} />}
              </>
            )
          case 'stickiness':
            return (
              <>
                <StickinessChart st={v.st} />
                {full && <StickinessTable st={v.st} interval={def.interval} />}
              </>
            )
          case 'realtime':
            return (
              <>
                <RealtimeChart rt={v.rt} />
                {full && <RealtimeTable rt={v.rt} />}
              </>
            )
          default:
            return (
              <>
                <SeriesView series={v.s} kind="line" testId="users-chart" />
                {full && <SeriesTable series={v.s} />}
              </>
            )
        }
      }}
    </StateView>
  )
}

export default function Activity({ def, setDef, vocab }: { def: ActDef; setDef: (d: ActDef) => void; vocab: Vocabulary | null }) {
  const set = (patch: Partial<ActDef>) => setDef({ ...def, ...patch })
  return (
    <section className="page" data-testid={`page-${def.kind}`}>
      <h1>{TITLES[def.kind]}</h1>
      <div className="controls">
        {def.kind === 'realtime' ? null : def.kind === 'users' ? (
          <Select
            label="users"
            value={def.metric}
            onChange={(metric) => set({ metric })}
            options={[
              ['active', 'Active'],
              ['new', 'New'],
            ]}
          />
        ) : (
          <EventSelect
            vocab={vocab}
            label="event"
            value={def.event ?? ''}
            onChange={(event) => set({ event })}
            none="Any active event"
            special={[{ value: '_all', label: 'Any event (_all)' }]}
            testId={`${def.kind}-event`}
          />
        )}
        {def.kind !== 'realtime' && (
          <>
            <Select label="interval" value={def.interval} testId={`${def.kind}-interval`} onChange={(interval) => set({ interval })} options={INTERVALS[def.kind]} />
            <DateRange start={def.start} end={def.end} onChange={(start, end) => set({ start, end })} />
          </>
        )}
      </div>
      <ActivityView def={def} full />
    </section>
  )
}
