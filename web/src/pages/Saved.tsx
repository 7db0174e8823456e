import { useState } from 'react'
import { api, get, type ChartKind, type Dashboard, type SavedChart, type Tile } from '../api'
import { DataTable, StateView, useAsync } from '../components'
import { ActivityView, type ActDef } from './Activity'
import { AlertForm, AlertsList } from './Alerts'
import { FunnelView, type FunnelDef } from './Funnel'
import { RetentionView, type RetDef } from './Retention'
import { SegmentationView, type SegDef } from './Segmentation'

export function ChartRenderer({ kind, definition }: { kind: ChartKind; definition: Record<string, unknown> }) {
  switch (kind) {
    case 'segmentation':
      return <SegmentationView def={definition as unknown as SegDef} />
    case 'funnel':
      return <FunnelView def={definition as unknown as FunnelDef} />
    case 'retention':
      return <RetentionView def={definition as unknown as RetDef} />
    default:
      return <ActivityView def={{ ...(definition as unknown as ActDef), kind }} />
  }
}

export function ChartsList() {
  const [version, setVersion] = useState(0)
  const [alertFor, setAlertFor] = useState<number | null>(null)
  const [alertsVersion, setAlertsVersion] = useState(0)
  const charts = useAsync(`charts${version}`, () => get<{ charts: SavedChart[] }>('/api/web/charts'))
  return (
    <section className="page" data-testid="page-charts">
      <h1>Saved charts</h1>
      <StateView value={charts} isEmpty={(c) => c.charts.length === 0} empty="No saved charts yet: build one and press “Save chart”.">
        {(c) => (
          <>
            <DataTable
              className="list"
              rows={c.charts}
              rowKey={(ch) => String(ch.id)}
              rowTestId={() => 'chart-row'}
              columns={[
                { key: 'name', header: 'name', cell: (ch) => <a href={`#/charts/${ch.id}`}>{ch.name}</a> },
                { key: 'kind', header: 'kind', cell: (ch) => ch.kind },
                { key: 'updated', header: 'updated', cell: (ch) => ch.updated_at.slice(0, 16).replace('T', ' ') },
                {
                  key: 'delete',
                  header: '',
                  cell: (ch) => (
                    <>
                      {['segmentation', 'funnel', 'retention'].includes(ch.kind) && (
                        <button className="link" data-testid="chart-alert" onClick={() => setAlertFor(alertFor === ch.id ? null : ch.id)}>
                          alert
                        </button>
                      )}{' '}
                      <button
                        className="link"
                        onClick={async () => {
                          await api('DELETE', `/api/web/charts/${ch.id}`)
                          setVersion(version + 1)
                        }}
                      >
                        delete
                      </button>
                    </>
                  ),
                },
              ]}
            />
            {c.charts
              .filter((ch) => ch.id === alertFor)
              .map((ch) => (
                <div key={ch.id} data-testid="alert-for">
                  <h2>Alert on “{ch.name}”</h2>
                  <AlertForm chart={ch} onDone={() => setAlertsVersion(alertsVersion + 1)} />
                </div>
              ))}
          </>
        )}
      </StateView>
      <AlertsList version={alertsVersion} onChange={() => setAlertsVersion(alertsVersion + 1)} />
    </section>
  )
}

export function DashboardsList() {
  const [version, setVersion] = useState(0)
  const [name, setName] = useState('')
  const [error, setError] = useState('')
  const dashes = useAsync(`dash${version}`, () => get<{ dashboards: Dashboard[] }>('/api/web/dashboards'))
  return (
    <section className="page" data-testid="page-dashboards">
      <h1>Dashboards</h1>
      <form
        className="controls"
        onSubmit={async (e) => {
          e.preventDefault()
          try {
            const d = await api<Dashboard>('POST', '/api/web/dashboards', { name, layout: [] })
            window.location.hash = `#/dashboards/${d.id}`
          } catch (err) {
            setError((err as Error).message)
          }
        }}
      >
        <label className="field">
          <span>new dashboard</span>
          <input value={name} onChange={(e) => setName(e.target.value)} placeholder="name" data-testid="dashboard-name" />
        </label>
        <button type="submit" data-testid="dashboard-create">
          Create
        </button>
        {error && (
          <span className="error" role="alert">
            {error}
          </span>
        )}
      </form>
      <StateView value={dashes} isEmpty={(d) => d.dashboards.length === 0} empty="No dashboards yet.">
        {(d) => (
          <ul className="list">
            {d.dashboards.map((x) => (
              <li key={x.id}>
                <a href={`#/dashboards/${x.id}`}>{x.name}</a> · {x.layout.length} charts{' '}
                <button
                  className="link"
                  onClick={async () => {
                    await api('DELETE', `/api/web/dashboards/${x.id}`)
                    setVersion(version + 1)
                  }}
                >
                  delete
                </button>
              </li>
            ))}
          </ul>
        )}
      </StateView>
    </section>
  )
}

export function DashboardPage({ id }: { id: number }) {
  const [version, setVersion] = useState(0)
  const [pick, setPick] = useState('')
  const [error, setError] = useState('')
  const data = useAsync(`dashboard${id}:${version}`, async () => {
    const [dash, charts] = await Promise.all([get<Dashboard>(`/api/web/dashboards/${id}`), get<{ charts: SavedChart[] }>('/api/web/charts')])
    return { dash, charts: charts.charts }
  })
  const save = async (layout: Tile[]) => {
    try {
      await api('PUT', `/api/web/dashboards/${id}`, { layout })
      setError('')
      setVersion(version + 1)
    } catch (err) {
      setError((err as Error).message)
    }
  }
  return (
    <section className="page" data-testid="page-dashboard">
      <StateView value={data} isEmpty={() => false}>
        {({ dash, charts }) => {
          const byId = new Map(charts.map((c) => [c.id, c]))
          const tiles = [...dash.layout].sort((a, b) => a.y - b.y || a.x - b.x)
          const renumber = (ts: Tile[]) => ts.map((t, i) => ({ ...t, y: i }))
          return (
            <>
              <h1 data-testid="dashboard-title">{dash.name}</h1>
              <div className="controls">
                <label className="field">
                  <span>add a saved chart</span>
                  <select value={pick} onChange={(e) => setPick(e.target.value)} data-testid="dashboard-pick">
                    <option value="">— choose —</option>
                    {charts.map((c) => (
                      <option key={c.id} value={c.id}>
                        {c.name}
                      </option>
                    ))}
                  </select>
                </label>
                <button
                  data-testid="dashboard-add"
                  disabled={!pick}
                  onClick={() => save(renumber([...tiles, { chart_id: Number(pick), x: 0, y: tiles.length, w: 6, h: 1 }]))}
                >
                  Add
                </button>
                {error && (
                  <span className="error" role="alert">
                    {error}
                  </span>
                )}
              </div>
              {tiles.length === 0 && <div className="state" data-testid="state-empty">This dashboard has no charts yet.</div>}
              <div className="grid">
                {tiles.map((t, i) => {
                  const chart = byId.get(t.chart_id)
                  if (!chart) return null
                  const move = (delta: number) => {
                    const ts = [...tiles]
                    const j = i + delta
                    if (j < 0 || j >= ts.length) return
                    ;[ts[i], ts[j]] = [ts[j], ts[i]]
                    save(renumber(ts))
                  }
                  return (
                    <div className="tile" key={`${t.chart_id}-${i}`} style={{ gridColumn: `span ${t.w}` }} data-testid="dashboard-tile">
                      <header>
                        <a href={`#/charts/${chart.id}`}>{chart.name}</a>
                        <span className="tile-tools">
                          <button className="link" onClick={() => move(-1)} aria-label="move earlier">
                            ←
                          </button>
                          <button className="link" onClick={() => move(1)} aria-label="move later">
                            →
                          </button>
                          <button
                            className="link"
                            onClick={() => save(tiles.map((x, j) => (j === i ? { ...x, w: x.w === 12 ? 6 : 12 } : x)))}
                            aria-label="toggle width"
                          >
                            {t.w === 12 ? 'half' : 'full'}
                          </button>
                          <button className="link" onClick={() => save(renumber(tiles.filter((_, j) => j !== i)))} aria-label="remove">
                            ✕
                          </button>
                        </span>
                      </header>
                      <ChartRenderer kind={chart.kind} definition={chart.definition} />
                    </div>
                  )
                })}
              </div>
            </>
          )
        }}
      </StateView>
    </section>
  )
}
