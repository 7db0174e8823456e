import { get, type Vocabulary } from '../api'
import {
  DateRange,
  EventSelect,
  FilterEditor,
  PropertySelect,
  Select,
  SeriesTable,
  SeriesView,
  StateView,
  compact,
  csvOf,
  daysAgo,
  download,
  toEventFilters,
  toSeries,
  useAsync,
  type Filter,
  type Prop,
  type Series,
} from '../components'

export interface SegDef {
  event: string
  event2: string
  filters: Filter[]
  metric: string
  groupBy: Prop | null
  interval: string
  start: string
  end: string
  chart: 'line' | 'bar'
}

export const segDefault = (): SegDef => ({
  event: '',
  event2: '',
  filters: [],
  metric: 'uniques',
  groupBy: null,
  interval: '1',
  start: daysAgo(7),
  end: daysAgo(0),
  chart: 'line',
})

const SPECIAL = [
  { value: '_active', label: 'Any active event (_active)' },
  { value: '_all', label: 'Any event (_all)' },
  { value: '_new', label: 'New users (_new)' },
]

export function segParams(d: SegDef) {
  const ev = (name: string) =>
    JSON.stringify({
      event_type: name,
      filters: toEventFilters(d.filters),
      group_by: d.groupBy ? [{ type: d.groupBy.type, value: d.groupBy.value }] : [],
    })
  return {
    e: ev(d.event),
    e2: d.event2 ? ev(d.event2) : undefined,
    m: d.metric,
    i: d.interval,
    start: compact(d.start),
    end: compact(d.end),
  }
}

/** The chart (and, on the page, the CSV button and the table) of one definition. */
export function SegmentationView({ def, full = false }: { def: SegDef; full?: boolean }) {
  const params = def.event ? segParams(def) : null
  const value = useAsync<Series>(params && JSON.stringify(params), async () =>
    toSeries((await get<{ data: unknown }>('/api/2/events/segmentation', params!)).data),
  )
  return (
    <StateView value={value} isEmpty={(s) => s.lines.length === 0 || s.x.length === 0} idle="Choose an event.">
      {(s) => (
        <>
          <SeriesView series={s} kind={def.chart} testId="segmentation-chart" />
          {full && (
            <>
              <div className="toolbar">
                <button
                  data-testid="csv"
                  onClick={() =>
                    download(`segmentation-${def.event}.csv`, csvOf([['series', ...s.x], ...s.lines.map((l) => [l.name, ...l.values])]))
                  }
                >
                  Download CSV
                </button>
              </div>
              <SeriesTable series={s} />
            </>
          )}
        </>
      )}
    </StateView>
  )
}

export default function Segmentation({ def, setDef, vocab }: { def: SegDef; setDef: (d: SegDef) => void; vocab: Vocabulary | null }) {
  const set = (patch: Partial<SegDef>) => setDef({ ...def, ...patch })
  return (
    <section className="page" data-testid="page-segmentation">
      <h1>Event segmentation</h1>
      <div className="controls">
        <EventSelect vocab={vocab} label="event A" value={def.event} onChange={(event) => set({ event })} special={SPECIAL} testId="seg-event" />
        <EventSelect vocab={vocab} label="event B (optional)" value={def.event2} onChange={(event2) => set({ event2 })} special={SPECIAL} />
        <Select
          label="metric"
          value={def.metric}
          testId="seg-metric"
          onChange={(metric) => set({ metric })}
          options={[
            ['uniques', 'Uniques'],
            ['totals', 'Event totals'],
            ['pct_dau', '% of DAU'],
            ['average', 'Average per user'],
          ]}
        />
        <PropertySelect vocab={vocab} label="group by" value={def.groupBy} onChange={(groupBy) => set({ groupBy })} testId="seg-groupby" />
        <Select
          label="interval"
          value={def.interval}
          testId="seg-interval"
          onChange={(interval) => set({ interval })}
          options={[
            ['-300000', 'Realtime (minutes)'],
            ['-3600000', 'Hourly'],
            ['1', 'Daily'],
            ['7', 'Weekly'],
            ['30', 'Monthly'],
          ]}
        />
        <DateRange start={def.start} end={def.end} onChange={(start, end) => set({ start, end })} />
        <Select
          label="chart"
          value={def.chart}
          onChange={(chart) => set({ chart: chart as SegDef['chart'] })}
          options={[
            ['line', 'Line'],
            ['bar', 'Bar'],
          ]}
        />
      </div>
      <FilterEditor vocab={vocab} filters={def.filters} onChange={(filters) => set({ filters })} />
      <SegmentationView def={def} full />
    </section>
  )
}
