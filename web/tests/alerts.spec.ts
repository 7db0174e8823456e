// Alerts from a saved chart, in a real browser (run alone by tests/test_web_alerts.py; self-contained, so the
// full UI run of tests/test_web_ui.py may run it too): the "alert" action of a chart row creates an alert
// (the API's 400 message shown for a bad webhook), the alerts list shows it, snoozes and deletes it.
import { expect, test } from '@playwright/test'

const KEY = process.env.EP_API_KEY ?? ''
const SECRET = process.env.EP_SECRET_KEY ?? ''
const basic = { Authorization: `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}` }

test('alert on a saved chart: create, list, snooze, delete', async ({ browser }) => {
  const page = await browser.newPage()
  const name = `alerted chart ${Date.now()}`
  const made = await page.request.post('/api/web/charts', {
    headers: basic,
    data: { name, kind: 'segmentation', definition: { event: 'purchase', event2: '', filters: [], metric: 'totals', groupBy: null, interval: '1', start: '2025-10-01', end: '2025-10-07', chart: 'line' } },
  })
  expect(made.status(), await made.text()).toBe(201)
  const chart = await made.json()

  await page.goto('/')
  await page.getByTestId('api-key').fill(KEY)
  await page.getByTestId('secret-key').fill(SECRET)
  await page.getByTestId('sign-in').click()
  await expect(page.getByTestId('project')).toBeVisible()
  await page.goto('/#/charts')
  const row = page.getByTestId('chart-row').filter({ hasText: name })
  await row.getByTestId('chart-alert').click()
  await page.getByTestId('alert-condition').selectOption('below')
  await page.getByTestId('alert-threshold').fill('5')
  await page.getByTestId('alert-webhook').fill('ftp://nowhere')
  await page.getByTestId('alert-create').click()
  await expect(page.getByTestId('alert-error')).toContainText('http(s) URL')
  await page.getByTestId('alert-webhook').fill('http://127.0.0.1:9/hook')
  await page.getByTestId('alert-create').click()
  await expect(page.getByTestId('alert-secret')).toBeVisible()

  const alertRow = page.getByTestId('alert-row').filter({ hasText: name })
  await expect(alertRow).toHaveCount(1)
  await expect(alertRow).toContainText('below 5 · day')
  await expect(alertRow.getByTestId('alert-status')).toHaveText('resolved')
  const listed = await (await page.request.get('/api/alerts', { headers: basic })).json()
  const mine = listed.alerts.find((a: { name: string }) => a.name.startsWith(name))
  expect(mine.series.chart_id).toBe(chart.id)
  expect(mine.condition).toBe('below')
  await page.screenshot({ path: test.info().outputPath('alerts.png'), fullPage: true })

  await alertRow.getByTestId('alert-snooze').click()
  await expect(alertRow.getByTestId('alert-status')).toContainText('snoozed until')
  await alertRow.getByTestId('alert-unsnooze').click()
  await expect(alertRow.getByTestId('alert-status')).toHaveText('resolved')
  await alertRow.getByTestId('alert-delete').click()
  await expect(alertRow).toHaveCount(0)
  const after = await (await page.request.get('/api/alerts', { headers: basic })).json()
  expect(after.alerts.find((a: { id: string }) => a.id === mine.id)).toBeUndefined()
  // leave the project as found (the full UI run shares it)
  expect((await page.request.delete(`/api/web/charts/${chart.id}`, { headers: basic })).status()).toBe(200)
  await page.close()
})
