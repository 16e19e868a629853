// The inventory import in real headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core), axe-core on every page. Started by controller/tests/console_browser.rs
// (`an_engineer_imports_a_csv_in_headless_chromium`), which passes, in the environment:
//   CONSOLE_URL  the console (https://localhost:PORT, the lab CA's certificate)
//   PSC_URL      the mock Pro Santé Connect's base (POST /mock/next/ID picks the next user)
//   DEVICE       a device the CSV changes and whose page shows its charts
//   SHOTS        where the screenshots go
// The story: an engineer logs in, uploads a CMMS CSV export with its column mapping, sees the
// diff (one new device, one changed, one refused), confirms it with a reason, then opens the
// device and sees where its fields came from and its charts. Any axe violation of impact
// serious or critical, any CSP violation, or any failed expectation exits non-zero.

import { audit, env, expect, finish, launch, login, newPage } from './harness.mjs';

const { CONSOLE_URL, PSC_URL, DEVICE, SHOTS } = env('CONSOLE_URL', 'PSC_URL', 'DEVICE', 'SHOTS');

const ENGINEER = '899700000001';

const CSV = [
  'N° inventaire;Désignation;Type;Fabricant;Modèle;Service;Adresse MAC;IP',
  `BIO-00000;${DEVICE};Infusion pump;B. Braun;Space;ICU 3;02:00:00:00:00:00;`,
  'BIO-09001;pump-new-1;Infusion pump;B. Braun;Space;ward 3;00-1A-2B-3C-4D-01;192.0.2.200',
  'BIO-09002;pump-bad;Infusion pump;B. Braun;Space;ward 3;00-1A-2B-3C-4D;192.0.2.201',
  '',
].join('\r\n');
const MAPPING = [
  'mac = Adresse MAC',
  'name = Désignation',
  'type = Type',
  'manufacturer = Fabricant',
  'model = Modèle',
  'ward = Service',
  'asset_id = N° inventaire',
  'address = IP',
].join('\n');

const browser = await launch();
try {
  const page = await newPage(browser);
  await login(page, ENGINEER);

  await Promise.all([page.waitForNavigation(), page.click('header a[href="/import"]')]);
  await page.setInputFiles('#file', {
    name: 'gmao-export.csv', mimeType: 'text/csv', buffer: Buffer.from(CSV, 'utf8'),
  });
  await page.fill('#mapping', MAPPING);
  await audit(page, 'import');
  await Promise.all([page.waitForNavigation(), page.click('#preview')]);
  expect((await page.locator('tr.new').count()) === 1, 'one new device');
  expect((await page.locator('tr.changed').count()) >= 1, 'changed fields');
  expect((await page.locator('tr.refused').count()) === 1, 'one refused line');
  expect((await page.textContent('#changed')).includes('ICU 3'), 'the new ward');
  await audit(page, 'import-diff');
  await page.fill('#reason', 'CHG-7 ICU inventory');
  await Promise.all([page.waitForNavigation(), page.click('#confirm')]);
  expect((await page.textContent('#import-done')).includes('gmao-export.csv'), 'written');

  await page.goto(`${CONSOLE_URL}/devices/${DEVICE}`);
  expect((await page.textContent('#provenance')).includes('gmao-export.csv'), 'the source file');
  expect((await page.locator('#traffic-chart rect.bytes').count()) === 7, 'seven days of bars');
  expect((await page.locator('#baseline-chart rect').count()) >= 1, 'the baseline periods');
  await page.locator('#traffic-chart').scrollIntoViewIfNeeded();
  await audit(page, 'device-charts');
} finally {
  await browser.close();
}
finish();
