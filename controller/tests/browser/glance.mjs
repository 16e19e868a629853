// The site at a glance in real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), axe-core on both pages. Started by the glance test of
// controller/tests/console_browser.rs, which passes, in the environment:
//   CONSOLE_URL  the console (https://localhost:PORT, the lab CA's certificate)
//   SESSION      a viewer's session id (the console's session cookie)
//   SHOTS        where the screenshots go
// Any axe violation of impact serious or critical, any CSP violation in the browser's console,
// or any failed expectation exits non-zero; the report goes to stdout as JSON.

import { audit, env, expect, finish, launch, sessionPage } from './harness.mjs';

const { CONSOLE_URL, SESSION, SHOTS } = env('CONSOLE_URL', 'SESSION', 'SHOTS');

const browser = await launch();
try {
  const page = await sessionPage(browser, SESSION);

  // The matrix, reached from the navigation.
  await page.goto(`${CONSOLE_URL}/`);
  await page.click('header a[href="/matrix"]');
  await page.waitForURL(`${CONSOLE_URL}/matrix`);
  expect((await page.locator('table.matrix caption').count()) === 1, 'the matrix has a caption');
  expect((await page.locator('th[scope="row"]').count()) === 2, 'two classes');
  const pumps = await page.textContent('tr:has(th a[href="/?profile=infusion-pump"])');
  expect(pumps.includes('seen but denied'), 'the pumps saw denied flows');
  expect(pumps.includes('allowed: out tcp/443'), 'the pumps may reach the infusion server');
  await audit(page, 'matrix');

  await page.click('header a[href="/gateways"]');
  await page.waitForURL(`${CONSOLE_URL}/gateways`);
  const w3 = await page.textContent('tr.gateway:nth-child(1)');
  expect(w3.includes('connected') && w3.includes('renew soon'), `gw-ward-3: ${w3}`);
  expect(w3.includes('0.9.1') && w3.includes('fired since'), `gw-ward-3's health: ${w3}`);
  expect(w3.includes('1 only monitored'), `gw-ward-3's fail-open state: ${w3}`);
  const w4 = await page.textContent('tr.gateway:nth-child(2)');
  expect(w4.includes('not connected'), `gw-ward-4: ${w4}`);
  expect(w4.includes('not reported by the agent'), `gw-ward-4 reports no health: ${w4}`);
  await audit(page, 'gateways');
} finally {
  await browser.close();
}
finish();
