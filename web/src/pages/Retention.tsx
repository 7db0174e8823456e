import { get, type Vocabulary } from '../api'
import { DataTable, DateRange, EventSelect, Select, StateView, compact, daysAgo, useAsync, type Column } from '../components'

export interface RetDef {
  start_event: string
  return_event: string
  mode: string // n-day (Return On) | rolling (Return On or After)
  interval: string
  start: string
  end: string
}

export const retDefault = (): RetDef => ({ start_event: '', return_event: '_active', mode: 'n-day', interval: '1', start: daysAgo(7), end: daysAgo(1) })

interface Cell {
  count: number
  outof: number
  incomplete: boolean
}
interface RetSeries {
  dates: string[]
  values: Record<string, Cell[]>
}

export function retParams(d: RetDef) {
  const ev = (name: string) => JSON.stringify({ event_type: name })
  return { se: ev(d.start_event), re: ev(d.return_event), rm: d.mode, i: d.interval, start: compact(d.start), end: compact(d.end) }
}

function heat(p: number): string {
  // white → indigo, by the retained share
  const a = Math.min(1, Math.max(0, p))
  return `rgba(79, 70, 229, ${(0.08 + 0.85 * a).toFixed(3)})`
}

export function RetentionGrid({ series }: { series: RetSeries }) {
  const width = Math.max(0, ...Object.values(series.values).map((v) => v.length))
  const cellOf = (date: string, k: number): Cell | undefined => series.values[date]?.[k]
  const share = (c: Cell | undefined) => (c && c.outof ? c.count / c.outof : 0)
  const columns: Column<string>[] = [
    { key: 'cohort', header: 'cohort', cell: (date) => date },
    { key: 'users', header: 'users', cell: (date) => cellOf(date, 0)?.count ?? 0, attrs: () => ({ 'data-testid': 'cohort-size' }) },
    ...Array.from({ length: Math.max(width - 1, 0) }, (_, j): Column<string> => ({
      key: `k${j + 1}`,
      header: `+${j + 1}`,
      cell: (date) => {
        const c = cellOf(date, j + 1)
        return c ? (
          <>
            {(share(c) * 100).toFixed(1)}%<small>{c.count}</small>
          </>
        ) : null
      },
      attrs: (date) => {
        const c = cellOf(date, j + 1)
        if (!c) return {}
        const p = share(c)
        return {
          'data-testid': `retention-cell-${date}-${j + 1}`,
          'data-count': c.count,
          className: c.incomplete ? 'incomplete' : '',
          style: { background: heat(p), color: p > 0.55 ? 'white' : undefined },
          title: `${c.count} of ${c.outof}${c.incomplete ? ' (incomplete)' : ''}`,
        }
      },
    })),
  ]
  return (
    <DataTable
      columns={columns}
      rows={series.dates}
      rowKey={(d) => d}
      rowTestId={(d) => `retention-row-${d}`}
      testId="retention-grid"
      className="retention"
    />
  )
}

export function RetentionView({ def }: { def: RetDef }) {
  const params = def.start_event && def.return_event ? retParams(def) : null
  const value = useAsync<RetSeries | null>(params && JSON.stringify(params), async () => {
    const r = await get<{ data: { series: RetSeries[] } }>('/api/2/retention', params!)
    return r.data.series[0] ?? null
  })
  return (
    <StateView value={value} isEmpty={(s) => !s || s.dates.length === 0} idle="Choose a starting and a returning event." empty="No cohort in this range.">
      {(s) => <RetentionGrid series={s!} />}
    </StateView>
  )
}

export default function Retention({ def, setDef, vocab }: { def: RetDef; setDef: (d: RetDef) => void; vocab: Vocabulary | null }) {
  const set = (patch: Partial<RetDef>) => setDef({ ...def, ...patch })
  return (
    <section className="page" data-testid="page-retention">
      <h1>Retention</h1>
      <div className="controls">
        <EventSelect
          vocab={vocab}
          label="starting event"
          value={def.start_event}
          onChange={(start_event) => set({ start_event })}
          special={[
            { value: '_new', label: 'New user (_new)' },
            { value: '_active', label: 'Any active event (_active)' },
          ]}
          testId="ret-start"
        />
        <EventSelect
          vocab={vocab}
          label="returning event"
          value={def.return_event}
          onChange={(return_event) => set({ return_event })}
          special={[
            { value: '_active', label: 'Any active event (_active)' },
            { value: '_all', label: 'Any event (_all)' },
          ]}
          testId="ret-return"
        />
        <Select
          label="return"
          value={def.mode}
          testId="ret-mode"
          onChange={(mode) => set({ mode })}
          options={[
            ['n-day', 'Return On'],
            ['rolling', 'Return On or After'],
          ]}
        />
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
      <RetentionView def={def} />
    </section>
  )
}
