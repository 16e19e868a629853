// The console in real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core, which cannot download browsers here), with axe-core run on every page.
// Started by controller/tests/console_browser.rs, which passes, in the environment:
//   CONSOLE_URL  the console (https://localhost:PORT, the lab CA's certificate)
//   PSC_URL      the mock Pro Santé Connect's base (POST /mock/next/ID picks the next user)
//   DEVICE       the device the engineers work on
//   SHOTS        where the screenshots go (docs/images)
// The story: engineer 1 logs in through PSC, opens the device, proposes a profile from its
// baseline, simulates it and submits it; engineer 2 reviews and approves it; a viewer sees no write button
// and a POST they forge is refused (403). Any axe violation of impact serious or critical, any
// CSP violation in the browser's console, or any failed expectation exits non-zero.

import { chromium } from 'playwright-core';
import axe from 'axe-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const { CONSOLE_URL, PSC_URL, DEVICE, SHOTS } = process.env;
for (const [k, v] of Object.entries({ CONSOLE_URL, PSC_URL, DEVICE, SHOTS })) {
  if (!v) throw new Error(`${k} is not set`);
}
mkdirSync(SHOTS, { recursive: true });

const ENGINEER_1 = '899700000001';
const ENGINEER_2 = '899700000002';
const VIEWER = '899700000003';

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

async function newPage(browser) {
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
  return page;
}

async function login(page, who) {
  const r = await fetch(`${PSC_URL}/mock/next/${who}`, { method: 'POST' });
  expect(r.status === 204, `the mock PSC knows ${who}`);
  await page.goto(`${CONSOLE_URL}/login`);
  await page.click('a[href="/login/oidc"]');
  // Provider, callback, then our page's refresh on to the inventory.
  await page.waitForURL(`${CONSOLE_URL}/`);
  expect((await page.textContent('.who')).includes(who), `logged in as ${who}`);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  // Engineer 1: log in, propose, simulate, submit.
  const e1 = await newPage(browser);
  await e1.goto(`${CONSOLE_URL}/login`);
  await audit(e1, 'login');
  await login(e1, ENGINEER_1);
  await audit(e1, 'inventory');
  await e1.goto(`${CONSOLE_URL}/devices/${DEVICE}`);
  await audit(e1, 'device');
  await Promise.all([e1.waitForNavigation(), e1.click('#propose')]);
  expect((await e1.content()).includes('Rules against the current profile'), 'a rule diff');
  expect((await e1.locator('ul.diff li.added').count()) > 0, 'rules added');
  await audit(e1, 'proposal');
  await Promise.all([e1.waitForNavigation(), e1.click('#simulate')]);
  expect(
    (await e1.textContent('main')).includes('0 would be blocked'),
    'the simulation blocks nothing seen',
  );
  await audit(e1, 'simulation');
  await e1.fill('input[name="reason"]', 'CHG-77 pump from its baseline');
  await Promise.all([e1.waitForNavigation(), e1.click('#submit')]);
  expect(e1.url().includes('submitted='), 'submitted');
  expect((await e1.textContent('main')).includes('awaiting approval'), 'pending');
  await audit(e1, 'submitted');
  await Promise.all([e1.waitForNavigation(), e1.click('tr.pending a')]);
  expect((await e1.textContent('main')).includes('You proposed this change'), 'own change');
  expect((await e1.locator('button.approve').count()) === 0, 'no approve button for the proposer');

  // Engineer 2: approve.
  const e2 = await newPage(browser);
  await login(e2, ENGINEER_2);
  await e2.goto(`${CONSOLE_URL}/devices/${DEVICE}`);
  await Promise.all([e2.waitForNavigation(), e2.click('tr.pending a')]);
  expect((await e2.locator('ul.diff li.added').count()) > 0, 'the review shows the diff');
  await audit(e2, 'review');
  await Promise.all([e2.waitForNavigation(), e2.click('button.approve')]);
  expect(e2.url().includes('approved='), 'approved and written');
  expect((await e2.textContent('main')).includes(`approved by ${ENGINEER_2}`), 'approved');
  await audit(e2, 'approved');

  // A viewer: no write button; a forged POST is refused.
  const v = await newPage(browser);
  await login(v, VIEWER);
  await v.goto(`${CONSOLE_URL}/devices/${DEVICE}`);
  expect((await v.locator('#propose').count()) === 0, 'no propose button for a viewer');
  expect((await v.locator('form[action$="/mode"]').count()) === 0, 'no mode form for a viewer');
  const forged = await v.evaluate(async (device) => {
    const csrf = document.querySelector('input[name="csrf"]').value;
    const body = new URLSearchParams({ csrf, mode: 'quarantine', reason: 'forged' });
    const r = await fetch(`/devices/${device}/mode`, { method: 'POST', body });
    return r.status;
  }, DEVICE);
  expect(forged === 403, `a viewer's forged POST is 403 (got ${forged})`);
  await audit(v, 'viewer');
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
