// The tenant portal in Chromium, driven like a tenant would: open the portal link, create a
// webhook with a filter (tested in the form first), see an event published through NATS
// delivered, see a failed delivery, retry it from the portal and see it succeed, rotate the
// secret, disable and delete the destination, and meet an expired link. The Rust test that runs
// this script (tests/it/portal.rs) publishes, breaks and mends the receiver when asked.
//
// Env: PORTAL_URL (a fresh portal link), EXPIRED_URL (a link whose token has run out),
// NO_TOKEN_URL (the portal without a link), RECEIVER_URL (the webhook URL to enter),
// ALLOWED_SITE_URL and OTHER_SITE_URL (pages framing the portal link, from an origin listed in
// portal.frame_ancestors and from one not listed),
// SCREENSHOTS_DIR (optional: where each main view is saved).

import { ask, open, screenshot, step } from './harness.mjs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

// Clicks Refresh until `locator` shows up: deliveries happen in the background.
async function refreshUntil(page, locator, what) {
  for (let i = 0; i < 60; i++) {
    if (await locator.count()) return;
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.waitForTimeout(500);
  }
  throw new Error(`not seen within 30 s: ${what}`);
}

// Polls `condition` (an async function) until it holds, for at most 20 s.
async function waitUntil(condition, what) {
  for (let i = 0; i < 80; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`not within 20 s: ${what}`);
}

async function main() {
  const { context, page, close, errors } = await open();
  try {
    await scenario(context, page, errors);
  } catch (err) {
    // What the page showed when it failed, beside the other screenshots.
    await screenshot(page, 'failure').catch(() => {});
    throw err;
  }
  await close();
}

async function scenario(context, page, errors) {
  const main = page.locator('main');
  const nav = (name) => page.getByRole('navigation', { name: 'Portal' }).getByRole('link', { name, exact: true });
  const heading = (name) => page.getByRole('heading', { name, exact: true });
  const button = (name) => page.getByRole('button', { name, exact: true });

  step('open the portal link');
  await page.goto(env('PORTAL_URL'));
  await heading('Destinations').waitFor();
  check(!page.url().includes('token'), `the token left the address bar: ${page.url()}`);
  await main.getByText('No destinations yet').waitFor();

  step('create a webhook destination with a filter');
  await page.getByRole('link', { name: 'Add destination' }).click();
  await heading('Add a destination').waitFor();
  await screenshot(page, 'portal-types');
  await page.getByRole('link', { name: /^Webhook/ }).click();
  await heading('New Webhook destination').waitFor();
  await page.getByLabel('Webhook URL').fill(env('RECEIVER_URL'));
  await button('Add header').click();
  await page.getByLabel('Custom Headers: name 1').fill('x-portal-test');
  await page.getByLabel('Custom Headers: value 1').fill('from-the-portal');
  await page.getByLabel('Filter (JSON)').fill('{"data": {"amount": {"$gte": 100}}}');
  await page.getByText('More options: metadata').click();
  await button('Add entry').first().click();
  await page.getByLabel('Delivery metadata: name 1').fill('app');
  await page.getByLabel('Delivery metadata: value 1').fill('shop');

  step('test the filter against two events');
  await page.getByText('Test this filter against an event').click();
  const sample = page.getByLabel('Event (JSON)');
  const result = page.locator('.result');
  await sample.fill('{"topic": "order.paid", "data": {"amount": 50}}');
  await button('Test filter').click();
  await result.getByText('No match').waitFor();
  await sample.fill('{"topic": "order.paid", "data": {"amount": 150}}');
  await button('Test filter').click();
  await result.getByText('Matches').waitFor();
  await sample.fill('{"topic": "order.paid", "data": {"amount": 150}');
  await button('Test filter').click();
  await result.getByText('not valid JSON').waitFor();
  await sample.fill('{"topic": "order.paid", "data": {"amount": 150}}');
  await page.getByLabel('Filter (JSON)').fill('{"data": {"amount": {"$bogus": 1}}}');
  await button('Test filter').click();
  await result.getByText('unknown operator').waitFor();
  await page.getByLabel('Filter (JSON)').fill('{"data": {"amount": {"$gte": 100}}}');
  await button('Test filter').click();
  await result.getByText('Matches').waitFor();
  await screenshot(page, 'portal-new-destination', { fullPage: true });

  step('an invalid URL is refused with the field named');
  const url = page.getByLabel('Webhook URL');
  await url.fill('not a url');
  await button('Create destination').click();
  await page.getByRole('alert').getByText('config.url').waitFor();
  await url.fill(env('RECEIVER_URL'));
  await button('Create destination').click();

  step('the secret is shown once');
  await heading(env('RECEIVER_URL')).waitFor();
  const secret = (await page.locator('#secret-value').textContent()).trim();
  check(secret.startsWith('whsec_'), `a webhook secret is shown: ${secret}`);
  await main.getByText('shown only once').waitFor();
  await ask('secret', { secret });

  step('events published through NATS: the filter lets one through');
  await ask('publish', { id: 'evt-small', topic: 'order.paid', data: { amount: 50 } });
  await ask('publish', { id: 'evt-big', topic: 'order.paid', data: { amount: 150 } });
  await ask('delivered', { event_id: 'evt-big' });
  await nav('Activity').click();
  await heading('Activity').waitFor();
  const bigRow = main.locator('tbody.attempt', { hasText: 'evt-big' });
  await refreshUntil(page, bigRow.getByText('Succeeded'), 'the delivery of evt-big');
  check((await main.locator('tbody.attempt', { hasText: 'evt-small' }).count()) === 0, 'the filtered event was not attempted');
  await bigRow.getByText('Details').click();
  await bigRow.getByText('"amount": 150').waitFor();

  step('a failing endpoint: the attempt shows as failed');
  await ask('fail');
  await ask('publish', { id: 'evt-retry', topic: 'order.paid', data: { amount: 200 } });
  await ask('delivered', { event_id: 'evt-retry' });
  const retryRows = main.locator('tbody.attempt', { hasText: 'evt-retry' });
  await refreshUntil(page, retryRows.getByText('Failed'), 'the failed attempt of evt-retry');
  check((await retryRows.first().getByText('500').count()) === 1, 'the failed attempt shows code 500');
  await page.getByLabel('Status').selectOption('failed');
  await button('Apply').click();
  await page.waitForURL(/status=failed/);
  await waitUntil(async () => (await main.locator('tbody.attempt .badge', { hasText: 'Succeeded' }).count()) === 0
    && (await retryRows.count()) === 1, 'the status filter shows only the failed attempt');
  await screenshot(page, 'portal-activity-failed');

  await nav('Destinations').click();
  await heading('Destinations').waitFor();
  await main.locator('.badge', { hasText: 'Failing' }).waitFor();
  await nav('Activity').click();
  await heading('Activity').waitFor();

  step('retry from the portal once the endpoint is mended');
  await ask('recover');
  await retryRows.first().getByRole('button', { name: 'Retry' }).click();
  await page.getByRole('status').getByText('Retry queued').waitFor();
  await ask('delivered', { event_id: 'evt-retry', count: 2 });
  await page.getByLabel('Status').selectOption('');
  await button('Apply').click();
  await refreshUntil(page, retryRows.getByText('Succeeded'), 'the manual retry of evt-retry');
  const manual = retryRows.filter({ hasText: 'Succeeded' }).first();
  await manual.getByText('Details').click();
  await manual.getByText('manual retry').waitFor();
  await screenshot(page, 'portal-activity');

  step('events view');
  await nav('Events').click();
  await heading('Events').waitFor();
  await main.getByText('evt-retry').waitFor();
  check((await main.getByText('evt-small').count()) === 0, 'an event no destination took is not stored');

  step('the destination page: chart, disable, enable, rotate');
  await nav('Destinations').click();
  await heading('Destinations').waitFor();
  await main.getByRole('link', { name: env('RECEIVER_URL') }).waitFor();
  await screenshot(page, 'portal-destinations');
  await main.getByRole('link', { name: env('RECEIVER_URL') }).click();
  await heading(env('RECEIVER_URL')).waitFor();
  await main.locator('figcaption').getByText('2 succeeded').waitFor();
  await main.locator('figcaption').getByText('1 failed').waitFor();
  check((await page.locator('#secret-value').count()) === 0, 'the secret is not shown a second time');
  await screenshot(page, 'portal-destination', { fullPage: true });
  await button('Disable').click();
  await main.locator('.title-row .badge').getByText('Disabled').waitFor();
  await button('Enable').click();
  await main.locator('.title-row .badge').getByText('Active').waitFor();
  await button('Rotate secret').click();
  await page.getByRole('dialog').getByRole('button', { name: 'Rotate secret' }).click();
  await page.locator('#secret-value').waitFor();
  const rotated = (await page.locator('#secret-value').textContent()).trim();
  check(rotated.startsWith('whsec_') && rotated !== secret, 'rotation shows a new secret');

  step('edit: the filter and header survive, the topic list changes');
  await page.getByRole('link', { name: 'Edit', exact: true }).click();
  await heading('Edit Webhook destination').waitFor();
  check((await page.getByLabel('Custom Headers: value 1').inputValue()) === 'from-the-portal', 'the header is in the form');
  check((await page.getByLabel('Filter (JSON)').inputValue()).includes('$gte'), 'the filter is in the form');
  check((await page.getByLabel('Delivery metadata: value 1').inputValue()) === 'shop', 'the delivery metadata is in the form');
  await button('Save changes').click();
  await page.getByRole('status').getByText('Changes saved').waitFor();

  step('a RabbitMQ destination from its generated form, for one topic');
  const { exchange } = await ask('exchange');
  await nav('Destinations').click();
  await heading('Destinations').waitFor();
  await page.getByRole('link', { name: 'Add destination' }).click();
  await page.getByRole('link', { name: /^RabbitMQ/ }).click();
  await heading('New RabbitMQ destination').waitFor();
  await page.getByLabel('All topics').uncheck();
  await page.getByLabel('order.shipped').check();
  await page.getByLabel('Server URL').fill('127.0.0.1:5672');
  await page.getByLabel('Exchange').fill(exchange);
  check(await page.getByLabel('TLS').isChecked(), 'the TLS checkbox starts at its default, on');
  await page.getByLabel('TLS').uncheck();
  await page.getByLabel('Username').fill('guest');
  check((await page.getByLabel('Password').getAttribute('type')) === 'password', 'a sensitive field is a password input');
  await page.getByLabel('Password').fill('guest');
  await button('Create destination').click();
  const mqTarget = `${exchange} -> 127.0.0.1:5672`;
  await heading(mqTarget).waitFor();
  await ask('publish', { id: 'evt-mq', topic: 'order.shipped', data: { amount: 10 } });
  await ask('queued', { data: { amount: 10 } });
  await nav('Activity').click();
  await heading('Activity').waitFor();
  await page.getByLabel('Destination').selectOption({ label: mqTarget });
  await button('Apply').click();
  await page.waitForURL(/destination_id=/);
  await refreshUntil(page, main.locator('tbody.attempt', { hasText: 'evt-mq' }).getByText('Succeeded'), 'the RabbitMQ delivery of evt-mq');

  step('pages of activity');
  await ask('publish-many', { count: 20 });
  await nav('Activity').click();
  await page.waitForURL(/#\/activity$/);
  const pageRows = main.locator('tbody.attempt', { hasText: 'evt-page-' });
  for (let i = 0; (await pageRows.count()) < 20; i++) {
    check(i < 60, 'the 20 new attempts are listed within 30 s');
    await button('Refresh').click();
    await page.waitForTimeout(500);
  }
  check((await main.locator('tbody.attempt').count()) === 20, 'a page holds 20 attempts');
  await page.getByRole('link', { name: 'Older →' }).click();
  await page.waitForURL(/next=/);
  await main.locator('tbody.attempt', { hasText: 'evt-big' }).waitFor();
  check((await pageRows.count()) === 0, 'the second page holds the older attempts');
  await page.getByRole('link', { name: '← Newer' }).click();
  await page.waitForURL(/prev=/);
  await main.locator('tbody.attempt', { hasText: 'evt-page-' }).first().waitFor();

  step('phone width');
  await page.setViewportSize({ width: 390, height: 844 });
  await nav('Activity').click();
  await heading('Activity').waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the activity view fits a phone's width (overflows by ${overflow}px)`);
  await screenshot(page, 'portal-phone');
  await page.setViewportSize({ width: 1280, height: 800 });

  step('delete with confirmation');
  await nav('Destinations').click();
  await heading('Destinations').waitFor();
  await main.getByRole('link', { name: env('RECEIVER_URL') }).click();
  await button('Delete').click();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click();
  await heading(env('RECEIVER_URL')).waitFor();
  await button('Delete').click();
  await page.getByRole('dialog').getByRole('button', { name: 'Delete destination' }).click();
  await heading('Destinations').waitFor();
  await waitUntil(async () => (await main.getByRole('link', { name: env('RECEIVER_URL') }).count()) === 0, 'the webhook is gone from the list');
  await ask('deleted');

  step('keyboard: Tab reaches the skip link, then the navigation');
  await page.reload();
  await heading('Destinations').waitFor();
  const focused = () => page.evaluate(() => document.activeElement && document.activeElement.textContent.trim());
  await page.keyboard.press('Tab');
  check((await focused()) === 'Skip to content', `the first Tab stop is the skip link (${await focused()})`);
  await page.keyboard.press('Tab');
  check((await focused()) === 'Destinations', `the next is the navigation (${await focused()})`);

  step('embedded by a site in portal.frame_ancestors, refused by another');
  const allowedSite = await context.newPage();
  await allowedSite.goto(env('ALLOWED_SITE_URL'));
  await allowedSite.frameLocator('iframe').getByRole('heading', { name: 'Destinations', exact: true }).waitFor();
  const otherSite = await context.newPage();
  await otherSite.goto(env('OTHER_SITE_URL'));
  await otherSite.waitForTimeout(1500);
  check((await otherSite.frameLocator('iframe').getByRole('heading', { name: 'Destinations', exact: true }).count()) === 0,
    'a site not in portal.frame_ancestors cannot show the portal');
  check(errors.some((e) => String(e).includes('frame-ancestors')), `chromium refused the frame by its CSP: ${JSON.stringify(errors)}`);

  step('an expired link, and no link');
  const expiredPage = await context.newPage();
  await expiredPage.goto(env('EXPIRED_URL'));
  await expiredPage.getByRole('heading', { name: 'This portal link has expired' }).waitFor();
  check((await expiredPage.getByRole('navigation', { name: 'Portal' }).count()) === 0, 'no navigation on the expired page');
  await screenshot(expiredPage, 'portal-expired');
  // A link that runs out while its page is open: the page turns into the expired page by itself.
  const { url: shortLink } = await ask('short-link');
  const shortLived = await context.newPage();
  await shortLived.goto(shortLink);
  await shortLived.getByRole('heading', { name: 'Destinations', exact: true }).waitFor();
  await shortLived.getByRole('heading', { name: 'This portal link has expired' }).waitFor();
  // A link in Outpost's shape, the token in the query: it works, and leaves the address bar.
  const outpostShaped = await context.newPage();
  await outpostShaped.goto(env('PORTAL_URL').replace('#', '?'));
  await outpostShaped.getByRole('heading', { name: 'Destinations', exact: true }).waitFor();
  check(!outpostShaped.url().includes('token'), `the token left the address bar: ${outpostShaped.url()}`);
  const bare = await context.newPage();
  await bare.goto(env('NO_TOKEN_URL'));
  await bare.getByRole('heading', { name: 'Open the portal from its link' }).waitFor();

  // Chromium logs every 4xx answer as an error ("Failed to load resource"); the form's refused
  // inputs cause some on purpose. Anything else (a script error, a CSP violation) fails.
  // The refused frame is logged too.
  const unexpected = errors.filter((e) => !String(e).includes('Failed to load resource') && !String(e).includes('frame-ancestors'));
  check(unexpected.length === 0, `the pages logged no errors or CSP violations: ${JSON.stringify(unexpected)}`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
