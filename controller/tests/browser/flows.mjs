// The device page's flow list in real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), axe-core on the page. Started by the flows test of
// controller/tests/console_browser.rs, which passes, in the environment:
//   CONSOLE_URL  the console (https://localhost:PORT, the lab CA's certificate)
//   SESSION      a viewer's session id (the console's session cookie)
//   DEVICE       the device whose page is read (with a dns flow and a tcp/8443 flow)
//   SHOTS        where the screenshots go
// Any axe violation of impact serious or critical, any CSP violation in the browser's console,
// or any failed expectation exits non-zero; the report goes to stdout as JSON.

import { chromium } from 'playwright-core';
import axe from 'axe-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const { CONSOLE_URL, SESSION, DEVICE, SHOTS } = process.env;
for (const [k, v] of Object.entries({ CONSOLE_URL, SESSION, DEVICE, SHOTS })) {
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

  // The device page, reached from the inventory.
  await page.goto(`${CONSOLE_URL}/`);
  await page.click(`a[href="/devices/${DEVICE}"]`);
  await page.waitForURL(`${CONSOLE_URL}/devices/${DEVICE}`);
  const table = page.locator('table#device-flows');
  expect((await table.locator('caption').count()) === 1, 'the flow list has a caption');
  expect((await table.locator('th[scope="col"]').count()) === 10, 'ten column headers');
  const dns = await table.locator('tr.flow', { hasText: '(dns)' }).textContent();
  expect(dns.includes('allowed') && dns.includes('infusion-pump → rule dns'), `dns: ${dns}`);
  const other = await table.locator('tr.flow', { hasText: '8443' }).textContent();
  expect(other.includes('no rule of infusion-pump allows it'), `tcp/8443: ${other}`);
  await audit(page, 'device-flows');
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
