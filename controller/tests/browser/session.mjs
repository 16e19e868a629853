// Sessions and CSRF in real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core). Started by controller/tests/console_browser.rs
// (`a_csrf_less_post_is_refused_and_an_idle_session_ends_...`), which passes, in the environment:
//   CONSOLE_URL, PSC_URL, DEVICE, SHOTS  as for console.mjs
//   IDLE_SECONDS  the console's idle timeout, set short by the test
// An engineer logs in through the mock Pro Santé Connect and opens a learning device. The
// mode form submitted by the browser with its CSRF token removed, then a script's POST with a
// forged token, are refused (403) and change nothing; a page left alone past the idle timeout
// sends the next click back to the login, which says the session ended; axe on that page.

import { audit, env, expect, finish, launch, login, newPage } from './harness.mjs';

const { CONSOLE_URL, DEVICE, IDLE_SECONDS } = env('CONSOLE_URL', 'DEVICE', 'IDLE_SECONDS', 'SHOTS');
const report = { csrf: [], ended: null };

const browser = await launch();
try {
  const page = await newPage(browser);
  await login(page, '899700000001');
  await page.goto(`${CONSOLE_URL}/devices/${DEVICE}`);

  // The real form, its hidden token taken out: the browser's own submission.
  const form = page.locator('form[action$="/mode"]');
  expect((await form.count()) === 1, 'the mode form');
  await form.locator('input[name="csrf"]').evaluate((e) => e.remove());
  await form.locator('select[name="mode"]').selectOption('enforce');
  await form.locator('input[name="reason"]').fill('CHG-66 no token');
  const [tokenless] = await Promise.all([
    page.waitForNavigation(),
    form.locator('button[type="submit"]').click(),
  ]);
  report.csrf.push({ how: 'form without token', status: tokenless.status() });
  expect(tokenless.status() === 403, `the token-less form got ${tokenless.status()}`);

  // A script on the page posting with a forged token (same origin, the cookie sent).
  await page.goto(`${CONSOLE_URL}/devices/${DEVICE}`);
  const action = await page.locator('form[action$="/mode"]').getAttribute('action');
  const forged = await page.evaluate(async (action) => {
    const body = new URLSearchParams({ csrf: 'forged', mode: 'enforce', reason: 'CHG-66' });
    const r = await fetch(action, { method: 'POST', body, redirect: 'manual' });
    return r.status;
  }, action);
  report.csrf.push({ how: 'fetch with a forged token', status: forged });
  expect(forged === 403, `the forged token got ${forged}`);
  const mode = await page.locator('select[name="mode"] option[selected]').textContent();
  expect(mode.trim() === 'learn', `the device is still learning (${mode})`);

  // Left alone past the idle timeout: the next click lands on the login.
  await page.waitForTimeout((Number(IDLE_SECONDS) + 2) * 1000);
  await Promise.all([page.waitForNavigation(), page.locator('header a[href="/"]').last().click()]);
  report.ended = page.url();
  expect(page.url() === `${CONSOLE_URL}/login?ended=1`, `sent to ${page.url()}`);
  expect((await page.textContent('main')).includes('Your session has ended'), 'says why');
  await audit(page, 'session-ended');
  // And the inventory stays out of reach.
  await page.goto(`${CONSOLE_URL}/`);
  expect(page.url().startsWith(`${CONSOLE_URL}/login`), `the inventory sent to ${page.url()}`);
} finally {
  await browser.close();
}
console.error(JSON.stringify(report));
finish();
