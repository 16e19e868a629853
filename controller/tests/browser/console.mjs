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

import { audit, env, expect, finish, launch, login, newPage } from './harness.mjs';

const { CONSOLE_URL, PSC_URL, DEVICE, SHOTS } = env('CONSOLE_URL', 'PSC_URL', 'DEVICE', 'SHOTS');

const ENGINEER_1 = '899700000001';
const ENGINEER_2 = '899700000002';
const VIEWER = '899700000003';

const browser = await launch();
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
finish();
