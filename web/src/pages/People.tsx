// User activity: find a user (/api/2/usersearch) and read their event stream (/api/2/useractivity, Amplitude's
// shapes), newest first, a page at a time. `UserStream` is also the funnel's "who reached this step" panel.
import { useState } from 'react'
import { get } from '../api'
import { DataTable, StateView, useAsync, type Column } from '../components'

export interface ActivityEvent {
  event_type: string
  event_time: string
  event_properties?: Record<string, unknown>
  session_id?: number | string
  [k: string]: unknown
}

export interface UserActivity {
  userData: Record<string, unknown>
  events: ActivityEvent[]
}

export interface UserMatch {
  user_id: string | null
  amplitude_id: string | number
  [k: string]: unknown
}

const PAGE = 50

function scalar(v: unknown): v is string | number | boolean {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'
}

function props(e: ActivityEvent): string {
  const p = e.event_properties
  if (!p || typeof p !== 'object') return ''
  const text = Object.entries(p)
    .map(([k, v]) => `${k}=${scalar(v) ? v : JSON.stringify(v)}`)
    .join(', ')
  return text.length > 120 ? `${text.slice(0, 117)}…` : text
}

const EVENT_COLUMNS: Column<ActivityEvent>[] = [
  { key: 'time', header: 'time', cell: (e) => e.event_time, attrs: () => ({ 'data-testid': 'activity-time' }) },
  { key: 'event', header: 'event', cell: (e) => e.event_type, attrs: () => ({ 'data-testid': 'activity-event' }) },
  { key: 'props', header: 'properties', cell: props, attrs: () => ({ className: 'props' }) },
]

/** One user's profile and event stream; `user` is what /api/2/useractivity takes (the Amplitude ID). */
export function UserStream({ user }: { user: string }) {
  const [offset, setOffset] = useState(0)
  const [seenUser, setSeenUser] = useState(user)
  if (seenUser !== user) {
    setSeenUser(user)
    setOffset(0)
  }
  const params = { user, offset: String(offset), limit: String(PAGE) }
  const value = useAsync<UserActivity>(JSON.stringify(params), async () => {
    const r = await get<Partial<UserActivity>>('/api/2/useractivity', params)
    return { userData: r.userData ?? {}, events: r.events ?? [] }
  })
  return (
    <div className="user-stream" data-testid="user-stream">
      <StateView value={value} isEmpty={() => false}>
        {(a) => (
          <>
            <dl className="user-data" data-testid="user-data">
              {Object.entries(a.userData)
                .filter(([, v]) => scalar(v))
                .map(([k, v]) => (
                  <div key={k}>
                    <dt>{k}</dt>
                    <dd data-testid={`user-data-${k}`}>{String(v)}</dd>
                  </div>
                ))}
            </dl>
            {a.events.length === 0 ? (
              <div className="state" data-testid="state-empty">
                {offset ? 'No older events.' : 'No events for this user.'}
              </div>
            ) : (
              <DataTable columns={EVENT_COLUMNS} rows={a.events} rowKey={(_, i) => String(offset + i)} rowTestId={() => 'activity-row'} testId="user-activity" className="events" maxHeight={420} />
            )}
            <div className="pager">
              <button className="link" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))} data-testid="activity-newer">
                ← newer
              </button>
              <span>
                events {a.events.length ? offset + 1 : offset}–{offset + a.events.length}
              </span>
              <button className="link" disabled={a.events.length < PAGE} onClick={() => setOffset(offset + PAGE)} data-testid="activity-older">
                older →
              </button>
            </div>
          </>
        )}
      </StateView>
    </div>
  )
}

function matchId(m: UserMatch): string {
  return String(m.amplitude_id ?? m.user_id)
}

export default function People({ initialUser }: { initialUser: string | null }) {
  const [text, setText] = useState(initialUser ?? '')
  const [term, setTerm] = useState(initialUser ?? '')
  const [user, setUser] = useState<string | null>(initialUser)
  const matches = useAsync<UserMatch[]>(term ? `search:${term}` : null, async () => {
    const r = await get<{ matches?: UserMatch[] }>('/api/2/usersearch', { user: term })
    return r.matches ?? []
  })
  const choose = (id: string) => {
    setUser(id)
    history.replaceState(null, '', `#/people?u=${encodeURIComponent(id)}`)
  }
  return (
    <section className="page" data-testid="page-people">
      <h1>User activity</h1>
      <form
        className="controls"
        onSubmit={(e) => {
          e.preventDefault()
          setTerm(text.trim())
          setUser(null)
        }}
      >
        <label className="field grow">
          <span>user ID, device ID or Amplitude ID</span>
          <input value={text} onChange={(e) => setText(e.target.value)} placeholder="search users" data-testid="user-search" />
        </label>
        <button type="submit" disabled={!text.trim()} data-testid="user-search-go">
          Search
        </button>
      </form>
      <div className="people">
        <StateView value={matches} isEmpty={(m) => m.length === 0} idle="Search for a user to see their events." empty="No user matches.">
          {(m) => (
            <ul className="user-list matches" data-testid="user-matches">
              {m.map((x) => (
                <li key={matchId(x)}>
                  <button className={`link ${user === matchId(x) ? 'active' : ''}`} onClick={() => choose(matchId(x))} data-testid="user-match">
                    {x.user_id ?? '(no user ID)'} <small>#{String(x.amplitude_id)}</small>
                  </button>
                </li>
              ))}
            </ul>
          )}
        </StateView>
        {user && <UserStream user={user} />}
      </div>
    </section>
  )
}
