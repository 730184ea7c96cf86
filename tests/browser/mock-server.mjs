#!/usr/bin/env node
// A stand-in for the andera-lb admin port, for frontend work without the Rust
// backend: serves static/ at the same paths as the binary and canned, slowly
// changing JSON that follows the admin API contract (including hostile strings, to
// check escaping). Nothing here opens a connection anywhere: the Worker URLs are
// only strings.
//
//   node tests/browser/mock-server.mjs [port]        (default 4011; 0 = any free port)
//   MOCK_KEY=secret node tests/browser/mock-server.mjs
//   MOCK_STATIC=/some/dir node tests/browser/mock-server.mjs   (serve other page files)
//
// The key defaults to "test-lb-key". GET /mock/info (no key) answers
// {"workers": [...urls], "task": "<a recent task id>"} for the browser test.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const staticDir = process.env.MOCK_STATIC ? path.resolve(process.env.MOCK_STATIC) : path.resolve(here, '..', '..', 'static');
const KEY = process.env.MOCK_KEY || 'test-lb-key';
const port = Number(process.argv[2] ?? process.env.PORT ?? 4011);
const started = Date.now();

const ASSETS = {
  '/dashboard': ['dashboard.html', 'text/html; charset=utf-8'],
  '/bull': ['bull.html', 'text/html; charset=utf-8'],
  '/static/app.css': ['app.css', 'text/css; charset=utf-8'],
  '/static/common.js': ['common.js', 'text/javascript; charset=utf-8'],
  '/static/dashboard.js': ['dashboard.js', 'text/javascript; charset=utf-8'],
  '/static/bull.js': ['bull.js', 'text/javascript; charset=utf-8'],
};

const XSS_TAG = '<img src=x onerror=alert(1)>';
const iso = (ms) => new Date(ms).toISOString();
const rnd = (a, b) => a + Math.random() * (b - a);
const pick = (list) => list[Math.floor(Math.random() * list.length)];

const standardFunctions = [
  { name: 'hello', params: { name: { type: 'string', required: false, default: 'World' } } },
  { name: 'sleep', params: { ms: { type: 'number', required: true, min: 0 } } },
  { name: 'fail', params: { message: { type: 'string', required: false, default: 'boom' } } },
  { name: 'echo', params: {} },
  { name: 'render', params: { format: { type: 'string', required: true, enum: ['png', 'pdf'] }, id: { type: 'string', required: true, pattern: '^[a-z0-9-]{4,64}$' }, pages: { type: 'number', required: false, min: 1, max: 500, default: 1 } } },
];
const alternateFunctions = standardFunctions.map((f) => (f.name === 'hello' ? { name: 'hello', params: { ...f.params, greeting: { type: 'string', required: false, default: 'Hello' } } } : f));

// ------------------------------------------------------------------ Workers

const W = [
  {
    url: 'http://127.0.0.1:3101', wsUrl: 'ws://127.0.0.1:4101/', status: 'ready', online: true, httpUp: true, websocket: 'connected',
    group: 'default', contract: 1, websocketPort: 4101, tags: { region: 'eu-west', gpu: 'a100', rack: 'r12' },
    services: [{ name: 'db', state: 'up' }, { name: 'cache', state: 'up' }], slots: { used: 2, available: 2, limit: 4, queue: 0 },
    system: { uptime: 86400 * 3 + 5000, cpuLoad: 0.42, usedMemoryPercent: 41.2 }, functions: standardFunctions, lbInFlight: 2,
  },
  {
    url: 'http://127.0.0.1:3102', wsUrl: 'ws://127.0.0.1:4102/', status: 'ready', online: true, httpUp: true, websocket: 'connected',
    group: 'default', contract: 1, websocketPort: 4102, tags: { xss: XSS_TAG, zone: 'b' },
    services: [{ name: 'db', state: 'up' }, { name: '<b>queue</b>', state: 'up' }], slots: { used: 1, available: 0, limit: 1, queue: 2 },
    system: { uptime: 3600 + 120, cpuLoad: 1.73, usedMemoryPercent: 88.4 }, functions: standardFunctions, lbInFlight: 1,
  },
  {
    url: 'http://127.0.0.1:3103', wsUrl: 'ws://127.0.0.1:4103/', status: 'maintenance', online: false, httpUp: true, websocket: 'connected',
    group: 'gpu', contract: 2, websocketPort: 4103, tags: { gpu: 'h100' },
    services: [{ name: 'model', state: 'restarting' }], slots: { used: 0, available: 2, limit: 2, queue: 0 },
    system: { uptime: 300, cpuLoad: 0.05, usedMemoryPercent: 23.0 }, functions: [{ name: 'embed', params: { text: { type: 'string', required: true } } }], lbInFlight: 0,
  },
  {
    url: 'http://127.0.0.1:3104', wsUrl: 'ws://127.0.0.1:4104/', status: 'ready', online: false, httpUp: true, websocket: 'connected',
    group: 'default', contract: 1, websocketPort: 4104, tags: {}, services: [{ name: 'db', state: 'down' }],
    slots: { used: 0, available: 4, limit: 4, queue: 0 }, system: { uptime: 5000, cpuLoad: 0.1, usedMemoryPercent: 30.5 },
    functions: alternateFunctions, lbInFlight: 0,
    invalidReason: 'functions differ from the reference Worker of group "default" contract 1 (http://127.0.0.1:3101): hello takes greeting',
  },
  {
    url: 'http://127.0.0.1:3105', wsUrl: null, status: 'unknown', online: false, httpUp: false, websocket: 'disconnected',
    services: [], system: null, lbInFlight: 0, lastSeen: null, error: 'GET /health failed: connection refused (os error 111)',
  },
];

function workers() {
  const now = Date.now();
  return W.map((w, i) => {
    const out = JSON.parse(JSON.stringify(w));
    if (i < 4) out.lastSeen = iso(now - rnd(50, i === 2 ? 2500 : 900));
    if (out.slots && i === 0) {
      out.slots.used = Math.floor(rnd(0, 5));
      out.slots.available = out.slots.limit - out.slots.used;
      out.lbInFlight = out.slots.used;
    }
    if (out.system && out.system.uptime) out.system.uptime += (now - started) / 1000;
    if (out.system && i === 0) out.system.cpuLoad = +rnd(0.2, 0.9).toFixed(2);
    return out;
  });
}

// ------------------------------------------------------------------ tasks

const tasks = []; // newest last
let seq = 0x2a;
const FNS = ['hello', 'sleep', 'fail', 'render', 'echo'];

function newTask(now) {
  seq += 1;
  const fn = pick(FNS);
  const odd = Math.random() < 0.05;
  const t = {
    id: Math.floor(now / 1000).toString(16) + '-' + seq.toString(16).padStart(6, '0'),
    group: odd ? '<i>reports</i>' : 'default',
    function: odd ? '"><svg onload=alert(2)>' : fn,
    contract: 1,
    priority: Math.random() < 0.2 ? 1 + Math.floor(rnd(1, 6)) : 1,
    mode: Math.random() < 0.1 ? 'stream' : Math.random() < 0.1 ? 'webhook' : 'sync',
    state: 'queued', worker: null, attempts: 0, status: null, outcome: null, error: null,
    receivedAt: iso(now), queuedAt: null, dispatchedAt: null, finishedAt: null, waitMs: null, durationMs: null,
    timeline: [{ at: iso(now), event: 'received', detail: 'priority 1 mode sync' }],
    _plan: { wait: Math.random() < 0.35 ? rnd(20, 1800) : 0, run: fn === 'sleep' ? rnd(300, 4000) : rnd(2, 90), fail: fn === 'fail' || Math.random() < 0.04, retry: Math.random() < 0.08, timeout: Math.random() < 0.01 },
  };
  t.timeline[0].detail = `priority ${t.priority} mode ${t.mode}`;
  if (t._plan.wait) {
    t.queuedAt = iso(now);
    t.timeline.push({ at: iso(now + 1), event: 'queued', detail: `${Math.floor(rnd(0, 6))} task(s) waiting` });
  }
  tasks.push(t);
  if (tasks.length > 2000) tasks.shift();
}

function advance(now) {
  for (const t of tasks) {
    if (t.state === 'completed' || t.state === 'failed' || t.state === 'timed_out') continue;
    const rec = Date.parse(t.receivedAt);
    const p = t._plan;
    if (t.state === 'queued' && now - rec >= p.wait) {
      if (p.timeout) {
        t.state = 'timed_out'; t.status = 504; t.outcome = 'queue_timeout'; t.error = 'No Worker slot freed within TASK_TIMEOUT';
        t.finishedAt = iso(now); t.waitMs = now - rec; t.durationMs = now - rec;
        t.timeline.push({ at: t.finishedAt, event: 'finished', detail: `504 queue_timeout: ${t.error}` });
        continue;
      }
      const worker = pick(['http://127.0.0.1:3101', 'http://127.0.0.1:3102']);
      if (p.retry) {
        t.timeline.push({ at: iso(now), event: 'dispatched', detail: `attempt 1 to http://127.0.0.1:3102` });
        t.timeline.push({ at: iso(now + 3), event: 'retried', detail: 'connection refused before the Worker accepted the task' });
        t.attempts = 2;
        t.timeline.push({ at: iso(now + 4), event: 'dispatched', detail: `attempt 2 to ${worker}` });
      } else {
        t.attempts = 1;
        t.timeline.push({ at: iso(now), event: 'dispatched', detail: `attempt 1 to ${worker}` });
      }
      t.state = 'running'; t.worker = worker; t.dispatchedAt = iso(now);
      t.waitMs = t.queuedAt ? now - Date.parse(t.queuedAt) : 0;
    }
    if (t.state === 'running' && now - Date.parse(t.dispatchedAt) >= p.run) {
      t.finishedAt = iso(now); t.durationMs = now - rec;
      if (p.fail) {
        t.state = 'failed'; t.status = 500; t.outcome = 'worker_error'; t.error = t.function === 'fail' ? 'boom <script>alert(3)</script>' : 'Worker answered 500';
        t.timeline.push({ at: t.finishedAt, event: 'finished', detail: `500 worker_error: ${t.error}` });
      } else {
        t.state = 'completed'; t.status = 200; t.outcome = 'ok';
        t.timeline.push({ at: t.finishedAt, event: 'finished', detail: '200 ok' });
      }
      series.window.push({ s: t.durationMs / 1000, err: p.fail });
    }
  }
}

const publicTask = (t) => {
  const { _plan, ...rest } = t; // eslint-disable-line no-unused-vars
  return rest;
};

// ------------------------------------------------------------------ series and logs

const series = { points: [], window: [] };
const lbLogs = [];
function log(level, msg) {
  lbLogs.push(`[${iso(Date.now())}] [${level}] ${msg}`);
  if (lbLogs.length > 1000) lbLogs.shift();
}

function sample() {
  const now = Date.now();
  const w = series.window.splice(0).sort((a, b) => a.s - b.s);
  const pct = (p) => (w.length ? w[Math.min(w.length, Math.max(1, Math.ceil(w.length * p))) - 1].s : 0);
  series.points.push({
    t: Math.floor(now / 1000), throughput: w.length, p50: pct(0.5), p95: pct(0.95), p99: pct(0.99),
    queueDepth: tasks.filter((t) => t.state === 'queued').length, errors: w.filter((x) => x.err).length,
  });
  if (series.points.length > 300) series.points.shift();
}

// A history so the charts are not empty at start: 4 minutes of plausible samples.
{
  const now = Math.floor(Date.now() / 1000);
  for (let i = 240; i > 0; i--) {
    const tp = Math.max(0, 6 + 4 * Math.sin(i / 17) + rnd(-2, 2));
    const p50 = 0.03 + rnd(0, 0.02);
    series.points.push({ t: now - i, throughput: +tp.toFixed(1), p50, p95: p50 * rnd(3, 6), p99: p50 * rnd(8, 20), queueDepth: Math.max(0, Math.round(3 + 3 * Math.sin(i / 23) + rnd(-1, 1))), errors: Math.random() < 0.1 ? 1 : 0 });
  }
  for (let i = 0; i < 60; i++) log(pick(['INFO', 'INFO', 'INFO', 'WARN']), `discovery: ${pick(W).url} ${pick(['answered /health in 3 ms', 'slot feed connected', 'slots 2/4'])}`);
  log('ERROR', 'discovery: http://127.0.0.1:3105 /health failed: connection refused (os error 111)');
  log('WARN', 'registry: http://127.0.0.1:3104 is invalid: functions differ from the reference of default/1');
  log('INFO', 'a log line with markup <script>alert("lb-log")</script> stays text');
  for (let i = 0; i < 40; i++) newTask(Date.now() - (40 - i) * 400);
}

setInterval(() => {
  const now = Date.now();
  if (Math.random() < 0.55) newTask(now); // about 2 tasks/s
  advance(now);
}, 250);
setInterval(sample, 1000);
setInterval(() => {
  const t = tasks[tasks.length - 1];
  log(pick(['INFO', 'INFO', 'INFO', 'WARN', 'ERROR']), `task ${t.id} ${t.group}/${t.function} ${pick(['dispatched to http://127.0.0.1:3101', 'queued behind 3 task(s)', 'finished 200 ok in 41 ms', 'worker answered 500'])}`);
}, 700);

// ------------------------------------------------------------------ HTTP

function send(res, status, body, type = 'application/json') {
  const data = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
  res.end(data);
}

function authorized(req) {
  const v = String(req.headers['x-lb-auth'] || req.headers.authorization || '').replace(/^Bearer\s+/i, '');
  return v === KEY;
}

function decodeB64(s) {
  for (const enc of ['base64', 'base64url']) {
    try {
      const out = Buffer.from(s, enc).toString('utf8');
      if (out && Buffer.from(out, 'utf8').toString(enc).replace(/=+$/, '') === s.replace(/=+$/, '')) return out;
    } catch (_) { /* next */ }
  }
  return null;
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://mock');
  const p = url.pathname.replace(/\/+$/, '') || '/';
  if (req.method !== 'GET') return send(res, 405, { error: 'Method not allowed' });
  if (ASSETS[p]) {
    const [file, type] = ASSETS[p];
    try {
      return send(res, 200, fs.readFileSync(path.join(staticDir, file)), type);
    } catch (e) {
      return send(res, 500, { error: String(e) });
    }
  }
  if (p === '/mock/info') {
    const done = [...tasks].reverse().find((t) => t.state === 'completed');
    return send(res, 200, { workers: W.slice(0, 2).map((w) => w.url), task: done ? done.id : tasks[tasks.length - 1].id });
  }
  if (!(p.startsWith('/dashboard/api') || p.startsWith('/bull/api'))) return send(res, 404, { error: 'Not found' });
  if (!authorized(req)) return send(res, 401, { error: 'Unauthorized' });

  if (p === '/dashboard/api/workers') return send(res, 200, workers());
  const logs = /^\/dashboard\/api\/workers\/(.+)\/logs$/.exec(p);
  if (logs) {
    const wurl = decodeB64(logs[1]);
    const w = W.find((x) => x.url === wurl);
    if (!w) return send(res, 404, { error: 'Unknown Worker: only Workers in the current list can be queried' });
    if (!w.httpUp) return send(res, 502, { error: 'Worker /logs failed: connection refused' });
    const now = Date.now();
    const lines = [];
    for (let i = 80; i > 0; i--) lines.push(`[${iso(now - i * 1500)}] [${pick(['INFO', 'INFO', 'DEBUG', 'WARN'])}] ${pick(['task hello done in 2 ms', 'slot taken (2/4)', 'slot freed', 'ws: lb connected', 'health check answered'])}`);
    lines.push(`[${iso(now)}] [ERROR] function fail: boom <script>alert("worker-log")</script>`);
    return send(res, 200, { logs: lines });
  }
  if (p === '/dashboard/api/overview') {
    const queued = tasks.filter((t) => t.state === 'queued');
    const byP = new Map();
    for (const t of queued) byP.set(t.priority, (byP.get(t.priority) || 0) + 1);
    const count = (s) => tasks.filter((t) => t.state === s).length;
    return send(res, 200, {
      lb: { version: '0.1.0', uptimeSeconds: (Date.now() - started) / 1000 + 7322, draining: false },
      queue: { depth: queued.length, max: 10000, byPriority: [...byP].sort((a, b) => a[0] - b[0]).map(([priority, c]) => ({ priority, count: c })) },
      totals: { received: tasks.length + 1200, completed: count('completed') + 1150, failed: count('failed') + 38, timedOut: count('timed_out') + 2, retried: tasks.filter((t) => t.attempts > 1).length + 9, running: count('running'), queued: queued.length },
      series: series.points,
      recentTasks: [...tasks].reverse().slice(0, 50).map(publicTask),
      logs: lbLogs.slice(-200),
    });
  }
  if (p === '/bull/api/tasks') {
    const state = url.searchParams.get('state') || '';
    const group = url.searchParams.get('group') || '';
    const limit = Math.min(1000, Math.max(1, Number(url.searchParams.get('limit')) || 200));
    const counts = { queued: 0, running: 0, completed: 0, failed: 0, timed_out: 0, retried: 0 };
    const groups = new Set();
    for (const t of tasks) {
      counts[t.state] += 1;
      if (t.attempts > 1) counts.retried += 1;
      groups.add(t.group);
    }
    const list = [...tasks].reverse().filter((t) => (!state || (state === 'retried' ? t.attempts > 1 : t.state === state)) && (!group || t.group === group));
    return send(res, 200, { counts, groups: [...groups].sort(), tasks: list.slice(0, limit).map(publicTask) });
  }
  const one = /^\/bull\/api\/tasks\/(.+)$/.exec(p);
  if (one) {
    const id = decodeURIComponent(one[1]);
    const t = tasks.find((x) => x.id === id);
    return t ? send(res, 200, publicTask(t)) : send(res, 404, { error: 'Unknown task (it may have left the board)' });
  }
  return send(res, 404, { error: 'Not found' });
});

server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  console.log(`mock admin port listening on http://127.0.0.1:${a.port} (key: ${KEY === 'test-lb-key' ? KEY : '<MOCK_KEY>'})`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
