// The availability warning in real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), axe-core on every page. Started by controller/tests/console_browser.rs
// (`an_availability_warning_...`), which passes, in the environment:
//   CONSOLE_URL, PSC_URL, DEVICE, SHOTS  as for console.mjs
//   CANDIDATE    a candidate profile (YAML) that drops flows the device had recently
// Engineer 1 proposes, replaces the proposal with CANDIDATE, simulates it: the warning names
// the device and its flows and a confirmation checkbox appears; submitting without it is
// refused, with it accepted. Engineer 2 sees the warning on the review page, ticks the box and
// approves. Any serious or critical axe violation, CSP violation or failed expectation exits
// non-zero; the report (JSON) goes to stdout.

import { chromium } from 'playwright-core';
import axe from 'axe-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const { CONSOLE_URL, PSC_URL, DEVICE, SHOTS, CANDIDATE } = process.env;
for (const [k, v] of Object.entries({ CONSOLE_URL, PSC_URL, DEVICE, SHOTS, CANDIDATE })) {
  if (!v) throw new Error(`${k} is not set`);
}
mkdirSync(SHOTS, { recursive: true });

const report = { pages: [], axe: [], csp: [] };

function expect(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
}

async function audit(page, name) {
  await page.evaluate(axe.source);
  const results = await page.evaluate(() =>
    window.axe.run(document, { resultTypes: ['violations'] }),
  );
  const bad = results.violations.filter((v) => ['serious', 'critical'].includes(v.impact));
  report.pages.push({ name, url: page.url(), violations: results.violations.length });
  for (const v of bad) {
    report.axe.push({ page: name, id: v.id, impact: v.impact, help: v.help });
  }
  await page.screenshot({ path: join(SHOTS, `console-${name}.png`), fullPage: true });
}

async function newPage(browser) {
  const context = await browser.newContext({
    ignoreHTTPSErrors: true,
    locale: 'en-GB',
    viewport: { width: 1280, height: 900 },
  });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) report.csp.push(m.text());
  });
  return page;
}

async function login(page, who) {
  const r = await fetch(`${PSC_URL}/mock/next/${who}`, { method: 'POST' });
  expect(r.status === 204, `the mock PSC knows ${who}`);
  await page.goto(`${CONSOLE_URL}/login`);
  await page.click('a[href="/login/oidc"]');
  await page.waitForURL(`${CONSOLE_URL}/`);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  const e1 = await newPage(browser);
  await login(e1, '899700000001');
  await e1.goto(`${CONSOLE_URL}/devices/${DEVICE}`);
  await Promise.all([e1.waitForNavigation(), e1.click('#propose')]);
  await e1.fill('textarea[name="yaml"]', CANDIDATE);
  await Promise.all([e1.waitForNavigation(), e1.click('#simulate')]);
  const warning = await e1.textContent('section.impact');
  expect(warning.includes('Availability warning'), 'the warning');
  expect(warning.includes(DEVICE), 'the device named');
  expect(warning.includes('port 53'), 'its flow named');
  expect((await e1.locator('#accept-impact').count()) === 1, 'the confirmation checkbox');
  await audit(e1, 'impact');
  await e1.fill('input[name="reason"]', 'CHG-79 no DNS');
  await Promise.all([e1.waitForNavigation(), e1.click('#submit')]);
  expect((await e1.textContent('main')).includes('tick the confirmation'), 'refused unticked');
  await audit(e1, 'impact-refused');
  // Back to the candidate (a POST page: simulated again), the box ticked this time.
  await e1.goto(`${CONSOLE_URL}/devices/${DEVICE}`);
  await Promise.all([e1.waitForNavigation(), e1.click('#propose')]);
  await e1.fill('textarea[name="yaml"]', CANDIDATE);
  await Promise.all([e1.waitForNavigation(), e1.click('#simulate')]);
  await e1.check('#accept-impact');
  await e1.fill('input[name="reason"]', 'CHG-79 no DNS');
  await Promise.all([e1.waitForNavigation(), e1.click('#submit')]);
  expect(e1.url().includes('submitted='), 'submitted with the box ticked');

  const e2 = await newPage(browser);
  await login(e2, '899700000002');
  await e2.goto(`${CONSOLE_URL}/devices/${DEVICE}`);
  await Promise.all([e2.waitForNavigation(), e2.click('tr.pending a')]);
  expect((await e2.textContent('section.impact')).includes(DEVICE), 'the review warns');
  await audit(e2, 'impact-review');
  await e2.check('#accept-impact');
  await Promise.all([e2.waitForNavigation(), e2.click('button.approve')]);
  expect(e2.url().includes('approved='), 'approved with the box ticked');
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
