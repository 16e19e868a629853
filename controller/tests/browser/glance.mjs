// The site at a glance in real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), axe-core on both pages. Started by the glance test of
// controller/tests/console_browser.rs, which passes, in the environment:
//   CONSOLE_URL  the console (https://localhost:PORT, the lab CA's certificate)
//   SESSION      a viewer's session id (the console's session cookie)
//   SHOTS        where the screenshots go
// Any axe violation of impact serious or critical, any CSP violation in the browser's console,
// or any failed expectation exits non-zero; the report goes to stdout as JSON.

import { chromium } from 'playwright-core';
import axe from 'axe-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const { CONSOLE_URL, SESSION, SHOTS } = process.env;
for (const [k, v] of Object.entries({ CONSOLE_URL, SESSION, SHOTS })) {
  if (!v) throw new Error(`${k} is not set`);
}
mkdirSync(SHOTS, { recursive: true });

const report = { pages: [], axe: [], csp: [] };

function expect(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
}

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
    ignoreHTTPSErrors: true,
    locale: 'en-GB',
    viewport: { width: 1280, height: 900 },
  });
  await context.addCookies([
    {
      name: '__Host-wardgate-session',
      value: SESSION,
      url: `${CONSOLE_URL}/`,
      secure: true,
      httpOnly: true,
      sameSite: 'Strict',
    },
  ]);
  const page = await context.newPage();
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) report.csp.push(m.text());
  });

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
  const w4 = await page.textContent('tr.gateway:nth-child(2)');
  expect(w4.includes('not connected'), `gw-ward-4: ${w4}`);
  await audit(page, 'gateways');
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
