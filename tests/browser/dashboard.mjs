#!/usr/bin/env node
// Browser test of the andera-lb admin pages (/dashboard and /bull), driven by
// playwright-core with the system Chromium (never downloads a browser).
//
//   EXPECT_WORKERS=http://127.0.0.1:3101,http://127.0.0.1:3102 EXPECT_TASK=<task id> \
//     node tests/browser/dashboard.mjs <adminBaseUrl> <lbKey> <screenshotPath>
//
// Optional env: CHROMIUM (default /usr/bin/chromium), XSS_TAG (the hostile tag value
// one Worker reports; default the one below), SKIP_XSS=1 (no Worker carries it).
// Exits 0 when every check passes, 1 with a clear message otherwise. Besides
// <screenshotPath> it writes the task board next to it as <name>-bull.png.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [adminArg, key, shotPath] = process.argv.slice(2);
if (!adminArg || !key || !shotPath) {
  console.error('usage: node tests/browser/dashboard.mjs <adminBaseUrl> <lbKey> <screenshotPath>\n  env: EXPECT_WORKERS=url1,url2 EXPECT_TASK=<task id>');
  process.exit(2);
}
const admin = adminArg.replace(/\/+$/, '');
const origin = new URL(admin).origin;
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const expectWorkers = (process.env.EXPECT_WORKERS || '').split(',').map((s) => s.trim()).filter(Boolean);
const expectTask = (process.env.EXPECT_TASK || '').trim();
const XSS = process.env.XSS_TAG || '<img src=x onerror=alert(1)>';
const checkXss = process.env.SKIP_XSS !== '1';
const KEY_NAME = 'andera-lb.key';

const t0 = Date.now();
let passed = 0;
function ok(msg) {
  passed += 1;
  console.log(`  ok  ${msg}  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
class Fail extends Error {}
function fail(msg) {
  throw new Fail(msg);
}
function need(cond, msg) {
  if (!cond) fail(msg);
}

async function loadPlaywright() {
  try {
    return await import('playwright-core');
  } catch (e) {
    fail(`playwright-core is not installed (${e.message}). Install it with: npm ci --prefix tests/browser`);
  }
}

async function main() {
  if (expectWorkers.length < 2) fail('EXPECT_WORKERS must list at least 2 Worker URLs (comma-separated)');
  if (!expectTask) fail('EXPECT_TASK must name a task id');
  if (!fs.existsSync(chromiumPath)) fail(`no Chromium at ${chromiumPath}. Install it with: apt-get install -y chromium`);

  // (a) the data routes refuse a request without the key
  for (const route of ['/dashboard/api/workers', '/dashboard/api/overview', '/bull/api/tasks']) {
    const r = await fetch(admin + route);
    need(r.status === 401, `GET ${route} without a key answered ${r.status}, expected 401`);
    const w = await fetch(admin + route, { headers: { 'x-lb-auth': key + '-wrong' } });
    need(w.status === 401, `GET ${route} with a wrong key answered ${w.status}, expected 401`);
  }
  ok('(a) the data routes answer 401 without a key and with a wrong key');
  {
    const r = await fetch(admin + '/dashboard/api/workers', { headers: { 'x-lb-auth': key } });
    need(r.status === 200, `GET /dashboard/api/workers with the key answered ${r.status}`);
    const list = await r.json();
    need(Array.isArray(list), '/dashboard/api/workers did not answer a JSON array');
    const foreign = Buffer.from('http://127.0.0.1:9/').toString('base64');
    const l = await fetch(`${admin}/dashboard/api/workers/${foreign}/logs`, { headers: { 'x-lb-auth': key } });
    need(l.status === 404, `the logs route answered ${l.status} for a URL that is not a Worker (expected 404: no request may leave with the key)`);
    ok('the logs route refuses a URL that is not a current Worker (404)');
  }

  const { chromium } = await loadPlaywright();
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'andera-lb-chromium-'));
  const problems = []; // console errors, page errors, dialogs, foreign requests
  let allow401 = false;
  const apiHits = [];
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: chromiumPath,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1600, height: 1000 },
      deviceScaleFactor: 1,
      timeout: 30000,
    });
  } catch (e) {
    fail(`Chromium did not start (${e.message.split('\n')[0]}). Install it with: apt-get install -y chromium`);
  }

  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(15000);
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      const text = m.text();
      if (allow401 && /\b401\b/.test(text)) return; // expected while checking a rejected key
      problems.push(`console error: ${text} @ ${m.location().url || ''}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('dialog', async (d) => {
      problems.push(`a dialog fired (${d.type()}: ${d.message()}) — a string was interpreted as markup`);
      await d.dismiss().catch(() => {});
    });
    context.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(origin + '/') && !u.startsWith('data:') && u !== 'about:blank') problems.push(`request outside the admin port: ${u}`);
      if (u.includes('/api/')) apiHits.push({ at: Date.now(), url: u, auth: r.headers()['x-lb-auth'] });
    });
    const noProblems = (where) => need(problems.length === 0, `${where}:\n    ${problems.join('\n    ')}`);

    // (b) the page asks for the key once, in a form, and accepts it
    const resp = await page.goto(admin + '/dashboard');
    need(resp && resp.status() === 200, `GET /dashboard answered ${resp && resp.status()}`);
    await page.locator('#key-form').waitFor({ state: 'visible' });
    need(await page.locator('#key-input').getAttribute('type') === 'password', 'the key input is not a password field');
    need(apiHits.length === 0, 'the page called the API before it had a key');
    await page.fill('#key-input', key);
    await page.click('#key-submit');
    await page.locator('#key-gate').waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.querySelectorAll('#workers-table tbody.worker').length > 0, null, { timeout: 15000 });
    need((await page.evaluate((k) => sessionStorage.getItem(k), KEY_NAME)) === key, 'the key is not kept in sessionStorage');
    need(apiHits.length > 0 && apiHits.every((h) => h.auth === key), 'an API request went out without the x-lb-auth header');
    ok('(b) the key form shows, accepts the key, keeps it in sessionStorage and sends it as x-lb-auth');

    // (c) the Worker rows appear
    await page.waitForFunction((urls) => {
      const t = document.querySelector('#workers-table');
      return t && urls.every((u) => t.innerText.includes(u));
    }, expectWorkers, { timeout: 15000 }).catch(async () => {
      const text = await page.locator('#workers-table').innerText().catch(() => '');
      fail(`Worker URLs ${expectWorkers.join(', ')} not all visible in the Workers table; it shows:\n${text.slice(0, 1500)}`);
    });
    const rows = await page.locator('#workers-table tbody.worker').count();
    need(rows >= 2, `only ${rows} Worker row(s)`);
    ok(`(c) ${rows} Worker rows, including ${expectWorkers.join(' and ')}`);

    // (d) the task shows in the recent tasks and opens on the board with its timeline
    await page.waitForFunction((id) => document.querySelector('#recent-tasks').innerText.includes(id), expectTask, { timeout: 10000 }).catch(async () => {
      const text = await page.locator('#recent-tasks').innerText().catch(() => '');
      fail(`task ${expectTask} is not in the recent tasks of the dashboard; it shows:\n${text.slice(0, 1200)}`);
    });
    const link = page.locator('#recent-tasks a.task-link', { hasText: expectTask }).first();
    const href = await link.getAttribute('href');
    need(href === '/bull#' + encodeURIComponent(expectTask), `the recent task links to ${href}, expected /bull#${expectTask}`);
    ok(`(d) task ${expectTask} is in the recent tasks, linking to ${href}`);
    await link.click();
    await page.waitForURL((u) => u.pathname === '/bull');
    need(!(await page.locator('#key-gate').isVisible().catch(() => false)), 'the task board asked for the key again (it must be kept for the tab)');
    await page.waitForFunction((id) => document.querySelector('#task-table').innerText.includes(id), expectTask, { timeout: 15000 }).catch(() => fail(`task ${expectTask} is not in the task table of /bull`));
    await page.waitForFunction((id) => {
      const d = document.querySelector('#task-detail #detail-id');
      return d && d.textContent === id && document.querySelectorAll('#timeline li').length > 0;
    }, expectTask).catch(() => fail(`the timeline of ${expectTask} did not open on /bull#${expectTask}`));
    const events = await page.$$eval('#timeline li', (lis) => lis.map((li) => li.dataset.event));
    need(events[0] === 'received', `the timeline starts with ${events[0]}, expected received`);
    const chips = await page.locator('#chips .chip').count();
    need(chips >= 6, `only ${chips} state chip(s) on /bull`);
    ok(`(d) on /bull the task is listed and its timeline opens: ${events.join(' → ')}`);
    // a state chip filters the list
    await page.click('#chips .chip[data-state="completed"]');
    await page.waitForFunction(() => {
      const states = [...document.querySelectorAll('#task-body tr .pill')].map((p) => p.textContent.trim());
      return states.length > 0 && states.every((s) => s === 'completed');
    }, null, { timeout: 10000 }).catch(() => fail('the "completed" chip did not filter the task list to completed tasks'));
    need(new URL(page.url()).searchParams.get('state') === 'completed', 'the state filter is not kept in the URL');
    ok('the "completed" chip filters the task list');
    await page.click('#chips .chip[data-state=""]');
    if (checkXss) {
      const imgs = await page.evaluate(() => document.querySelectorAll('img[src="x"], img[src=x]').length);
      need(imgs === 0, 'an <img src=x> element exists on /bull');
    }
    await page.waitForTimeout(600);
    noProblems('problems on the task board');
    const bullShot = shotPath.replace(/(\.png)?$/i, '-bull.png');
    fs.mkdirSync(path.dirname(path.resolve(bullShot)), { recursive: true });
    await page.screenshot({ path: bullShot, fullPage: true });
    ok(`screenshot of /bull written to ${bullShot}`);

    // back on the dashboard, in the same tab: no second key prompt
    await page.goto(admin + '/dashboard');
    await page.waitForFunction(() => document.querySelectorAll('#workers-table tbody.worker').length > 0);
    need(!(await page.locator('#key-gate').isVisible().catch(() => false)), 'the dashboard asked for the key again within the same tab');

    // per-Worker details: contract and the Worker's own log, fetched on expand
    const first = page.locator('#workers-table tbody.worker', { hasText: expectWorkers[0] }).first();
    await first.locator('button.tog').click();
    const details = first.locator('tr.details');
    await details.waitFor({ state: 'visible' });
    await page.waitForFunction((u) => {
      const tb = [...document.querySelectorAll('#workers-table tbody.worker')].find((b) => b.dataset.url === u);
      return tb && tb.querySelectorAll('.contract-box td.fn').length > 0;
    }, expectWorkers[0]).catch(() => fail(`the expanded Worker ${expectWorkers[0]} shows no function of its contract`));
    await page.waitForFunction((u) => {
      const tb = [...document.querySelectorAll('#workers-table tbody.worker')].find((b) => b.dataset.url === u);
      const meta = tb && tb.querySelector('.wlogs-meta');
      return meta && /fetched/.test(meta.textContent);
    }, expectWorkers[0]).catch(() => fail(`the Worker log of ${expectWorkers[0]} was not fetched after expanding it`));
    const logMeta = await details.locator('.wlogs-meta').innerText();
    need(!/not a current Worker|failed|answered/.test(logMeta), `the Worker log could not be fetched: ${logMeta}`);
    const fnCount = await details.locator('.contract-box td.fn').count();
    ok(`Worker details open: ${fnCount} function(s) in the contract; Worker log ${logMeta.trim()}`);
    noProblems('problems while loading the dashboard');

    // (e) a hostile tag value is shown as text, never as markup
    if (checkXss) {
      await page.waitForFunction((x) => document.querySelector('#workers-table').innerText.includes(x), XSS, { timeout: 10000 }).catch(() => fail(`the tag value ${XSS} is not visible as text in the Workers table`));
      const imgs = await page.evaluate(() => document.querySelectorAll('img[src="x"], img[src=x]').length);
      need(imgs === 0, `${imgs} <img src=x> element(s) in the DOM: a Worker string was inserted as HTML`);
      await page.waitForTimeout(300);
      noProblems('after rendering the hostile tag');
      ok('(e) the tag value <img src=x onerror=alert(1)> shows as literal text; no img[src=x], no dialog');
      // The Cluster panel (this load balancer has no cluster.redis: it says so).
      await page.waitForFunction(() => (document.querySelector('#cluster') || {}).innerText?.includes('cluster.redis unset'), null, { timeout: 10000 }).catch(() => fail('the Cluster panel does not say the cluster is off'));
      ok('(e) the Cluster panel says this instance counts slots on its own');
    }

    // refresh every 2 s, and Pause stops it
    const overviewHits = () => apiHits.filter((h) => h.url.includes('/dashboard/api/overview')).length;
    const before = overviewHits();
    await page.waitForTimeout(4500);
    const during = overviewHits() - before;
    need(during >= 2, `the page refreshed ${during} time(s) in 4.5 s (expected every 2 s)`);
    await page.click('#pause');
    need((await page.locator('#pause').innerText()).trim() === 'Resume', 'the Pause button did not turn into Resume');
    await page.waitForTimeout(300);
    const paused = overviewHits();
    await page.waitForTimeout(3000);
    need(overviewHits() === paused, 'the page kept refreshing while paused');
    await page.click('#pause');
    await page.waitForFunction(() => document.querySelector('#pause').textContent.trim() === 'Pause');
    await page.waitForTimeout(2500);
    need(overviewHits() > paused, 'the page did not refresh again after Resume');
    ok(`refreshes every 2 s (${during} in 4.5 s); Pause stops it, Resume restarts it`);

    // (f) a wrong key in sessionStorage leads back to the form, saying it was rejected
    allow401 = true;
    await page.evaluate((k) => sessionStorage.setItem(k, 'definitely-not-the-key'), KEY_NAME);
    await page.locator('#key-form').waitFor({ state: 'visible', timeout: 10000 }).catch(() => fail('a rejected key did not bring the key form back'));
    const msg = await page.locator('#key-msg').innerText();
    need(/rejected/i.test(msg), `the key form does not say the key was rejected (it says "${msg}")`);
    need((await page.evaluate((k) => sessionStorage.getItem(k), KEY_NAME)) === null, 'the rejected key was not cleared from sessionStorage');
    await page.fill('#key-input', key);
    await page.click('#key-submit');
    await page.locator('#key-gate').waitFor({ state: 'hidden' });
    await page.waitForFunction(() => document.querySelectorAll('#workers-table tbody.worker').length > 0);
    await page.waitForTimeout(2500);
    allow401 = false;
    ok(`(f) a wrong key brings the form back ("${msg.trim()}"), cleared from the tab; the right key unlocks again`);

    // (g) full-page screenshot, under load
    await page.waitForFunction(() => !document.querySelector('#banner') || document.querySelector('#banner').hidden, null, { timeout: 8000 }).catch(() => {});
    fs.mkdirSync(path.dirname(path.resolve(shotPath)), { recursive: true });
    await page.screenshot({ path: shotPath, fullPage: true });
    ok(`(g) full-page screenshot written to ${shotPath}`);
    noProblems('problems during the run');
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

const guard = setTimeout(() => {
  console.error('FAIL: the browser test took longer than 150 s');
  process.exit(1);
}, 150000);
guard.unref();

main().then(
  () => {
    console.log(`browser: ${passed} passed, 0 failed`);
    process.exit(0);
  },
  (e) => {
    console.error(`FAIL: ${e instanceof Fail ? e.message : e && e.stack ? e.stack : e}`);
    console.log(`browser: ${passed} passed, 1 failed`);
    process.exit(1);
  }
);
