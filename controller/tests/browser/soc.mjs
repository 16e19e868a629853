// The SOC's pages in real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), with axe-core run on every page. Started by
// controller/tests/console_browser.rs, which passes, in the environment:
//   CONSOLE_URL  the console (https://localhost:PORT, the lab CA's certificate)
//   PSC_URL      the mock Pro Santé Connect's base (POST /mock/next/ID picks the next user)
//   SOC_USER     the national id the console maps to the soc role
//   SUMMARY      the summary of the alert the test stored before starting this script
//   LATER        the summary of the alert it stores once READY_FILE exists
//   READY_FILE   written when the alert list is open, so the next alert arrives while it is
//   SHOTS        where the screenshots go
// The story: a SOC user logs in through PSC, sees the stored alert on /alerts, sees the next
// one appear without reloading (htmx polls the list), opens the first, acknowledges it with a
// reason, and reads the audit trail with its verification. Any axe violation of impact
// serious or critical, any CSP violation in the browser's console, or any failed expectation
// exits non-zero.

import { chromium } from 'playwright-core';
import axe from 'axe-core';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const { CONSOLE_URL, PSC_URL, SOC_USER, SUMMARY, LATER, READY_FILE, SHOTS } = process.env;
for (const [k, v] of Object.entries({ CONSOLE_URL, PSC_URL, SOC_USER, SUMMARY, LATER, READY_FILE, SHOTS })) {
  if (!v) throw new Error(`${k} is not set`);
}
mkdirSync(SHOTS, { recursive: true });

const report = { pages: [], axe: [], csp: [] };

function expect(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
}

/** axe-core on the page as it is; serious and critical violations are failures. */
async function audit(page, name) {
  // Evaluated through the DevTools protocol, so the page's CSP (no inline script) stays on.
  await page.evaluate(axe.source);
  const results = await page.evaluate(() =>
    window.axe.run(document, { resultTypes: ['violations'] }),
  );
  const bad = results.violations.filter((v) => ['serious', 'critical'].includes(v.impact));
  report.pages.push({ name, url: page.url(), violations: results.violations.length });
  for (const v of bad) {
    report.axe.push({
      page: name,
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => n.target.join(' ')),
    });
  }
  await page.screenshot({ path: join(SHOTS, `console-${name}.png`), fullPage: true });
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const context = await browser.newContext({
    // The console's certificate is the lab CA's, which this browser does not know.
    ignoreHTTPSErrors: true,
    locale: 'en-GB',
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) report.csp.push(m.text());
  });

  const r = await fetch(`${PSC_URL}/mock/next/${SOC_USER}`, { method: 'POST' });
  expect(r.status === 204, `the mock PSC knows ${SOC_USER}`);
  await page.goto(`${CONSOLE_URL}/login`);
  await page.click('a[href="/login/oidc"]');
  await page.waitForURL(`${CONSOLE_URL}/`);
  expect((await page.textContent('.who')).includes(`${SOC_USER} (soc)`), 'logged in as soc');

  // The list, from the nav link.
  await Promise.all([page.waitForNavigation(), page.click('header a[href="/alerts"]')]);
  const rows = page.locator('tr.alert');
  expect((await rows.count()) === 1, 'one alert listed');
  expect((await page.textContent('#results')).includes(SUMMARY), 'the stored alert is listed');
  // The next alert arrives while the page is open: the polled list shows it, no reload.
  const url = page.url();
  writeFileSync(READY_FILE, 'ready\n');
  await page.waitForFunction(
    (later) => document.querySelector('#results').textContent.includes(later),
    LATER,
    { timeout: 30000, polling: 250 },
  );
  expect(page.url() === url && (await rows.count()) === 2, 'the new alert appeared in place');
  await audit(page, 'alerts');

  // The first alert's evidence, then acknowledge it with a reason.
  await Promise.all([page.waitForNavigation(), page.click(`tr.alert:has-text("${SUMMARY}") td:first-child a`)]);
  expect((await page.textContent('main')).includes('Evidence'), 'the evidence');
  expect((await page.locator('a[href^="/devices/"]').count()) === 1, 'a link to the device');
  await audit(page, 'alert');
  await page.fill('#acknowledge input[name="reason"]', 'INC-2041: scheduled vulnerability scan');
  await Promise.all([page.waitForNavigation(), page.click('#acknowledge button')]);
  expect(page.url().includes('acknowledged='), 'acknowledged and written');
  expect((await page.textContent('#state')).includes(`acknowledged (by user:${SOC_USER})`), 'the state says so');
  expect((await page.locator('#acknowledge').count()) === 0, 'no second acknowledgement');

  // The audit trail with its verification.
  await Promise.all([page.waitForNavigation(), page.click('header a[href="/audit"]')]);
  expect((await page.textContent('#verdict')).startsWith('Intact'), 'the trail verifies');
  expect((await page.textContent('tr.entry')).includes('acknowledge_alerts'), 'the newest entry is the acknowledgement');
  await audit(page, 'audit');
} finally {
  await browser.close();
}

console.log(JSON.stringify(report, null, 1));
if (report.axe.length > 0) {
  console.error(`axe: ${report.axe.length} serious or critical violations`);
  process.exit(1);
}
if (report.csp.length > 0) {
  console.error(`CSP violations: ${report.csp.join('\n')}`);
  process.exit(1);
}
