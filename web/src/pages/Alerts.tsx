// Alerts on saved charts (/api/alerts): the "Alert" form opened from a chart row and the project's alerts list.
// The server turns the chart's definition into the API parameters (series 0; retention charts need day N).
import { useState } from 'react'
import { api, get, type SavedChart } from '../api'
import { StateView, useAsync } from '../components'

export interface Alert {
  id: string
  name: string
  condition: string
  threshold: number
  interval: string
  status: string
  snoozed_until: string | null
  series: { chart_id?: number; kind: string }
}

const CONDITIONS = [
  { value: 'above', label: 'above' },
  { value: 'below', label: 'below' },
  { value: 'change', label: 'changes by more than (ratio)' },
  { value: 'anomaly', label: 'outside the forecast band' },
]

export function AlertForm({ chart, onDone }: { chart: SavedChart; onDone: () => void }) {
  const [condition, setCondition] = useState('above')
  const [threshold, setThreshold] = useState('')
  const [webhook, setWebhook] = useState('')
  const [day, setDay] = useState('1')
  const [error, setError] = useState('')
  const [secret, setSecret] = useState('')
  return (
    <form
      className="controls"
      data-testid="alert-form"
      onSubmit={async (e) => {
        e.preventDefault()
        try {
          const body: Record<string, unknown> = {
            name: `${chart.name}: ${condition}${condition === 'anomaly' ? '' : ` ${threshold}`}`,
            chart_id: chart.id,
            condition,
            webhook_url: webhook,
          }
          if (condition !== 'anomaly') body.threshold = threshold === '' ? null : Number(threshold)
          if (chart.kind === 'retention') body.series = { day: Number(day) }
          const created = await api<Alert & { secret: string }>('POST', '/api/alerts', body)
          setError('')
          setSecret(created.secret)
          onDone()
        } catch (err) {
          setError((err as Error).message)
        }
      }}
    >
      <label className="field">
        <span>when the series is</span>
        <select value={condition} onChange={(e) => setCondition(e.target.value)} data-testid="alert-condition">
          {CONDITIONS.map((c) => (
            <option key={c.value} value={c.value}>
              {c.label}
            </option>
          ))}
        </select>
      </label>
      {condition !== 'anomaly' && (
        <label className="field">
          <span>threshold</span>
          <input value={threshold} onChange={(e) => setThreshold(e.target.value)} inputMode="decimal" data-testid="alert-threshold" />
        </label>
      )}
      {chart.kind === 'retention' && (
        <label className="field">
          <span>retention day</span>
          <input value={day} onChange={(e) => setDay(e.target.value)} inputMode="numeric" data-testid="alert-day" />
        </label>
      )}
      <label className="field">
        <span>webhook URL</span>
        <input value={webhook} onChange={(e) => setWebhook(e.target.value)} placeholder="https://…" data-testid="alert-webhook" />
      </label>
      <button type="submit" data-testid="alert-create">
        Create alert
      </button>
      {error && (
        <span className="error" role="alert" data-testid="alert-error">
          {error}
        </span>
      )}
      {secret && (
        <span data-testid="alert-secret">
          signing secret (shown once): <code>{secret}</code>
        </span>
      )}
    </form>
  )
}

export function AlertsList({ version, onChange }: { version: number; onChange: () => void }) {
  const alerts = useAsync(`alerts${version}`, () => get<{ alerts: Alert[] }>('/api/alerts'))
  const act = async (method: string, path: string, body?: unknown) => {
    await api(method, path, body)
    onChange()
  }
  return (
    <>
      <h2>Alerts</h2>
      <StateView value={alerts} isEmpty={(a) => a.alerts.length === 0} empty="No alerts yet: press “alert” on a chart.">
        {(a) => (
          <table className="list" data-testid="alerts-list">
            <thead>
              <tr>
                <th>name</th>
                <th>rule</th>
                <th>status</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {a.alerts.map((al) => (
                <tr key={al.id} data-testid="alert-row">
                  <td>{al.series.chart_id ? <a href={`#/charts/${al.series.chart_id}`}>{al.name}</a> : al.name}</td>
                  <td>
                    {al.condition} {al.condition === 'anomaly' ? '' : al.threshold} · {al.interval}
                  </td>
                  <td data-testid="alert-status">
                    {al.status}
                    {al.snoozed_until ? ` until ${al.snoozed_until.slice(0, 16).replace('T', ' ')}` : ''}
                  </td>
                  <td>
                    {al.status === 'snoozed' ? (
                      <button className="link" data-testid="alert-unsnooze" onClick={() => act('POST', `/api/alerts/${al.id}/snooze`, { until: null })}>
                        unsnooze
                      </button>
                    ) : (
                      <button className="link" data-testid="alert-snooze" onClick={() => act('POST', `/api/alerts/${al.id}/snooze`, { minutes: 60 })}>
                        snooze 1 h
                      </button>
                    )}{' '}
                    <button className="link" data-testid="alert-delete" onClick={() => act('DELETE', `/api/alerts/${al.id}`)}>
                      delete
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </StateView>
    </>
  )
}
