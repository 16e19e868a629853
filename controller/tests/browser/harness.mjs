// What every browser scenario shares (the scenarios are started by
// controller/tests/console_browser.rs): its environment, the report it prints, axe-core on a
// page with the page's screenshot, pages that record CSP violations, the mock Pro Santé
// Connect login, and the exit. Chromium is Debian's /usr/bin/chromium driven by
// playwright-core, which cannot download browsers here.

import { chromium } from 'playwright-core';
import axe from 'axe-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/** The environment variables `names`, each required; `SHOTS` is created. */
export function env(...names) {
  const out = {};
  for (const k of names) {
    const v = process.env[k];
    if (!v) throw new Error(`${k} is not set`);
    out[k] = v;
  }
  if (out.SHOTS) mkdirSync(out.SHOTS, { recursive: true });
  return out;
}

/** Pages audited, serious or critical axe violations, CSP violations: printed by `finish`. */
export const report = { pages: [], axe: [], csp: [] };

export function expect(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
}

/** axe-core on the page as it is (serious and critical violations are failures), then its
 * screenshot as `$SHOTS/console-NAME.png`. */
export async function audit(page, name) {
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
  await page.screenshot({ path: join(process.env.SHOTS, `console-${name}.png`), fullPage: true });
}

export function launch() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
}

/** A browser context as a person's: English, a laptop's window, the lab CA's certificate
 * (which this browser does not know) accepted. */
export function newContext(browser) {
  return browser.newContext({
    ignoreHTTPSErrors: true,
    locale: 'en-GB',
    viewport: { width: 1280, height: 900 },
  });
}

/** A page of `context` (a new context if none) whose CSP violations go to the report. */
export async function newPage(browser, context) {
  const page = await (context ?? (await newContext(browser))).newPage();
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) report.csp.push(m.text());
  });
  return page;
}

/** A page logged in with an existing session (the console's session cookie `session`). */
export async function sessionPage(browser, session) {
  const { CONSOLE_URL } = env('CONSOLE_URL');
  const context = await newContext(browser);
  await context.addCookies([
    {
      name: '__Host-wardgate-session',
      value: session,
      url: `${CONSOLE_URL}/`,
      secure: true,
      httpOnly: true,
      sameSite: 'Strict',
    },
  ]);
  return newPage(browser, context);
}

/** Logs `who` in through the mock Pro Santé Connect (POST /mock/next/ID picks the next user);
 * ends on the inventory. */
export async function login(page, who) {
  const { CONSOLE_URL, PSC_URL } = env('CONSOLE_URL', 'PSC_URL');
  const r = await fetch(`${PSC_URL}/mock/next/${who}`, { method: 'POST' });
  expect(r.status === 204, `the mock PSC knows ${who}`);
  await page.goto(`${CONSOLE_URL}/login`);
  await page.click('a[href="/login/oidc"]');
  // Provider, callback, then our page's refresh on to the inventory.
  await page.waitForURL(`${CONSOLE_URL}/`);
  expect((await page.textContent('.who')).includes(who), `logged in as ${who}`);
}

/** Prints the report (JSON, stdout); exits non-zero on any axe or CSP violation. */
export function finish() {
  console.log(JSON.stringify(report, null, 1));
  if (report.axe.length > 0) {
    console.error(`axe: ${report.axe.length} serious or critical violations`);
    process.exit(1);
  }
  if (report.csp.length > 0) {
    console.error(`CSP violations: ${report.csp.join('\n')}`);
    process.exit(1);
  }
}
