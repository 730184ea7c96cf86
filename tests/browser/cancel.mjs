#!/usr/bin/env node
// Browser test of the task board's cancel action (#23), driven by playwright-core
// with the system Chromium:
//
//   node tests/browser/cancel.mjs <adminBaseUrl> <adminKey> <viewerKey> <queuedTaskId>
//
// A viewer key sees no Cancel button; the admin key does, and clicking it (after
// the confirm dialog) sends DELETE /bull/api/tasks/<id> with the key in x-lb-auth,
// no cookie, and the task shows as cancelled. Exits 0 when every check passes.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [adminArg, adminKey, viewerKey, id] = process.argv.slice(2);
if (!adminArg || !adminKey || !viewerKey || !id) {
  console.error('usage: node tests/browser/cancel.mjs <adminBaseUrl> <adminKey> <viewerKey> <taskId>');
  process.exit(2);
}
const admin = adminArg.replace(/\/+$/, '');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const KEY_NAME = 'andera-lb.key';

function fail(msg) {
  console.error(`FAIL ${msg}`);
  process.exit(1);
}

async function withKey(page, key) {
  await page.goto(admin + '/bull#' + encodeURIComponent(id));
  await page.evaluate(([k, v]) => sessionStorage.setItem(k, v), [KEY_NAME, key]);
  await page.reload();
  await page.waitForFunction((i) => (document.querySelector('#detail-id') || {}).textContent === i, id, { timeout: 15000 })
    .catch(() => fail(`the detail of ${id} did not open`));
  await page.waitForFunction(() => document.body.dataset.role, null, { timeout: 15000 })
    .catch(() => fail('the key role was never shown'));
}

async function main() {
  const { chromium } = await import('playwright-core');
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'andera-lb-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    const deletes = [];
    page.on('request', (r) => {
      if (r.method() === 'DELETE') deletes.push({ url: r.url(), auth: r.headers()['x-lb-auth'], cookie: r.headers()['cookie'] });
    });
    page.on('dialog', (d) => d.accept());

    await withKey(page, viewerKey);
    // The list refreshes every 2 s: give the detail one more render.
    await page.waitForTimeout(500);
    if ((await page.locator('#detail-cancel').count()) !== 0) fail('a viewer key sees the Cancel button');
    console.log('  ok  a viewer key sees no Cancel button');

    await withKey(page, adminKey);
    await page.locator('#detail-cancel').waitFor({ state: 'visible', timeout: 15000 })
      .catch(() => fail('the admin key sees no Cancel button on a queued task'));
    await page.click('#detail-cancel');
    await page.waitForFunction(() => /cancelled/.test((document.querySelector('#task-detail') || {}).innerText || ''), null, { timeout: 15000 })
      .catch(() => fail('the task never showed as cancelled'));
    if (deletes.length !== 1) fail(`expected one DELETE, saw ${deletes.length}`);
    const d = deletes[0];
    if (!d.url.endsWith('/bull/api/tasks/' + encodeURIComponent(id))) fail(`DELETE went to ${d.url}`);
    if (d.auth !== adminKey) fail('the DELETE did not carry the key in x-lb-auth');
    if (d.cookie) fail('the DELETE carried a cookie');
    console.log('  ok  the admin key cancels through DELETE /bull/api/tasks/<id> (x-lb-auth, no cookie)');
  } finally {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
