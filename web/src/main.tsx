import { StrictMode, useEffect, useState } from 'react'
import { createRoot } from 'react-dom/client'
import { ApiError, api, get, setCsrf, type ChartKind, type SavedChart, type Session, type Vocabulary } from './api'
import { StateView, useAsync } from './components'
import Activity, { actDefault, type ActDef, type ActivityKind } from './pages/Activity'
import People from './pages/People'
import Funnel, { funnelDefault, type FunnelDef } from './pages/Funnel'
import Retention, { retDefault, type RetDef } from './pages/Retention'
import { ChartsList, DashboardPage, DashboardsList } from './pages/Saved'
import Segmentation, { segDefault, type SegDef } from './pages/Segmentation'
import './styles.css'

// ---- hash routing: #/<page>[/<id>][?d=<definition JSON>] — every view has a URL ----------------------------
interface Route {
  page: string
  id: number | null
  def: Record<string, unknown> | null
  user: string | null // #/people?u=<id>
}

function parseHash(hash: string): Route {
  const [path, search = ''] = hash.replace(/^#\/?/, '').split('?')
  const [page = 'segmentation', id] = path.split('/')
  let def: Record<string, unknown> | null = null
  const d = new URLSearchParams(search).get('d')
  const user = new URLSearchParams(search).get('u')
  if (d) {
    try {
      def = JSON.parse(d)
    } catch {
      def = null
    }
  }
  return { page: page || 'segmentation', id: id && /^\d+$/.test(id) ? Number(id) : null, def, user }
}

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(window.location.hash))
  useEffect(() => {
    const on = () => setRoute(parseHash(window.location.hash))
    window.addEventListener('hashchange', on)
    return () => window.removeEventListener('hashchange', on)
  }, [])
  return route
}

const ANALYSES: [string, string][] = [
  ['segmentation', 'Segmentation'],
  ['funnel', 'Funnel'],
  ['retention', 'Retention'],
  ['users', 'Active users'],
  ['lifecycle', 'Lifecycle'],
  ['stickiness', 'Stickiness'],
  ['realtime', 'Realtime'],
]

function defaultFor(kind: ChartKind): Record<string, unknown> {
  if (kind === 'segmentation') return segDefault() as unknown as Record<string, unknown>
  if (kind === 'funnel') return funnelDefault() as unknown as Record<string, unknown>
  if (kind === 'retention') return retDefault() as unknown as Record<string, unknown>
  return actDefault(kind as ActivityKind) as unknown as Record<string, unknown>
}

// ---- an analysis page with its definition kept in the URL, and Save -------------------------------------------
function Analysis({
  kind,
  initial,
  chart,
  vocab,
}: {
  kind: ChartKind
  initial: Record<string, unknown> | null
  chart: SavedChart | null
  vocab: Vocabulary | null
}) {
  const [def, setDefState] = useState<Record<string, unknown>>(() => ({ ...defaultFor(kind), ...(initial ?? {}) }))
  const [name, setName] = useState(chart?.name ?? '')
  const [status, setStatus] = useState('')
  useEffect(() => {
    setDefState({ ...defaultFor(kind), ...(initial ?? {}) })
    setName(chart?.name ?? '')
    setStatus('')
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [kind, chart?.id])
  const setDef = (d: Record<string, unknown>) => {
    setDefState(d)
    if (!chart) history.replaceState(null, '', `#/${kind}?d=${encodeURIComponent(JSON.stringify(d))}`)
  }
  const save = async () => {
    try {
      if (chart) {
        await api('PUT', `/api/web/charts/${chart.id}`, { name, definition: def })
        setStatus('Saved.')
      } else {
        const saved = await api<SavedChart>('POST', '/api/web/charts', { name, kind, definition: def })
        window.location.hash = `#/charts/${saved.id}`
      }
    } catch (err) {
      setStatus((err as Error).message)
    }
  }
  const page = (() => {
    switch (kind) {
      case 'segmentation':
        return <Segmentation def={def as unknown as SegDef} setDef={(d) => setDef(d as unknown as Record<string, unknown>)} vocab={vocab} />
      case 'funnel':
        return <Funnel def={def as unknown as FunnelDef} setDef={(d) => setDef(d as unknown as Record<string, unknown>)} vocab={vocab} />
      case 'retention':
        return <Retention def={def as unknown as RetDef} setDef={(d) => setDef(d as unknown as Record<string, unknown>)} vocab={vocab} />
      default:
        return (
          <Activity
            def={{ ...(def as unknown as ActDef), kind: kind as ActivityKind }}
            setDef={(d) => setDef(d as unknown as Record<string, unknown>)}
            vocab={vocab}
          />
        )
    }
  })()
  return (
    <>
      <div className="savebar">
        <input value={name} onChange={(e) => setName(e.target.value)} placeholder="chart name" data-testid="chart-name" aria-label="chart name" />
        <button onClick={save} disabled={!name.trim()} data-testid="chart-save">
          {chart ? 'Save' : 'Save chart'}
        </button>
        {chart && (
          <span className="share">
            share: <code data-testid="share-url">{`${window.location.origin}/#/charts/${chart.id}`}</code>
          </span>
        )}
        {status && <span data-testid="save-status">{status}</span>}
      </div>
      {page}
    </>
  )
}

function SavedChartPage({ id, vocab }: { id: number; vocab: Vocabulary | null }) {
  const chart = useAsync(`chart${id}`, () => get<SavedChart>(`/api/web/charts/${id}`))
  return (
    <StateView value={chart} isEmpty={() => false}>
      {(c) => <Analysis kind={c.kind} initial={c.definition} chart={c} vocab={vocab} />}
    </StateView>
  )
}

// ---- sign-in ---------------------------------------------------------------------------------------------------
function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [apiKey, setApiKey] = useState('')
  const [secret, setSecret] = useState('')
  const [error, setError] = useState('')
  const [busy, setBusy] = useState(false)
  return (
    <main className="signin">
      <form
        onSubmit={async (e) => {
          e.preventDefault()
          setBusy(true)
          setError('')
          try {
            onSignedIn(await api<Session>('POST', '/api/web/session', { api_key: apiKey, secret_key: secret }))
          } catch (err) {
            setError(err instanceof ApiError && err.status === 401 ? 'Wrong API key or secret key.' : (err as Error).message)
          } finally {
            setBusy(false)
          }
        }}
      >
        <h1>eventpipe</h1>
        <p>Sign in with your project’s API key and secret key.</p>
        <label className="field">
          <span>API key</span>
          <input value={apiKey} onChange={(e) => setApiKey(e.target.value)} autoComplete="username" data-testid="api-key" />
        </label>
        <label className="field">
          <span>Secret key</span>
          <input type="password" value={secret} onChange={(e) => setSecret(e.target.value)} autoComplete="current-password" data-testid="secret-key" />
        </label>
        <button type="submit" disabled={busy || !apiKey || !secret} data-testid="sign-in">
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        {error && (
          <div className="error" role="alert" data-testid="signin-error">
            {error}
          </div>
        )}
      </form>
    </main>
  )
}

function App() {
  const [session, setSession] = useState<Session | null | undefined>(undefined)
  const [vocab, setVocab] = useState<Vocabulary | null>(null)
  const [menu, setMenu] = useState(false)
  const route = useRoute()

  useEffect(() => {
    api<Session>('GET', '/api/web/session').then(setSession, () => setSession(null))
    const out = () => setSession(null)
    window.addEventListener('ep-signed-out', out)
    return () => window.removeEventListener('ep-signed-out', out)
  }, [])
  useEffect(() => {
    setCsrf(session?.csrf_token ?? '')
    if (session) get<Vocabulary>('/api/web/event-types').then(setVocab, () => setVocab({ event_types: [], properties: { event: [], user: [] } }))
  }, [session])
  useEffect(() => setMenu(false), [route.page, route.id])

  if (session === undefined) return <div className="state loading">Loading…</div>
  if (session === null) return <SignIn onSignedIn={setSession} />

  let body
  if (route.page === 'charts' && route.id !== null) body = <SavedChartPage id={route.id} vocab={vocab} />
  else if (route.page === 'charts') body = <ChartsList />
  else if (route.page === 'dashboards' && route.id !== null) body = <DashboardPage id={route.id} />
  else if (route.page === 'dashboards') body = <DashboardsList />
  else if (route.page === 'people') body = <People key={route.user ?? ''} initialUser={route.user} />
  else if (ANALYSES.some(([k]) => k === route.page)) body = <Analysis key={route.page} kind={route.page as ChartKind} initial={route.def} chart={null} vocab={vocab} />
  else body = <div className="state">No such page.</div>

  const current = route.page
  return (
    <div className="app">
      <nav className={menu ? 'open' : ''}>
        <div className="brand">
          eventpipe <span className="project" data-testid="project">{session.project}</span>
          <button className="menu-toggle" onClick={() => setMenu(!menu)} aria-label="menu">
            ☰
          </button>
        </div>
        <div className="links">
          {ANALYSES.map(([k, label]) => (
            <a key={k} href={`#/${k}`} className={current === k ? 'active' : ''} data-testid={`nav-${k}`}>
              {label}
            </a>
          ))}
          <a href="#/people" className={current === 'people' ? 'active' : ''} data-testid="nav-people">
            User activity
          </a>
          <hr />
          <a href="#/charts" className={current === 'charts' ? 'active' : ''} data-testid="nav-charts">
            Saved charts
          </a>
          <a href="#/dashboards" className={current === 'dashboards' ? 'active' : ''} data-testid="nav-dashboards">
            Dashboards
          </a>
          <hr />
          <button
            className="link"
            data-testid="sign-out"
            onClick={async () => {
              await api('DELETE', '/api/web/session').catch(() => undefined)
              setSession(null)
            }}
          >
            Sign out
          </button>
        </div>
      </nav>
      <main>{body}</main>
    </div>
  )
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
)
