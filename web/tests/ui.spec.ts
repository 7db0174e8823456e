// The web UI in a real browser against the stack started by tests/test_web_ui.py (see playwright.config.ts).
// One signed-in page walks every page in order; numbers shown are compared with the API (called here with
// Basic auth) and with the demo's ground truth (EP_EXPECTED). Screenshots go to each test's output dir.
import { readFileSync } from 'node:fs'
import { expect, test, type Browser, type Locator, type Page } from '@playwright/test'

const KEY = process.env.EP_API_KEY ?? ''
const SECRET = process.env.EP_SECRET_KEY ?? ''
const START = process.env.EP_START ?? ''
const END = process.env.EP_END ?? ''
const expected = JSON.parse(readFileSync(process.env.EP_EXPECTED ?? '', 'utf8')) as { funnel: number[]; marts: number[]; steps: string[]; window: number }
const basic = { Authorization: `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}` }
const compact = (d: string) => d.replaceAll('-', '')

test.describe.configure({ mode: 'serial' })

let page: Page

async function signIn(browser: Browser): Promise<Page> {
  const p = await browser.newPage()
  await p.goto('/')
  await p.getByTestId('api-key').fill(KEY)
  await p.getByTestId('secret-key').fill(SECRET)
  await p.getByTestId('sign-in').click()
  await expect(p.getByTestId('project')).toHaveText('demo')
  return p
}

async function apiGet(path: string, params: [string, string][]): Promise<any> {
  const q = new URLSearchParams(params).toString()
  const r = await page.request.get(`${path}?${q}`, { headers: basic })
  expect(r.status(), await r.text()).toBe(200)
  return (await r.json()).data
}

async function drag(source: Locator, target: Locator, where: 'center' | 'bottom' = 'center') {
  const s = (await source.boundingBox())!
  const t = (await target.boundingBox())!
  await page.mouse.move(s.x + s.width / 2, s.y + s.height / 2)
  await page.mouse.down()
  await page.mouse.move(s.x + s.width / 2 + 8, s.y + s.height / 2 + 8, { steps: 4 })
  const ty = where === 'bottom' ? t.y + t.height - 10 : t.y + t.height / 2
  await page.mouse.move(t.x + t.width / 2, ty, { steps: 12 })
  await page.mouse.up()
}

async function shot(name: string) {
  await page.screenshot({ path: test.info().outputPath(`${name}.png`), fullPage: true })
}

async function setDates() {
  await page.getByTestId('start').fill(START)
  await page.getByTestId('end').fill(END)
}

test('sign-in is refused with a wrong secret', async ({ browser }) => {
  page = await browser.newPage()
  await page.goto('/')
  await page.getByTestId('api-key').fill(KEY)
  await page.getByTestId('secret-key').fill('0'.repeat(64))
  await page.getByTestId('sign-in').click()
  await expect(page.getByTestId('signin-error')).toHaveText('Wrong API key or secret key.')
  await expect(page.getByTestId('project')).toHaveCount(0)
  expect((await page.context().cookies()).filter((c) => c.name === 'ep_session')).toHaveLength(0)
  await shot('signin-refused')
  await page.close()
  page = await signIn(browser)
})

test('segmentation: chart and table equal the API', async () => {
  await page.getByTestId('nav-segmentation').click()
  await expect(page.getByTestId('state-idle')).toBeVisible()
  await page.getByTestId('seg-event').selectOption('sign_up')
  await setDates()
  await expect(page.getByTestId('segmentation-chart')).toBeVisible()
  const data = await apiGet('/api/2/events/segmentation', [
    ['e', JSON.stringify({ event_type: 'sign_up', filters: [], group_by: [] })],
    ['m', 'uniques'],
    ['i', '1'],
    ['start', compact(START)],
    ['end', compact(END)],
  ])
  const cells = page.getByTestId('series-table').locator('tbody tr').first().locator('td')
  await expect(cells).toHaveText((data.series[0] as number[]).map(String))
  expect(data.series[0].reduce((a: number, b: number) => a + b, 0)).toBeGreaterThan(0)
  const download = page.waitForEvent('download')
  await page.getByTestId('csv').click()
  const csv = readFileSync(await (await download).path(), 'utf8')
  expect(csv.split('\n')[0]).toBe(['series', ...data.xValues].join(','))
  // a bad input shows the API's 400 message, not a blank page
  await page.getByTestId('end').fill('2001-01-01')
  await expect(page.getByTestId('state-error')).toContainText(/end|start/)
  await setDates()
  await expect(page.getByTestId('segmentation-chart')).toBeVisible()
  await shot('segmentation')
})

test('funnel built by drag and drop equals the API and the ground truth', async () => {
  await page.getByTestId('nav-funnel').click()
  const zone = page.getByTestId('steps-zone')
  const [s1, s2, s3] = expected.steps
  // drop step 1, then step 3, then step 2 — and reorder step 2 above step 3 by dragging it
  await drag(page.getByTestId(`palette-${s1}`), zone, 'bottom')
  await expect(page.getByTestId('step-0')).toContainText(s1)
  await drag(page.getByTestId(`palette-${s3}`), zone, 'bottom')
  await drag(page.getByTestId(`palette-${s2}`), zone, 'bottom')
  await expect(page.getByTestId('step-2')).toContainText(s2)
  await drag(page.getByTestId('step-2'), page.getByTestId('step-1'))
  await expect(page.getByTestId('step-1')).toContainText(s2)
  await expect(page.getByTestId('step-2')).toContainText(s3)
  await page.getByTestId('funnel-window').selectOption(String(expected.window))
  await page.getByTestId('funnel-mode').selectOption('ordered')
  await setDates()
  await expect(page.getByTestId('funnel-count-0-2')).toBeVisible()

  const data = await apiGet('/api/2/funnels', [
    ...expected.steps.map((s) => ['e', JSON.stringify({ event_type: s })] as [string, string]),
    ['mode', 'ordered'],
    ['cs', String(expected.window)],
    ['start', compact(START)],
    ['end', compact(END)],
  ])
  const api = data[0]
  expect(api.cumulativeRaw).toEqual(expected.funnel) // the API equals the demo's ground truth
  expect(api.cumulativeRaw).toEqual(expected.marts) // and dbt's fct_funnels (its entry days added up)
  for (let i = 0; i < 3; i++) {
    await expect(page.getByTestId(`funnel-count-0-${i}`)).toHaveText(String(api.cumulativeRaw[i]))
    await expect(page.getByTestId(`funnel-count-0-${i}`)).toHaveText(String(expected.marts[i]))
    await expect(page.getByTestId(`funnel-pct-0-${i}`)).toHaveText(`${(api.cumulative[i] * 100).toFixed(1)}%`)
  }
  await expect(page.getByTestId('funnel-median-0-1')).not.toHaveText('–')
  await shot('funnel')

  await page.getByTestId('funnel-bar-0-2').click()
  await expect(page.getByTestId('step-user')).toHaveCount(Math.min(api.cumulativeRaw[2], 100))
  await page.getByTestId('step-user').first().click()
  await expect(page.getByTestId('step-user-stream').locator('[data-testid="user-activity"], [data-testid="state-error"], [data-testid="state-empty"]')).toBeVisible()
  await shot('funnel-step-users')
})

test('retention grid equals the API', async () => {
  await page.getByTestId('nav-retention').click()
  await page.getByTestId('ret-start').selectOption('sign_up')
  await page.getByTestId('ret-return').selectOption('_active')
  await page.getByTestId('ret-mode').selectOption('n-day')
  await setDates()
  await expect(page.getByTestId('retention-grid')).toBeVisible()
  const data = await apiGet('/api/2/retention', [
    ['se', JSON.stringify({ event_type: 'sign_up' })],
    ['re', JSON.stringify({ event_type: '_active' })],
    ['rm', 'n-day'],
    ['i', '1'],
    ['start', compact(START)],
    ['end', compact(END)],
  ])
  const series = data.series[0]
  expect(series.dates.length).toBeGreaterThan(0)
  await expect(page.getByTestId('retention-grid').locator('tbody tr')).toHaveCount(series.dates.length)
  let cells = 0
  for (const date of series.dates as string[]) {
    const row = page.getByTestId(`retention-row-${date}`)
    const values = series.values[date] as { count: number; outof: number }[]
    await expect(row.getByTestId('cohort-size')).toHaveText(String(values[0].count))
    for (let k = 1; k < values.length; k++) {
      await expect(row.getByTestId(`retention-cell-${date}-${k}`)).toHaveAttribute('data-count', String(values[k].count))
      cells++
    }
  }
  expect(cells).toBeGreaterThan(0)
  await shot('retention')
})

async function apiRaw(path: string, params: [string, string][]): Promise<{ ok: boolean; status: number; body: any }> {
  const r = await page.request.get(`${path}?${new URLSearchParams(params)}`, { headers: basic })
  const text = await r.text()
  let body: any = text
  try {
    body = JSON.parse(text)
  } catch {
    /* plain-text body */
  }
  return { ok: r.ok(), status: r.status(), body }
}

const cellsOf = (table: string, row: string) => page.getByTestId(table).getByTestId(row).locator('td')

test('active users page equals the API', async () => {
  await page.getByTestId('nav-users').click()
  await expect(page.getByTestId('page-users')).toBeVisible()
  await setDates()
  const data = await apiGet('/api/2/users', [['m', 'active'], ['i', '1'], ['start', compact(START)], ['end', compact(END)]])
  await expect(page.getByTestId('users-chart')).toBeVisible()
  await expect(page.getByTestId('series-table').locator('tbody tr').first().locator('td')).toHaveText((data.series[0] as number[]).map(String))
  await shot('users')
})

test('lifecycle: chart, and a table equal to the API; its 400 message; an empty range', async () => {
  await page.getByTestId('nav-lifecycle').click()
  await expect(page.getByTestId('page-lifecycle')).toBeVisible()
  await setDates()
  const data = await apiGet('/api/2/lifecycle', [['start', compact(START)], ['end', compact(END)], ['i', '1']])
  await expect(page.getByTestId('lifecycle-chart')).toBeVisible()
  const names = ['new', 'current', 'resurrected', 'dormant']
  for (const name of names) await expect(cellsOf('lifecycle-table', `lifecycle-row-${name}`)).toHaveText((data.series[name] as number[]).map(String))
  await expect(page.getByTestId('lifecycle-table').locator('thead th')).toHaveText(['series', ...(data.xValues as string[])])
  expect((data.series.new as number[]).reduce((a, b) => a + b, 0)).toBeGreaterThan(0)
  await shot('lifecycle')
  // weekly buckets: the page follows the interval
  await page.getByTestId('lifecycle-interval').selectOption('7')
  const weekly = await apiGet('/api/2/lifecycle', [['start', compact(START)], ['end', compact(END)], ['i', '7']])
  await expect(cellsOf('lifecycle-table', 'lifecycle-row-new')).toHaveText((weekly.series.new as number[]).map(String))
  // end before start: the API's own message
  await page.getByTestId('end').fill('2001-01-01')
  const bad = await apiRaw('/api/2/lifecycle', [['start', compact(START)], ['end', '20010101'], ['i', '7']])
  expect(bad.status).toBe(400)
  await expect(page.getByTestId('state-error')).toHaveText(bad.body.error)
  // a range before any event: the empty state (or the API's refusal of such a range)
  await page.getByTestId('start').fill('2010-01-01')
  await page.getByTestId('end').fill('2010-01-14')
  const old = await apiRaw('/api/2/lifecycle', [['start', '20100101'], ['end', '20100114'], ['i', '7']])
  if (old.ok) await expect(page.getByTestId('state-empty')).toBeVisible()
  else await expect(page.getByTestId('state-error')).toHaveText(old.body.error)
})

test('stickiness: exactly / at least k days and the total equal the API', async () => {
  await page.getByTestId('nav-stickiness').click()
  await expect(page.getByTestId('page-stickiness')).toBeVisible()
  await setDates()
  const data = await apiGet('/api/2/stickiness', [['start', compact(START)], ['end', compact(END)], ['i', '7']])
  await expect(page.getByTestId('stickiness-chart')).toBeVisible()
  await expect(cellsOf('stickiness-table', 'stickiness-row-exactly')).toHaveText((data.series[0] as number[]).map(String))
  await expect(cellsOf('stickiness-table', 'stickiness-row-at-least')).toHaveText((data.cumulative[0] as number[]).map(String))
  await expect(page.getByTestId('stickiness-total')).toHaveText(String(data.total))
  expect(data.total).toBeGreaterThan(0)
  await shot('stickiness')
  // one event instead of any active one: the page sends it as e
  await page.getByTestId('stickiness-event').selectOption(expected.steps[2])
  const one = await apiGet('/api/2/stickiness', [['e', JSON.stringify({ event_type: expected.steps[2] })], ['start', compact(START)], ['end', compact(END)], ['i', '7']])
  expect(one.total).toBeLessThan(data.total)
  await expect(page.getByTestId('stickiness-total')).toHaveText(String(one.total))
  await expect(cellsOf('stickiness-table', 'stickiness-row-exactly')).toHaveText((one.series[0] as number[]).map(String))
})

test('realtime: today and yesterday per 5 minutes equal the API', async () => {
  await page.getByTestId('nav-realtime').click()
  await expect(page.getByTestId('page-realtime')).toBeVisible()
  await expect(page.getByTestId('page-realtime').locator('[data-testid="realtime-chart"], [data-testid="state-empty"]')).toBeVisible()
  const shown = (v: number | null) => (v === null || v === undefined ? '–' : String(v))
  const rows = page.getByTestId('realtime-table').locator('tbody tr')
  const total = (s: (number | null)[]) => s.reduce<number>((a, v) => a + (v ?? 0), 0)
  // the buckets grow with the clock: compare with an answer of the same moment (retried across a 5-minute boundary)
  await expect(async () => {
    const data = await apiGet('/api/2/realtime', [])
    expect(data.seriesLabels).toEqual(['Today', 'Yesterday'])
    if (total(data.series[0]) + total(data.series[1]) === 0) {
      await expect(page.getByTestId('state-empty')).toBeVisible({ timeout: 1000 })
      return
    }
    // newest bucket first
    expect(await rows.locator('th').allTextContents()).toEqual([...data.xValues].reverse())
    expect(await rows.locator('td:nth-of-type(1)').allTextContents()).toEqual((data.series[0] as (number | null)[]).map(shown).reverse())
    expect(await rows.locator('td:nth-of-type(2)').allTextContents()).toEqual((data.series[1] as (number | null)[]).map(shown).reverse())
    expect(await page.getByTestId('realtime-latest-1').textContent()).toBe(shown(data.series[1][data.series[1].length - 1]))
  }).toPass({ timeout: 90_000 })
  await expect(page.getByTestId('realtime-table').locator('thead th')).toHaveText(['time', 'Today', 'Yesterday'])
  await shot('realtime')
})

test('user activity: a funnel step’s user, the search box and the event stream equal the API', async () => {
  await page.goto(`/#/funnel?d=${encodeURIComponent(JSON.stringify({ steps: expected.steps, window: String(expected.window), mode: 'ordered', groupBy: null, start: START, end: END }))}`)
  await page.getByTestId('funnel-bar-0-2').click()
  const first = page.getByTestId('step-user').first()
  const actor = (await first.textContent())!.trim()
  await first.click()
  const act = await apiRaw('/api/2/useractivity', [['user', actor], ['offset', '0'], ['limit', '50']])
  expect(act.status, JSON.stringify(act.body)).toBe(200)
  const events = act.body.events as { event_type: string; event_time: string }[]
  expect(events.length).toBeGreaterThan(0)
  // the user reached step 3: their stream holds the funnel's three events
  for (const s of expected.steps) expect(events.map((e) => e.event_type)).toContain(s)
  const panel = page.getByTestId('step-user-stream')
  await expect(panel.getByTestId('activity-event')).toHaveText(events.map((e) => e.event_type))
  await expect(panel.getByTestId('activity-time')).toHaveText(events.map((e) => e.event_time))
  await expect(panel.getByTestId('user-data-num_events')).toHaveText(String(act.body.userData.num_events))

  // the user activity page: search by the user's user_id, pick the match, same stream
  const userId = String(act.body.userData.user_id ?? actor)
  await page.getByTestId('open-user').click()
  await expect(page.getByTestId('page-people')).toBeVisible()
  await expect(page.getByTestId('activity-event')).toHaveText(events.map((e) => e.event_type))
  await page.getByTestId('nav-people').click()
  await expect(page.getByTestId('state-idle')).toBeVisible()
  await page.getByTestId('user-search').fill(userId)
  await page.getByTestId('user-search-go').click()
  const search = await apiRaw('/api/2/usersearch', [['user', userId]])
  expect(search.status).toBe(200)
  const matches = search.body.matches as { user_id: string | null; amplitude_id: string }[]
  expect(matches.map((m) => String(m.amplitude_id))).toContain(actor)
  await expect(page.getByTestId('user-match')).toHaveCount(matches.length)
  await page.getByTestId('user-match').filter({ hasText: `#${actor}` }).click()
  await expect(page.getByTestId('activity-event')).toHaveText(events.map((e) => e.event_type))
  await expect(page.getByTestId('user-data-user_id')).toHaveText(userId)
  await shot('user-activity')
  // paging: the next page is the API's offset=50
  if (act.body.userData.num_events > 50) {
    const next = await apiRaw('/api/2/useractivity', [['user', actor], ['offset', '50'], ['limit', '50']])
    await page.getByTestId('activity-older').click()
    await expect(page.getByTestId('activity-event')).toHaveText((next.body.events as { event_type: string }[]).map((e) => e.event_type))
  }
  // nobody matches: the empty state
  await page.getByTestId('user-search').fill('no-such-user-\u2603')
  await page.getByTestId('user-search-go').click()
  await expect(page.getByTestId('state-empty')).toHaveText('No user matches.')
})

test('save a chart, put it on a dashboard, reload: still there', async ({ browser }) => {
  await page.goto(`/#/funnel?d=${encodeURIComponent(JSON.stringify({ steps: expected.steps, window: String(expected.window), mode: 'ordered', groupBy: null, start: START, end: END }))}`)
  await expect(page.getByTestId('funnel-count-0-0')).toHaveText(String(expected.funnel[0]))
  await page.getByTestId('chart-name').fill('Signup funnel')
  await page.getByTestId('chart-save').click()
  await expect(page).toHaveURL(/#\/charts\/\d+$/)
  const share = (await page.getByTestId('share-url').textContent())!
  await page.getByTestId('nav-charts').click()
  await expect(page.getByTestId('chart-row')).toContainText(['Signup funnel'])
  await shot('charts')

  await page.getByTestId('nav-dashboards').click()
  await page.getByTestId('dashboard-name').fill('Growth')
  await page.getByTestId('dashboard-create').click()
  await expect(page.getByTestId('dashboard-title')).toHaveText('Growth')
  await expect(page.getByTestId('state-empty')).toBeVisible()
  await page.getByTestId('dashboard-pick').selectOption({ label: 'Signup funnel' })
  await page.getByTestId('dashboard-add').click()
  await expect(page.getByTestId('dashboard-tile')).toHaveCount(1)
  await page.reload()
  await expect(page.getByTestId('dashboard-title')).toHaveText('Growth')
  await expect(page.getByTestId('dashboard-tile')).toHaveCount(1)
  await expect(page.getByTestId('dashboard-tile')).toContainText('Signup funnel')
  for (let i = 0; i < 3; i++) await expect(page.getByTestId(`funnel-count-0-${i}`)).toHaveText(String(expected.funnel[i]))
  await shot('dashboard')

  // the shareable URL opens the chart in another signed-in session
  const other = await signIn(browser)
  await other.goto(share)
  await expect(other.getByTestId('chart-name')).toHaveValue('Signup funnel')
  await expect(other.getByTestId('funnel-count-0-2')).toHaveText(String(expected.funnel[2]))
  await other.close()
})

test('phone width: the funnel page fits and the menu opens', async () => {
  await page.setViewportSize({ width: 390, height: 844 })
  await page.goto(`/#/funnel?d=${encodeURIComponent(JSON.stringify({ steps: expected.steps, window: String(expected.window), mode: 'ordered', groupBy: null, start: START, end: END }))}`)
  await expect(page.getByTestId('funnel-count-0-2')).toHaveText(String(expected.funnel[2]))
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
  expect(overflow).toBeLessThanOrEqual(1)
  await expect(page.getByTestId('nav-retention')).toBeHidden()
  await shot('funnel-phone')
  await page.getByLabel('menu').click()
  await expect(page.getByTestId('nav-retention')).toBeVisible()
  // on a phone, tapping event cards adds them as steps (no drag needed)
  await page.getByTestId('nav-retention').click()
  // (let the retention page render first: a funnel page never left keeps its steps)
  await expect(page.getByTestId('page-retention')).toBeVisible()
  await page.goto('/#/funnel')
  for (const s of expected.steps) await page.getByTestId(`palette-${s}`).click()
  for (const [i, s] of expected.steps.entries()) await expect(page.getByTestId(`step-${i}`)).toContainText(s)
  await expect(page.getByTestId('step-3')).toHaveCount(0)
  // the other pages fit a phone too (wide tables scroll inside their box, not the page)
  const pages: [string, string][] = [
    ['lifecycle', 'lifecycle-chart'],
    ['stickiness', 'stickiness-chart'],
    ['realtime', 'realtime-chart'],
    ['people', 'user-search'],
  ]
  for (const [name, testId] of pages) {
    const d = name === 'lifecycle' || name === 'stickiness' ? `?d=${encodeURIComponent(JSON.stringify({ start: START, end: END }))}` : ''
    await page.goto(`/#/${name}${d}`)
    await expect(page.getByTestId(testId)).toBeVisible()
    expect(await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)).toBeLessThanOrEqual(1)
    await shot(`${name}-phone`)
  }
  // one user's profile and stream on a phone: the wide event table scrolls inside its box
  const someone = (await apiRaw('/api/2/usersearch', [['user', 'user']])).body.matches[0].amplitude_id as string
  await page.goto(`/#/people?u=${encodeURIComponent(someone)}`)
  await expect(page.getByTestId('user-activity')).toBeVisible()
  expect(await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)).toBeLessThanOrEqual(1)
  await shot('user-activity-phone')
  await page.setViewportSize({ width: 1280, height: 800 })
})

test('sign out ends the session', async () => {
  await page.getByTestId('sign-out').click()
  await expect(page.getByTestId('sign-in')).toBeVisible()
  const r = await page.request.get('/api/web/charts')
  expect(r.status()).toBe(401)
  await page.reload()
  await expect(page.getByTestId('sign-in')).toBeVisible()
})
