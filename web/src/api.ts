// The query service's API as the UI uses it: same-origin fetches carrying the HttpOnly session cookie,
// the CSRF token on state-changing calls, and the API's own error message surfaced as the Error's text.

let csrfToken = ''

export function setCsrf(token: string) {
  csrfToken = token
}

export class ApiError extends Error {
  status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

function messageOf(status: number, body: unknown, text: string): string {
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>
    for (const key of ['error', 'message', 'detail']) {
      const v = b[key]
      if (typeof v === 'string' && v) return v
      if (v && typeof v === 'object' && typeof (v as Record<string, unknown>).message === 'string')
        return (v as Record<string, string>).message
    }
  }
  return text.trim() || `HTTP ${status}`
}

export type Params = Record<string, string | string[] | undefined>

export function query(params: Params): string {
  const q = new URLSearchParams()
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === '') continue
    for (const item of Array.isArray(v) ? v : [v]) q.append(k, item)
  }
  return q.toString()
}

export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken
  const resp = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await resp.text()
  let parsed: unknown = undefined
  try {
    parsed = text ? JSON.parse(text) : undefined
  } catch {
    parsed = undefined
  }
  if (!resp.ok) {
    if (resp.status === 401 && !path.startsWith('/api/web/session')) window.dispatchEvent(new Event('ep-signed-out'))
    throw new ApiError(resp.status, messageOf(resp.status, parsed, text))
  }
  return parsed as T
}

export const get = <T = unknown>(path: string, params?: Params) => api<T>('GET', params ? `${path}?${query(params)}` : path)

export interface Session {
  project: string
  csrf_token: string
  expires_at: string
}

export interface Vocabulary {
  event_types: { name: string; count: number; planned: boolean }[]
  properties: { event: string[]; user: string[] }
}

export interface SavedChart {
  id: number
  name: string
  kind: ChartKind
  definition: Record<string, unknown>
  created_at: string
  updated_at: string
}

export interface Tile {
  chart_id: number
  x: number
  y: number
  w: number
  h: number
}

export interface Dashboard {
  id: number
  name: string
  layout: Tile[]
}

export type ChartKind = 'segmentation' | 'funnel' | 'retention' | 'users' | 'lifecycle' | 'stickiness' | 'realtime'
