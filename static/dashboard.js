/* andera-lb dashboard: LB status, KPIs, live charts, Workers (with contract and
 * logs on demand), recent tasks and the LB's own log. Every API string is inserted
 * as text (see common.js). */
(function () {
  'use strict';

  const A = window.AnderaLB;
  const { el, fill, cell, obj, arr, num, str, keyedSync } = A;
  const { makeCharts, fmtRate, fmtLat } = window.AnderaCharts;
  const $ = (id) => document.getElementById(id);

  const WORKER_LOG_EVERY_MS = 5000;
  const EXPANDED_KEY = 'andera-lb.expanded';
  let app = null;
  let charts = null;

  // ------------------------------------------------------------------ header, KPIs, totals

  function renderHeader(ov) {
    const lb = obj(ov.lb);
    const draining = lb.draining === true;
    const parts = [
      A.pill(draining ? 'draining' : 'running', draining ? 'warn' : 'ok', draining ? 'The load balancer is draining: it finishes running tasks and takes no new ones' : 'The load balancer accepts tasks'),
      el('span', { class: 'meta' }, 'v' + str(lb.version || '?')),
      el('span', { class: 'meta', title: 'Uptime of the load balancer process' }, 'up ' + A.fmtSpan(num(lb.uptimeSeconds))),
    ];
    fill($('lb-state'), parts);
  }

  function lastBusy(series, n) {
    for (let i = series.length - 1; i >= Math.max(0, series.length - n); i--) {
      if (num(series[i].throughput) > 0) return series[i];
    }
    return null;
  }

  function tile(id, label, value, unit, sub, tone, title) {
    return { id, label, value, unit, sub, tone, title };
  }

  function renderKpis(ov, workers) {
    const series = arr(ov.series).filter((p) => A.isObj(p));
    const last = series[series.length - 1];
    const busy = lastBusy(series, 5);
    const lastMin = series.slice(-60);
    const sum = (list, k) => list.reduce((a, p) => a + (num(p[k]) || 0), 0);
    const avg1m = lastMin.length ? sum(lastMin, 'throughput') / lastMin.length : null;
    const max5 = series.reduce((a, p) => (num(p.throughput) > 0 ? Math.max(a, num(p.p99) || 0) : a), 0);
    const q = obj(ov.queue);
    const totals = obj(ov.totals);
    const depth = num(q.depth);
    const qmax = num(q.max);
    const errors1m = sum(lastMin, 'errors');
    const total = workers ? workers.length : null;
    const online = workers ? workers.filter((w) => w.online === true).length : null;
    const invalid = workers ? workers.filter((w) => w.invalidReason).length : 0;
    const maint = workers ? workers.filter((w) => !w.invalidReason && w.status === 'maintenance').length : 0;
    const down = workers ? workers.filter((w) => !w.invalidReason && w.online !== true && w.status !== 'maintenance').length : 0;
    const wsub = [invalid ? invalid + ' invalid' : '', maint ? maint + ' maintenance' : '', down ? down + ' not eligible' : ''].filter(Boolean).join(' · ') || 'all eligible';
    const tiles = [
      tile('tp', 'Throughput now', last ? fmtRate(num(last.throughput) || 0).replace('/s', '') : '–', 'tasks/s', avg1m == null ? 'no samples yet' : '1-min avg ' + fmtRate(avg1m), 'info', 'Tasks finished during the last second'),
      tile('p50', 'Latency p50', busy ? fmtLat(busy.p50 * 1000) : '–', '', busy ? 'p95 ' + fmtLat(busy.p95 * 1000) : 'no task finished in the last 5 s', 'plain', 'Median task latency (received → finished) of the last busy second'),
      tile('p99', 'Latency p99', busy ? fmtLat(busy.p99 * 1000) : '–', '', '5-min max ' + (max5 ? fmtLat(max5 * 1000) : '–'), busy && busy.p99 > 5 ? 'warn' : 'plain', '99th percentile latency of the last busy second'),
      tile('q', 'Queue depth', A.fmtInt(depth), '', qmax != null ? 'limit ' + A.fmtInt(qmax) : '', depth && qmax && depth >= qmax * 0.8 ? 'bad' : depth ? 'warn' : 'plain', 'Tasks waiting for a free Worker slot'),
      tile('w', 'Workers online', online == null ? '–' : online + ' / ' + total, '', workers ? wsub : 'Worker list unavailable', total == null ? 'plain' : online === 0 && total > 0 ? 'bad' : online < total ? 'warn' : 'ok', 'Workers eligible for tasks / Workers in the list'),
      tile('err', 'Errors (1 min)', A.fmtInt(errors1m), '', 'failed ' + A.fmtInt(num(totals.failed)) + ' · timed out ' + A.fmtInt(num(totals.timedOut)), errors1m ? 'bad' : 'plain', 'Tasks that ended in an error during the last minute; totals since start below'),
    ];
    const box = $('kpis');
    keyedSync(
      box,
      tiles,
      (t) => t.id,
      (t) => el('div', { class: 'kpi', id: 'kpi-' + t.id }, el('div', { class: 'kpi-label' }), el('div', { class: 'kpi-value' }), el('div', { class: 'kpi-sub' })),
      (node, t) => {
        node.className = 'kpi tone-' + t.tone;
        node.title = t.title;
        cell(node.children[0], t.label, () => t.label);
        cell(node.children[1], [t.value, t.unit], () => [t.value, t.unit ? el('small', null, ' ' + t.unit) : null]);
        cell(node.children[2], t.sub, () => t.sub);
      }
    );
    const tot = [
      ['received', 'Received', ''],
      ['completed', 'Completed', 'ok'],
      ['failed', 'Failed', 'bad'],
      ['timedOut', 'Timed out', 'warn'],
      ['retried', 'Retried', 'warn'],
      ['running', 'Running', 'info'],
      ['queued', 'Queued', ''],
    ];
    keyedSync(
      $('totals'),
      tot,
      (t) => t[0],
      (t) => el('span', { class: 'stat' }, el('span', { class: 'stat-label' }, t[1]), el('b', { class: 'stat-value' })),
      (node, t) => {
        const v = num(totals[t[0]]);
        node.className = 'stat' + (v && t[2] ? ' tone-' + t[2] : '');
        cell(node.children[1], String(v), () => A.fmtInt(v));
      }
    );
    const ended = (num(totals.completed) || 0) + (num(totals.failed) || 0) + (num(totals.timedOut) || 0);
    const rate = ended ? ((num(totals.completed) || 0) / ended) * 100 : null;
    let sr = $('totals-rate');
    if (!sr) {
      sr = el('span', { class: 'stat rate', id: 'totals-rate', title: 'completed / (completed + failed + timed out) since start' });
    }
    if (sr.parentNode !== $('totals') || sr.nextSibling) {
      $('totals').appendChild(sr);
    }
    cell(sr, String(rate), () => ['success ', el('b', null, rate == null ? '–' : rate.toFixed(rate === 100 ? 0 : 1) + ' %')]);
  }

  /** Named clients: running, queued and refused tasks (as text: names are escaped). */
  function renderClients(ov) {
    const list = arr(ov.clients).filter((c) => A.isObj(c));
    const box = $('clients');
    if (!box) return;
    cell(box, JSON.stringify(list), () => {
      if (!list.length) return el('p', { class: 'empty' }, 'No task from any client yet.');
      return el(
        'table',
        { class: 'prio-table' },
        el('tbody', null, list.slice(0, 100).map((c) =>
          el(
            'tr',
            null,
            el('th', { scope: 'row' }, str(c.name)),
            el('td', { class: 'num', title: 'running' }, A.fmtInt(num(c.running) || 0)),
            el('td', { class: 'num', title: 'queued' }, A.fmtInt(num(c.queued) || 0)),
            el('td', { class: 'num', title: 'refused (429)' }, A.fmtInt(num(c.refused) || 0))
          )
        ))
      );
    });
  }

  /** The cluster (cluster.redis): state, instances, global queue, leases per Worker (as text). */
  function renderCluster(ov) {
    const c = obj(ov.cluster);
    const box = $('cluster');
    if (!box) return;
    cell(box, JSON.stringify(c), () => {
      if (str(c.status) === 'off' || !c.status) {
        return el('p', { class: 'empty' }, 'Off: this instance counts Worker slots on its own (cluster.redis unset).');
      }
      const leases = obj(c.leases);
      const rows = [
        ['state', str(c.status) + (c.detail ? ' (' + str(c.detail) + ')' : '')],
        ['instances', A.fmtInt(arr(c.instances).length)],
        ['queued (all instances)', A.fmtInt(num(c.queueDepth) || 0)],
        ['leases held here', A.fmtInt(num(c.leasesHere) || 0)],
      ].concat(Object.keys(leases).slice(0, 100).map((url) => [url, A.fmtInt(num(leases[url]) || 0) + ' leased']));
      return el(
        'table',
        { class: 'prio-table' },
        el('tbody', null, rows.map(([k, v]) =>
          el('tr', null, el('th', { scope: 'row' }, k), el('td', null, v))
        ))
      );
    });
  }

  function renderPriorities(ov) {
    const q = obj(ov.queue);
    const list = arr(q.byPriority)
      .filter((p) => A.isObj(p) && num(p.count) > 0)
      .sort((a, b) => (num(a.priority) || 0) - (num(b.priority) || 0));
    const box = $('prio');
    const max = list.reduce((a, p) => Math.max(a, num(p.count) || 0), 0);
    const sig = JSON.stringify(list);
    cell(box, sig, () => {
      if (!list.length) return el('p', { class: 'empty' }, 'Queue empty: every task has a slot.');
      return el(
        'table',
        { class: 'prio-table' },
        list.length > 40 ? el('caption', { class: 'muted' }, '+' + (list.length - 40) + ' more priorities') : null,
        el('tbody', null, list.slice(0, 40).map((p) =>
          el(
            'tr',
            null,
            el('th', { scope: 'row', class: 'num' }, 'P' + str(p.priority)),
            el('td', { class: 'bar-cell' }, el('span', { class: 'hbar' }, el('i', { style: { width: Math.max(2, (num(p.count) / max) * 100) + '%' } }))),
            el('td', { class: 'num' }, A.fmtInt(num(p.count)))
          )
        ))
      );
    });
  }

  // ------------------------------------------------------------------ workers

  let expanded = new Set();
  try {
    expanded = new Set(JSON.parse(sessionStorage.getItem(EXPANDED_KEY) || '[]').filter((u) => typeof u === 'string'));
  } catch (_) {
    expanded = new Set();
  }
  function saveExpanded() {
    try {
      sessionStorage.setItem(EXPANDED_KEY, JSON.stringify([...expanded]));
    } catch (_) {
      /* ignore */
    }
  }
  const workerLogs = new Map(); // url → {lines, at, error, loading}

  function servicesState(w) {
    return arr(w.services).filter((s) => A.isObj(s) && s.state != null && s.state !== 'up');
  }

  function workerState(w) {
    if (w.invalidReason) return { text: 'invalid', tone: 'invalid', why: 'Excluded: ' + str(w.invalidReason) };
    if (w.online === true) return { text: 'online', tone: 'ok', why: 'Eligible for tasks' };
    const status = str(w.status) || 'unknown';
    if (status === 'maintenance') return { text: 'maintenance', tone: 'warn', why: 'The Worker reports maintenance mode' };
    if (w.httpUp !== true && w.websocket !== 'connected') {
      return w.lastSeen ? { text: 'offline', tone: 'bad', why: 'Neither /health nor the WebSocket answers' } : { text: 'unreachable', tone: 'bad', why: 'Never answered' };
    }
    if (status === 'ready') {
      const down = servicesState(w);
      return { text: 'not eligible', tone: 'warn', why: down.length ? 'Service(s) not up: ' + down.map((s) => str(s.name) + ' ' + str(s.state)).join(', ') : 'The WebSocket feed went silent' };
    }
    return { text: status, tone: 'idle', why: 'Status ' + status };
  }

  const shortUrl = (u) => str(u).replace(/^https?:\/\//, '').replace(/^wss?:\/\//, '');

  function tagsNode(tags) {
    const entries = Object.entries(obj(tags)).sort((a, b) => a[0].localeCompare(b[0]));
    if (!entries.length) return el('span', { class: 'muted' }, '—');
    return el('div', { class: 'chips-inline' }, entries.map(([k, v]) => el('span', { class: 'tag', title: k + ' = ' + str(v) }, el('span', { class: 'tag-k' }, k), el('span', { class: 'tag-v' }, str(v)))));
  }

  const SERVICE_TONES = { up: 'ok', down: 'bad', restarting: 'warn' };
  function servicesNode(services) {
    const list = arr(services).filter(A.isObj);
    if (!list.length) return el('span', { class: 'muted' }, '—');
    return el('div', { class: 'chips-inline' }, list.map((s) => {
      const state = str(s.state) || 'unknown';
      return el('span', { class: 'svc tone-' + A.lookup(SERVICE_TONES, state, 'idle'), title: str(s.name) + ': ' + state }, el('i', { class: 'dot' }), str(s.name), state === 'up' ? null : el('em', null, ' ' + state));
    }));
  }

  function slotsNode(w) {
    const s = obj(w.slots);
    const used = num(s.used);
    const limit = num(s.limit);
    const inflight = num(w.lbInFlight);
    if (limit == null) return el('span', { class: 'muted' }, inflight ? 'LB ' + inflight : '—');
    const pct = limit > 0 ? Math.min(100, ((used || 0) / limit) * 100) : 0;
    const lbPct = limit > 0 ? Math.min(100, ((inflight || 0) / limit) * 100) : 0;
    const tone = limit > 0 && (used || 0) >= limit ? 'full' : pct >= 75 ? 'high' : '';
    return el(
      'div',
      { class: 'slots', title: 'Worker reports ' + (used == null ? '?' : used) + ' used of ' + limit + ' (' + (num(s.available) == null ? '?' : s.available) + ' available); the LB has ' + (inflight == null ? '?' : inflight) + ' task(s) in flight there' },
      el('span', { class: 'sbar ' + tone }, el('i', { class: 'used', style: { width: pct + '%' } }), el('i', { class: 'lb', style: { width: lbPct + '%' } })),
      el('span', { class: 'num' }, (used == null ? '?' : used) + '/' + limit),
      el('span', { class: 'lbif' }, 'LB ' + (inflight == null ? '–' : inflight))
    );
  }

  function urlNode(w) {
    const ws = w.wsUrl == null ? null : str(w.wsUrl);
    const wsState = str(w.websocket) || 'disconnected';
    return el(
      'div',
      { class: 'urlcell' },
      el('div', { class: 'mono url', title: str(w.url) }, str(w.url)),
      el(
        'div',
        { class: 'mono ws' },
        el('i', { class: 'dot tone-' + (wsState === 'connected' ? 'ok' : 'bad'), title: 'WebSocket ' + wsState }),
        ws ? ws : el('span', { class: 'muted' }, 'no WebSocket URL'),
        el('span', { class: 'muted' }, ' · ' + wsState),
        w.httpUp === false ? el('span', { class: 'bad-text' }, ' · HTTP down') : null
      )
    );
  }

  function problemNode(w) {
    const parts = [];
    if (w.invalidReason) parts.push(el('div', { class: 'problem invalid', title: 'invalid: ' + str(w.invalidReason) }, el('b', null, 'invalid: '), str(w.invalidReason)));
    if (w.error) parts.push(el('div', { class: 'problem bad', title: str(w.error) }, str(w.error)));
    const down = servicesState(w);
    if (!w.invalidReason && !w.error && w.online !== true && down.length) parts.push(el('div', { class: 'problem warn' }, 'service down: ' + down.map((s) => str(s.name)).join(', ')));
    return parts.length ? parts : el('span', { class: 'muted' }, '—');
  }

  function memNode(v) {
    const n = num(v);
    if (n == null) return el('span', { class: 'muted' }, '–');
    return el('span', { class: n >= 90 ? 'bad-text' : n >= 75 ? 'warn-text' : '' }, A.fmtPct(n));
  }

  function paramRows(fn) {
    const params = obj(fn.params);
    const entries = Object.entries(params);
    if (!entries.length) return [el('tr', null, el('td', { class: 'mono fn' }, str(fn.name)), el('td', { colspan: '5', class: 'muted' }, 'no declared parameters'))];
    return entries.map(([name, specRaw], i) => {
      const spec = obj(specRaw);
      const cons = [];
      if (spec.enum !== undefined) cons.push('enum ' + str(spec.enum));
      if (spec.pattern !== undefined) cons.push('pattern ' + str(spec.pattern));
      if (spec.min !== undefined) cons.push('min ' + str(spec.min));
      if (spec.max !== undefined) cons.push('max ' + str(spec.max));
      for (const [k, v] of Object.entries(spec)) {
        if (!['type', 'required', 'default', 'enum', 'pattern', 'min', 'max'].includes(k)) cons.push(k + ' ' + str(v));
      }
      return el(
        'tr',
        null,
        i === 0 ? el('td', { class: 'mono fn', rowspan: String(entries.length) }, str(fn.name)) : null,
        el('td', { class: 'mono' }, name),
        el('td', null, spec.type === undefined ? el('span', { class: 'muted' }, 'any') : str(spec.type)),
        el('td', null, spec.required === true ? el('b', null, 'required') : el('span', { class: 'muted' }, 'optional')),
        el('td', { class: 'mono' }, spec.default === undefined ? el('span', { class: 'muted' }, '—') : str(spec.default)),
        el('td', { class: 'mono' }, cons.length ? cons.join(' · ') : el('span', { class: 'muted' }, '—'))
      );
    });
  }

  function contractNode(w) {
    const fns = arr(w.functions).filter(A.isObj);
    return [
      el('h3', null, 'Contract ', el('span', { class: 'muted' }, 'group ', el('b', null, str(w.group) || '?'), ' · contract ', el('b', null, str(w.contract) || '?'), ' · ' + fns.length + ' function(s)')),
      fns.length
        ? el(
            'table',
            { class: 'grid contract' },
            el('thead', null, el('tr', null, ['Function', 'Parameter', 'Type', 'Required', 'Default', 'Constraints'].map((h) => el('th', null, h)))),
            fns.map((fn) => el('tbody', null, paramRows(fn)))
          )
        : el('p', { class: 'muted' }, 'No function reported (the Worker has not answered an authenticated /health yet).'),
    ];
  }

  function factsNode(w) {
    const sys = obj(w.system);
    const s = obj(w.slots);
    const facts = [
      ['Status', str(w.status) || 'unknown'],
      ['Eligible', w.online === true ? 'yes' : 'no'],
      ['HTTP /health', w.httpUp === true ? 'answering' : 'not answering'],
      ['WebSocket', str(w.websocket) || '–'],
      ['Slots', num(s.limit) == null ? '–' : str(num(s.used)) + ' used · ' + str(num(s.available)) + ' free · ' + str(num(s.limit)) + ' limit'],
      ['Worker queue', A.fmtInt(num(s.queue))],
      ['LB in flight', A.fmtInt(num(w.lbInFlight))],
      ['Worker uptime', num(sys.uptime) == null ? '–' : A.fmtSpan(sys.uptime)],
      ['CPU load', A.fmtNum(num(sys.cpuLoad), 2)],
      ['Memory used', A.fmtPct(num(sys.usedMemoryPercent))],
    ];
    return el('dl', { class: 'facts' }, facts.map(([k, v]) => [el('dt', null, k), el('dd', null, v)]));
  }

  function levelOf(line) {
    const m = /\b(ERROR|ERR|FATAL|WARN|WARNING|INFO|DEBUG|TRACE)\b/.exec(line.slice(0, 80));
    if (!m) return '';
    const l = m[1];
    return l === 'ERROR' || l === 'ERR' || l === 'FATAL' ? 'lv-error' : l.startsWith('WARN') ? 'lv-warn' : l === 'DEBUG' || l === 'TRACE' ? 'lv-debug' : 'lv-info';
  }

  function logLine(line) {
    const s = str(line);
    return el('div', { class: 'ln ' + levelOf(s) }, s);
  }

  function renderWorkerLogs(detail, url) {
    const st = workerLogs.get(url) || {};
    const box = detail.querySelector('.wlogs');
    const meta = detail.querySelector('.wlogs-meta');
    const lines = arr(st.lines).slice(-500);
    fill(
      meta,
      st.loading && !st.at ? 'loading…' : null,
      st.at ? ['fetched ', A.timeAgo(new Date(st.at).toISOString())] : null,
      st.lines ? ' · ' + st.lines.length + ' line(s)' : null,
      st.error ? el('span', { class: 'bad-text' }, ' · ' + st.error) : null
    );
    const sig = JSON.stringify([lines.length, lines[0], lines[lines.length - 1], st.error && !st.lines]);
    if (box._sig === sig) return;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 30 || box._sig === undefined;
    box._sig = sig;
    if (!lines.length) fill(box, el('div', { class: 'muted' }, st.error ? 'No log available.' : st.loading ? 'Loading the Worker log…' : 'The Worker log is empty.'));
    else fill(box, lines.map(logLine));
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  async function loadWorkerLogs(url) {
    const st = workerLogs.get(url) || {};
    if (st.loading) return;
    st.loading = true;
    workerLogs.set(url, st);
    const detail = detailFor(url);
    if (detail) renderWorkerLogs(detail, url);
    try {
      const body = await A.api('/dashboard/api/workers/' + A.b64(url) + '/logs');
      st.lines = arr(obj(body).logs).map(str);
      st.error = null;
    } catch (e) {
      if (e instanceof A.AuthError) {
        st.loading = false;
        if (app) app.rejected();
        return;
      }
      st.error = e.status === 404 ? 'not a current Worker (404)' : e.message;
    }
    st.at = Date.now();
    st.loading = false;
    const d = detailFor(url);
    if (d) renderWorkerLogs(d, url);
  }

  function detailFor(url) {
    const tb = $('workers-table')._keyed && $('workers-table')._keyed.get(url);
    return tb ? tb.querySelector('tr.details') : null;
  }

  function toggleWorker(url, tb) {
    if (expanded.has(url)) expanded.delete(url);
    else expanded.add(url);
    saveExpanded();
    applyExpanded(tb, url);
    if (expanded.has(url)) loadWorkerLogs(url);
  }

  function applyExpanded(tb, url) {
    const open = expanded.has(url);
    tb.classList.toggle('open', open);
    tb.querySelector('tr.details').hidden = !open;
    const btn = tb.querySelector('button.tog');
    btn.setAttribute('aria-expanded', String(open));
    btn.textContent = open ? '▾' : '▸';
  }

  const COLS = 13;
  function createWorker(w, url) {
    const tb = el('tbody', { class: 'worker', dataset: { url } });
    const btn = el('button', { type: 'button', class: 'tog', 'aria-expanded': 'false', title: 'Contract and logs of this Worker' }, '▸');
    const main = el('tr', { class: 'wrow' }, el('td', { class: 'tog' }, btn));
    for (let i = 1; i < COLS; i++) main.appendChild(el('td'));
    const classes = ['', 'st', 'grp', 'num', 'urlc', 'tagc', 'svcc', 'slotc', 'num', 'num', 'num', 'num ago-c', 'probc'];
    classes.forEach((c, i) => c && (main.children[i].className = c));
    const detail = el(
      'tr',
      { class: 'details', hidden: true },
      el(
        'td',
        { colspan: String(COLS) },
        el(
          'div',
          { class: 'detail-grid' },
          el('div', { class: 'contract-box' }),
          el('div', { class: 'facts-box' }),
          el(
            'div',
            { class: 'logs-box' },
            el('h3', null, 'Worker log ', el('span', { class: 'muted wlogs-meta' }), el('button', { type: 'button', class: 'btn small reload', title: 'Fetch the Worker log again' }, 'Reload')),
            el('div', { class: 'logbox wlogs', tabindex: '0' })
          )
        )
      )
    );
    btn.addEventListener('click', (e) => {
      e.stopPropagation();
      toggleWorker(url, tb);
    });
    main.addEventListener('click', (e) => {
      if (e.target.closest('a, button')) return;
      if (String(window.getSelection ? window.getSelection() : '').length) return;
      toggleWorker(url, tb);
    });
    detail.querySelector('.reload').addEventListener('click', () => loadWorkerLogs(url));
    tb.append(main, detail);
    applyExpanded(tb, url);
    return tb;
  }

  function updateWorker(tb, w, url) {
    const td = tb.querySelector('tr.wrow').children;
    const st = workerState(w);
    tb.className = 'worker st-' + st.tone + (expanded.has(url) ? ' open' : '');
    const sys = obj(w.system);
    const s = obj(w.slots);
    cell(td[1], [st.text, st.tone, st.why], () => A.pill(st.text, st.tone, st.why));
    cell(td[2], str(w.group), () => (w.group == null ? el('span', { class: 'muted' }, '—') : str(w.group)));
    cell(td[3], str(w.contract), () => (w.contract == null ? el('span', { class: 'muted' }, '—') : str(w.contract)));
    cell(td[4], [w.url, w.wsUrl, w.websocket, w.httpUp], () => urlNode(w));
    cell(td[5], w.tags || null, () => tagsNode(w.tags));
    cell(td[6], w.services || null, () => servicesNode(w.services));
    cell(td[7], [w.slots || null, w.lbInFlight], () => slotsNode(w));
    cell(td[8], String(num(s.queue)), () => A.fmtInt(num(s.queue)));
    cell(td[9], String(num(sys.cpuLoad)), () => A.fmtNum(num(sys.cpuLoad), 2));
    cell(td[10], String(num(sys.usedMemoryPercent)), () => memNode(sys.usedMemoryPercent));
    cell(td[11], String(w.lastSeen), () => A.timeAgo(w.lastSeen, 'never'));
    cell(td[12], [w.invalidReason, w.error, w.online, w.services || null], () => problemNode(w));
    const detail = tb.querySelector('tr.details');
    cell(detail.querySelector('.contract-box'), [w.group, w.contract, w.functions || null], () => contractNode(w));
    cell(detail.querySelector('.facts-box'), [w.status, w.online, w.httpUp, w.websocket, w.slots || null, w.lbInFlight, w.system || null], () => [el('h3', null, 'Live figures'), factsNode(w)]);
    if (expanded.has(url)) renderWorkerLogs(detail, url);
  }

  let lastWorkerLogFetch = 0;
  function renderWorkers(workers) {
    const table = $('workers-table');
    const list = workers.filter((w) => A.isObj(w) && typeof w.url === 'string');
    keyedSync(table, list, (w) => w.url, (w, url) => createWorker(w, url), updateWorker, 1);
    $('workers-empty').hidden = list.length > 0;
    const online = list.filter((w) => w.online === true).length;
    cell($('workers-count'), [list.length, online], () => list.length + ' · ' + online + ' online');
    // refresh the logs of expanded Workers now and then
    const now = Date.now();
    const urls = new Set(list.map((w) => w.url));
    for (const u of [...workerLogs.keys()]) if (!urls.has(u)) workerLogs.delete(u);
    if (now - lastWorkerLogFetch >= WORKER_LOG_EVERY_MS) {
      lastWorkerLogFetch = now;
      for (const u of expanded) {
        if (urls.has(u)) loadWorkerLogs(u);
      }
    }
  }

  // ------------------------------------------------------------------ recent tasks

  function renderTasks(tasks) {
    const body = $('recent-tasks-body');
    const list = tasks.filter((t) => A.isObj(t) && t.id != null);
    keyedSync(
      body,
      list,
      (t) => str(t.id),
      (t, id) => {
        const tr = el('tr', { class: 'clickable', title: 'Open on the task board' });
        for (let i = 0; i < 11; i++) tr.appendChild(el('td'));
        ['mono', '', 'num', '', 'stc', 'mono wk', 'num', 'num', 'num', 'num', 'num ago-c'].forEach((c, i) => c && (tr.children[i].className = c));
        tr.addEventListener('click', (e) => {
          if (e.target.closest('a')) return;
          if (String(window.getSelection ? window.getSelection() : '').length) return;
          location.href = '/bull#' + encodeURIComponent(id);
        });
        return tr;
      },
      (tr, t, id) => {
        const td = tr.children;
        cell(td[0], id, () => A.taskLink(id));
        cell(td[1], [t.group, t.function], () => [el('span', { class: 'grp' }, str(t.group)), el('span', { class: 'muted' }, ' / '), el('span', { class: 'mono' }, str(t.function))]);
        cell(td[2], str(t.priority), () => str(t.priority));
        cell(td[3], str(t.mode), () => str(t.mode));
        cell(td[4], [t.state, t.outcome, t.error], () => [
          A.taskStatePill(t),
          t.outcome != null && t.outcome !== 'ok' ? el('span', { class: 'outcome', title: t.error ? str(t.error) : null }, str(t.outcome)) : null,
        ]);
        cell(td[5], str(t.worker), () => (t.worker ? el('span', { title: str(t.worker) }, shortUrl(t.worker)) : el('span', { class: 'muted' }, '—')));
        cell(td[6], str(t.attempts), () => el('span', { class: num(t.attempts) > 1 ? 'warn-text' : '' }, str(t.attempts)));
        cell(td[7], str(t.status), () => (t.status == null ? el('span', { class: 'muted' }, '—') : el('span', { class: num(t.status) >= 400 ? 'bad-text' : '' }, str(t.status))));
        cell(td[8], str(t.waitMs), () => A.fmtMs(num(t.waitMs)));
        cell(td[9], str(t.durationMs), () => A.fmtMs(num(t.durationMs)));
        cell(td[10], str(t.receivedAt), () => A.timeAgo(t.receivedAt, '—'));
      }
    );
    $('tasks-empty').hidden = list.length > 0;
    cell($('tasks-count'), String(list.length), () => 'last ' + list.length);
  }

  // ------------------------------------------------------------------ LB log

  let lbLines = [];
  function renderLbLogs() {
    const box = $('lb-logs');
    const f = $('logs-filter').value.trim().toLowerCase();
    const shown = (f ? lbLines.filter((l) => l.toLowerCase().includes(f)) : lbLines).slice(-1000);
    const prev = box._lines || [];
    const first = box._lines === undefined;
    let same = prev.length === shown.length;
    for (let i = 0; same && i < shown.length; i++) same = prev[i] === shown[i];
    cell($('logs-count'), [lbLines.length, shown.length, f], () => (f ? shown.length + ' of ' + lbLines.length + ' lines' : lbLines.length + ' lines'));
    if (same && !first) return;
    // find how many old lines scrolled out: prev.slice(d) is a prefix of shown
    let d = 0;
    for (; d < prev.length; d++) {
      const n = prev.length - d;
      if (n > shown.length) continue;
      let ok = true;
      for (let i = 0; ok && i < n; i++) ok = prev[d + i] === shown[i];
      if (ok) break;
    }
    if (d === prev.length || !box.children.length || box.children[0].classList.contains('muted')) {
      fill(box, shown.length ? shown.map(logLine) : el('div', { class: 'muted' }, f ? 'No line matches the filter.' : 'No log line yet.'));
    } else {
      for (let i = 0; i < d; i++) box.firstChild && box.firstChild.remove();
      append(box, shown.slice(prev.length - d).map(logLine));
    }
    box._lines = shown;
    if ($('logs-follow').checked) {
      box._auto = true;
      box.scrollTop = box.scrollHeight;
    }
  }
  function append(node, nodes) {
    const frag = document.createDocumentFragment();
    for (const n of nodes) frag.appendChild(n);
    node.appendChild(frag);
  }

  // ------------------------------------------------------------------ refresh

  let overview = null;
  let workersList = null;

  async function refresh() {
    const [ov, ws] = await Promise.allSettled([A.api('/dashboard/api/overview'), A.api('/dashboard/api/workers')]);
    for (const r of [ov, ws]) if (r.status === 'rejected' && r.reason instanceof A.AuthError) throw r.reason;
    if (!charts) charts = makeCharts();
    if (ws.status === 'fulfilled') {
      workersList = arr(ws.value);
      renderWorkers(workersList);
    }
    if (ov.status === 'fulfilled' && A.isObj(ov.value)) {
      overview = ov.value;
      const series = arr(overview.series).filter((p) => A.isObj(p) && num(p.t) != null);
      renderHeader(overview);
      charts.throughput.set(series);
      charts.latency.set(series);
      charts.queue.set(series);
      renderPriorities(overview);
      renderClients(overview);
      renderCluster(overview);
      renderTasks(arr(overview.recentTasks));
      lbLines = arr(overview.logs).map(str);
      renderLbLogs();
    }
    if (overview) renderKpis(overview, workersList);
    const failed = [ov, ws].find((r) => r.status === 'rejected');
    if (failed) {
      fill($('lb-state'), A.pill('unreachable', 'bad', 'The last refresh failed'));
      throw failed.reason;
    }
  }

  $('logs-filter').addEventListener('input', () => {
    $('lb-logs')._lines = undefined;
    renderLbLogs();
  });
  $('logs-follow').addEventListener('change', () => renderLbLogs());
  $('lb-logs').addEventListener('scroll', (e) => {
    const box = e.currentTarget;
    if (box._auto) {
      box._auto = false;
      return;
    }
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 8;
    $('logs-follow').checked = atBottom;
  });

  app = A.startApp({ refresh });
})();
