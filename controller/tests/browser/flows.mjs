// The device page's flow list in real headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), axe-core on the page. Started by the flows test of
// controller/tests/console_browser.rs, which passes, in the environment:
//   CONSOLE_URL  the console (https://localhost:PORT, the lab CA's certificate)
//   SESSION      a viewer's session id (the console's session cookie)
//   DEVICE       the device whose page is read (with a dns flow and a tcp/8443 flow)
//   SHOTS        where the screenshots go
// Any axe violation of impact serious or critical, any CSP violation in the browser's console,
// or any failed expectation exits non-zero; the report goes to stdout as JSON.

import { audit, env, expect, finish, launch, sessionPage } from './harness.mjs';

const { CONSOLE_URL, SESSION, DEVICE } = env('CONSOLE_URL', 'SESSION', 'DEVICE', 'SHOTS');

const browser = await launch();
try {
  const page = await sessionPage(browser, SESSION);

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
  // It completed (the harness reported it established) though no rule allows it now.
  expect(other.includes('earlier policy'), `tcp/8443 passed under an earlier policy: ${other}`);
  await audit(page, 'device-flows');
} finally {
  await browser.close();
}
finish();
