// Active users (/api/2/users), lifecycle (/api/2/lifecycle), stickiness (/api/2/stickiness) and realtime
// (/api/2/realtime): one page shape — a few parameters, a series chart and its table.
import { get } from '../api'
import { DateRange, Select, SeriesTable, SeriesView, StateView, compact, daysAgo, toSeries, useAsync, type Series } from '../components'

export type ActivityKind = 'users' | 'lifecycle' | 'stickiness' | 'realtime'

export interface ActDef {
  kind: ActivityKind
  metric: string // users: active | new
  interval: string
  start: string
  end: string
}

export const actDefault = (kind: ActivityKind): ActDef => ({ kind, metric: 'active', interval: kind === 'stickiness' ? '7' : '1', start: daysAgo(7), end: daysAgo(0) })

const TITLES: Record<ActivityKind, string> = {
  users: 'Active users',
  lifecycle: 'Lifecycle',
  stickiness: 'Stickiness',
  realtime: 'Realtime (last 2 days by minute)',
}

export function actParams(d: ActDef): Record<string, string> {
  if (d.kind === 'realtime') return { i: '1' }
  const base = { start: compact(d.start), end: compact(d.end), i: d.interval }
  return d.kind === 'users' ? { ...base, m: d.metric } : base
}

export function ActivityView({ def, full = false }: { def: ActDef; full?: boolean }) {
  const params = actParams(def)
  const value = useAsync<Series>(`${def.kind}?${JSON.stringify(params)}`, async () =>
    toSeries((await get<{ data: unknown }>(`/api/2/${def.kind}`, params)).data),
  )
  return (
    <StateView value={value} isEmpty={(s) => s.lines.length === 0 || s.x.length === 0}>
      {(s) => (
        <>
          <SeriesView series={s} kind={def.kind === 'stickiness' || def.kind === 'lifecycle' ? 'bar' : 'line'} testId={`${def.kind}-chart`} />
          {full && <SeriesTable series={s} />}
        </>
      )}
    </StateView>
  )
}

export default function Activity({ def, setDef }: { def: ActDef; setDef: (d: ActDef) => void }) {
  const set = (patch: Partial<ActDef>) => setDef({ ...def, ...patch })
  return (
    <section className="page" data-testid={`page-${def.kind}`}>
      <h1>{TITLES[def.kind]}</h1>
      {def.kind !== 'realtime' && (
        <div className="controls">
          {def.kind === 'users' && (
            <Select
              label="users"
              value={def.metric}
              onChange={(metric) => set({ metric })}
              options={[
                ['active', 'Active'],
                ['new', 'New'],
              ]}
            />
          )}
          <Select
            label="interval"
            value={def.interval}
            onChange={(interval) => set({ interval })}
            options={[
              ['1', 'Daily'],
              ['7', 'Weekly'],
              ['30', 'Monthly'],
            ]}
          />
          <DateRange start={def.start} end={def.end} onChange={(start, end) => set({ start, end })} />
        </div>
      )}
      <ActivityView def={def} full />
    </section>
  )
}
