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

import { audit, env, expect, finish, launch, login, newPage } from './harness.mjs';

const { CONSOLE_URL, PSC_URL, DEVICE, SHOTS, CANDIDATE } = env('CONSOLE_URL', 'PSC_URL', 'DEVICE', 'SHOTS', 'CANDIDATE');

const browser = await launch();
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
finish();
