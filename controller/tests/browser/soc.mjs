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

import { audit, env, expect, finish, launch, login, newPage } from './harness.mjs';
import { writeFileSync } from 'node:fs';

const { CONSOLE_URL, PSC_URL, SOC_USER, SUMMARY, LATER, READY_FILE, SHOTS } = env('CONSOLE_URL', 'PSC_URL', 'SOC_USER', 'SUMMARY', 'LATER', 'READY_FILE', 'SHOTS');

const browser = await launch();
try {
  const page = await newPage(browser);
  await login(page, SOC_USER);
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
finish();
