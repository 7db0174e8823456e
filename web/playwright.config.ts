import { defineConfig } from '@playwright/test'

// Run by tests/test_web_ui.py, which starts the stack and passes EP_BASE_URL (and the credentials, dates and
// expected figures) in the environment. Debian's chromium, never a downloaded browser.
export default defineConfig({
  testDir: './tests',
  outputDir: process.env.EP_OUTPUT_DIR ?? 'test-results',
  timeout: 90_000,
  expect: { timeout: 20_000 },
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    baseURL: process.env.EP_BASE_URL,
    viewport: { width: 1280, height: 800 },
    trace: 'off',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
})
