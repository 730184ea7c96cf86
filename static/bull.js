/* andera-lb task board: counts per state as filter chips, a group filter, the task
 * list (newest first) and the timeline of one task (/bull#<id>). Every API string is
 * inserted as text (see common.js). */
(function () {
  'use strict';

  const A = window.AnderaLB;
  const { el, fill, cell, obj, arr, num, str, keyedSync } = A;
  const $ = (id) => document.getElementById(id);

  const STATES = [
    ['', 'all', 'info'],
    ['queued', 'queued', 'idle'],
    ['running', 'running', 'info'],
    ['completed', 'completed', 'ok'],
    ['failed', 'failed', 'bad'],
    ['timed_out', 'timed out', 'warn'],
    ['cancelled', 'cancelled', 'warn'],
    ['retried', 'retried', 'invalid'],
  ];
  const FINISHED = new Set(['completed', 'failed', 'timed_out', 'cancelled']);
  const EVENT_TONES = { received: 'idle', queued: 'warn', dispatched: 'info', retried: 'invalid', finished: 'ok' };

  const params = new URLSearchParams(location.search);
  const filters = {
    state: STATES.some((s) => s[0] === params.get('state')) ? params.get('state') : '',
    group: params.get('group') || '',
    limit: ['100', '200', '500', '1000'].includes(params.get('limit')) ? params.get('limit') : '200',
  };
  let tasks = [];
  let selected = readHash();
  const detailCache = new Map(); // id → {record, error, at}
  let app = null;

  function readHash() {
    const h = location.hash.replace(/^#/, '');
    if (!h) return '';
    try {
      return decodeURIComponent(h);
    } catch (_) {
      return h;
    }
  }

  function saveFilters() {
    const p = new URLSearchParams();
    if (filters.state) p.set('state', filters.state);
    if (filters.group) p.set('group', filters.group);
    if (filters.limit !== '200') p.set('limit', filters.limit);
    const q = p.toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
  }

  // ------------------------------------------------------------------ chips & filters

  function renderChips(counts) {
    const c = obj(counts);
    const all = ['queued', 'running', 'completed', 'failed', 'timed_out', 'cancelled'].reduce((a, k) => a + (num(c[k]) || 0), 0);
    keyedSync(
      $('chips'),
      STATES,
      (s) => s[0] || 'all',
      (s) => {
        const b = el('button', { type: 'button', class: 'chip tone-' + s[2], dataset: { state: s[0] } }, el('i', { class: 'dot' }), s[1], el('span', { class: 'n' }));
        b.addEventListener('click', () => {
          filters.state = s[0];
          saveFilters();
          renderChips(lastCounts);
          if (app) app.refreshNow();
        });
        return b;
      },
      (b, s) => {
        const n = s[0] ? num(c[s[0]]) : all;
        b.setAttribute('aria-pressed', String(filters.state === s[0]));
        b.title = s[0] === 'retried' ? 'Tasks tried more than once (any state)' : s[0] ? 'Only ' + s[1] + ' tasks' : 'Every state';
        cell(b.querySelector('.n'), String(n), () => A.fmtInt(n));
      }
    );
  }
  let lastCounts = {};

  function renderGroups(groups) {
    const sel = $('group');
    const list = arr(groups).map(str);
    if (filters.group && !list.includes(filters.group)) list.push(filters.group);
    const sig = JSON.stringify(list);
    if (sel._sig !== sig) {
      sel._sig = sig;
      fill(sel, el('option', { value: '' }, 'all groups'), list.map((g) => el('option', { value: g }, g)));
    }
    sel.value = filters.group;
  }

  // ------------------------------------------------------------------ task list

  const shortUrl = (u) => str(u).replace(/^https?:\/\//, '');

  function renderList() {
    const body = $('task-body');
    keyedSync(
      body,
      tasks,
      (t) => str(t.id),
      (t, id) => {
        const tr = el('tr', { class: 'clickable', dataset: { id } });
        for (let i = 0; i < 13; i++) tr.appendChild(el('td'));
        ['mono', 'grp', 'mono', 'num', 'num', '', 'stc', 'mono wk', 'num', 'num', 'num', 'num', 'num ago-c'].forEach((c, i) => c && (tr.children[i].className = c));
        tr.addEventListener('click', (e) => {
          if (e.target.closest('a') && !(e.ctrlKey || e.metaKey || e.shiftKey)) {
            e.preventDefault();
          } else if (e.target.closest('a')) {
            return;
          }
          if (String(window.getSelection ? window.getSelection() : '').length) return;
          select(id);
        });
        return tr;
      },
      (tr, t, id) => {
        const td = tr.children;
        tr.classList.toggle('selected', id === selected);
        cell(td[0], id, () => A.taskLink(id));
        cell(td[1], str(t.group), () => str(t.group));
        cell(td[2], str(t.function), () => str(t.function));
        cell(td[3], str(t.contract), () => str(t.contract));
        cell(td[4], str(t.priority), () => str(t.priority));
        cell(td[5], str(t.mode), () => str(t.mode));
        cell(td[6], [t.state, t.outcome, t.error], () => [
          A.taskStatePill(t),
          t.outcome != null && t.outcome !== 'ok' ? el('span', { class: 'outcome', title: t.error ? str(t.error) : null }, str(t.outcome)) : null,
        ]);
        cell(td[7], str(t.worker), () => (t.worker ? el('span', { title: str(t.worker) }, shortUrl(t.worker)) : el('span', { class: 'muted' }, '—')));
        cell(td[8], str(t.attempts), () => el('span', { class: num(t.attempts) > 1 ? 'warn-text' : '' }, str(t.attempts)));
        cell(td[9], str(t.status), () => (t.status == null ? el('span', { class: 'muted' }, '—') : el('span', { class: num(t.status) >= 400 ? 'bad-text' : '' }, str(t.status))));
        cell(td[10], str(t.waitMs), () => A.fmtMs(num(t.waitMs)));
        cell(td[11], str(t.durationMs), () => A.fmtMs(num(t.durationMs)));
        cell(td[12], str(t.receivedAt), () => A.timeAgo(t.receivedAt, '—'));
      }
    );
    $('list-empty').hidden = tasks.length > 0;
    const desc = (filters.state ? STATES.find((s) => s[0] === filters.state)[1] : 'all') + (filters.group ? ' in ' + filters.group : '');
    cell($('list-count'), [tasks.length, desc], () => tasks.length + ' shown · ' + desc);
  }

  // ------------------------------------------------------------------ detail

  function select(id) {
    if (id === selected) return;
    if (id) history.pushState(null, '', location.pathname + location.search + '#' + encodeURIComponent(id));
    else history.pushState(null, '', location.pathname + location.search);
    onHash();
  }

  function onHash() {
    selected = readHash();
    for (const tr of $('task-body').children) tr.classList.toggle('selected', tr.dataset.id === selected);
    renderDetail();
    if (selected) loadDetail(true);
  }

  async function loadDetail(force) {
    const id = selected;
    if (!id) return;
    const inList = tasks.find((t) => str(t.id) === id);
    if (inList) {
      detailCache.set(id, { record: inList, at: Date.now() });
      renderDetail();
      return;
    }
    const cached = detailCache.get(id);
    if (!force && cached && ((cached.record && FINISHED.has(cached.record.state)) || cached.notFound)) return;
    if (cached && cached.loading) return;
    detailCache.set(id, Object.assign({}, cached, { loading: true }));
    let entry;
    try {
      const rec = await A.api('/bull/api/tasks/' + encodeURIComponent(id));
      entry = { record: obj(rec), at: Date.now() };
    } catch (e) {
      if (e instanceof A.AuthError) {
        detailCache.delete(id);
        if (app) app.rejected();
        return;
      }
      entry = e.status === 404 ? { notFound: true, at: Date.now() } : Object.assign({}, cached, { error: e.message, loading: false });
    }
    detailCache.set(id, entry);
    if (selected === id) renderDetail();
  }

  function fmtOffset(ms) {
    if (ms == null) return '';
    return '+' + A.fmtMs(ms);
  }

  function phasesNode(t) {
    const wait = num(t.waitMs);
    const dur = num(t.durationMs);
    if (dur == null || dur <= 0) return null;
    const w = Math.max(0, Math.min(wait || 0, dur));
    const run = dur - w;
    return [
      el('div', { class: 'phases', title: 'wait ' + A.fmtMs(w) + ' · run ' + A.fmtMs(run) }, el('i', { class: 'ph-wait', style: { width: (w / dur) * 100 + '%' } }), el('i', { class: 'ph-run', style: { width: (run / dur) * 100 + '%' } })),
      el('div', { class: 'phases-legend' }, el('span', null, el('i', { class: 'sw', style: { background: 'var(--warn)' } }), 'waiting ' + A.fmtMs(w)), el('span', null, el('i', { class: 'sw', style: { background: 'var(--accent)' } }), 'at the Worker ' + A.fmtMs(run)), el('span', null, 'total ' + A.fmtMs(dur))),
    ];
  }

  function timeFact(iso) {
    const ms = A.parseTime(iso);
    if (ms == null) return el('span', { class: 'muted' }, '—');
    return [el('span', { title: A.fmtAbs(ms) }, new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC')), ' ', el('span', { class: 'muted' }, '(', A.timeAgo(iso), ')')];
  }

  /** The cancel action of a queued or running task, for an admin key only. */
  function cancelButton(t) {
    if (document.body.dataset.role !== 'admin' || (t.state !== 'queued' && t.state !== 'running')) return null;
    return el('button', { type: 'button', class: 'btn small', id: 'detail-cancel', dataset: { id: str(t.id) }, title: 'Cancel this task (DELETE /bull/api/tasks/<id>)' }, 'Cancel task');
  }

  async function cancelTask(id) {
    if (!window.confirm('Cancel task ' + id + '?')) return;
    try {
      await A.apiDelete('/bull/api/tasks/' + encodeURIComponent(id));
    } catch (e) {
      if (e instanceof A.AuthError) {
        if (app) app.rejected();
        return;
      }
      window.alert('Not cancelled: ' + e.message);
    }
    detailCache.delete(id);
    if (app) app.refreshNow();
  }

  function detailNode(t) {
    const received = A.parseTime(t.receivedAt);
    const events = arr(t.timeline).filter(A.isObj);
    const facts = [
      ['Group', str(t.group)],
      ['Function', el('span', { class: 'mono' }, str(t.function))],
      ['Contract', str(t.contract)],
      ['Priority', str(t.priority)],
      ['Mode', str(t.mode)],
      ['Worker', t.worker ? el('span', { class: 'mono' }, str(t.worker)) : el('span', { class: 'muted' }, '—')],
      ['Attempts', str(t.attempts)],
      ['HTTP status', t.status == null ? el('span', { class: 'muted' }, '—') : str(t.status)],
      ['Outcome', t.outcome == null ? el('span', { class: 'muted' }, '—') : str(t.outcome)],
      ['Received', timeFact(t.receivedAt)],
      ['Queued', timeFact(t.queuedAt)],
      ['Dispatched', timeFact(t.dispatchedAt)],
      ['Finished', timeFact(t.finishedAt)],
      ['Wait', A.fmtMs(num(t.waitMs))],
      ['Duration', A.fmtMs(num(t.durationMs))],
    ];
    return [
      el('h2', null, el('span', { class: 'mono', id: 'detail-id' }, str(t.id)), A.taskStatePill(t), el('span', { class: 'spacer' }), cancelButton(t), el('button', { type: 'button', class: 'btn small', id: 'detail-close', title: 'Close (Esc)' }, 'Close')),
      el('p', { class: 'sub' }, str(t.group) + ' / ' + str(t.function) + ' · contract ' + str(t.contract) + ' · priority ' + str(t.priority) + ' · ' + str(t.mode)),
      t.error ? el('div', { class: 'errbox' }, str(t.error)) : null,
      phasesNode(t),
      el('h3', null, 'Timeline'),
      events.length
        ? el(
            'ol',
            { class: 'timeline', id: 'timeline' },
            events.map((ev) => {
              const at = A.parseTime(ev.at);
              const name = str(ev.event);
              let tone = A.lookup(EVENT_TONES, name, 'idle');
              if (name === 'finished' && t.state !== 'completed') tone = t.state === 'timed_out' ? 'warn' : 'bad';
              return el(
                'li',
                { class: 'tone-' + tone, dataset: { event: name } },
                el('i', { class: 'ev-dot' }),
                el('div', { class: 'ev-head' }, el('span', { class: 'ev-name' }, name), el('span', { class: 'ev-off', title: A.fmtAbs(at) }, at != null && received != null ? fmtOffset(at - received) : str(ev.at))),
                ev.detail ? el('div', { class: 'ev-detail' }, str(ev.detail)) : null
              );
            })
          )
        : el('p', { class: 'muted', id: 'timeline' }, 'No event recorded.'),
      el('h3', null, 'Record'),
      el('dl', { class: 'facts' }, facts.map(([k, v]) => [el('dt', null, k), el('dd', null, v)])),
      el('p', { class: 'muted', style: { 'margin-top': '12px', 'font-size': '11px' } }, 'The board keeps no task input or result.'),
    ];
  }

  function renderDetail() {
    const box = $('task-detail');
    const id = selected;
    if (!id) {
      cell(box, 'none', () => el('p', { class: 'muted placeholder' }, 'Select a task to see its timeline.'));
      return;
    }
    const entry = detailCache.get(id);
    if (!entry || (!entry.record && !entry.notFound && !entry.error)) {
      cell(box, ['loading', id], () => el('p', { class: 'muted placeholder' }, 'Loading ', el('span', { class: 'mono' }, id), '…'));
      return;
    }
    if (entry.notFound) {
      cell(box, ['404', id], () => [
        el('h2', null, el('span', { class: 'mono', id: 'detail-id' }, id), A.pill('unknown', 'idle')),
        el('p', { class: 'muted' }, 'This task is not on the board: the id is wrong or the task left the board (only the most recent tasks are kept).'),
      ]);
      return;
    }
    if (!entry.record) {
      cell(box, ['err', id, entry.error], () => [el('h2', null, el('span', { class: 'mono' }, id)), el('p', { class: 'bad-text' }, 'Cannot load the task: ' + str(entry.error))]);
      return;
    }
    // The role is in the signature: the Cancel action appears once whoami answers.
    cell(box, { record: entry.record, role: document.body.dataset.role || '' }, () => detailNode(entry.record));
  }

  // ------------------------------------------------------------------ refresh

  async function refresh() {
    const p = new URLSearchParams();
    if (filters.state) p.set('state', filters.state);
    if (filters.group) p.set('group', filters.group);
    p.set('limit', filters.limit);
    const body = obj(await A.api('/bull/api/tasks?' + p.toString()));
    lastCounts = obj(body.counts);
    tasks = arr(body.tasks).filter((t) => A.isObj(t) && t.id != null);
    renderChips(lastCounts);
    renderGroups(body.groups);
    renderList();
    if (selected) await loadDetail(false);
    renderDetail();
  }

  $('group').addEventListener('change', (e) => {
    filters.group = e.target.value;
    saveFilters();
    if (app) app.refreshNow();
  });
  $('limit').value = filters.limit;
  $('limit').addEventListener('change', (e) => {
    filters.limit = e.target.value;
    saveFilters();
    if (app) app.refreshNow();
  });
  $('goto').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = $('goto-id').value.trim();
    if (id) select(id);
  });
  $('task-detail').addEventListener('click', (e) => {
    if (e.target.closest('#detail-close')) select('');
    const cancel = e.target.closest('#detail-cancel');
    if (cancel) cancelTask(cancel.dataset.id || '');
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && selected && !e.target.closest('input, select')) select('');
  });
  window.addEventListener('hashchange', onHash);
  window.addEventListener('popstate', onHash);

  renderChips({});
  renderDetail();
  app = A.startApp({ refresh });
})();
