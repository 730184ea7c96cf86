/* andera-lb admin pages: shared helpers (key handling, fetch, escaping, formatting,
 * DOM building, the refresh loop). Plain ES2020, no dependencies, no network access
 * other than the admin port's own JSON routes.
 *
 * Safety rule of these pages: every string that comes from the API is inserted as
 * text (text nodes / textContent / attribute values set through the DOM API).
 * Nothing here ever assigns innerHTML. */
(function () {
  'use strict';

  const KEY_NAME = 'andera-lb.key';
  const REFRESH_MS = 2000;
  const REJECTED = 'Key rejected: the load balancer answered 401. Enter the LB key again.';
  const FORBIDDEN = 'This key is valid but opens no operator page (a client key): enter an admin or viewer key.';

  // ---------------------------------------------------------------- escaping

  /** Strict HTML escaping, for the rare case a string must become markup. */
  function escapeHtml(value) {
    return String(value == null ? '' : value).replace(/[&<>"'`=\/]/g, (c) => '&#' + c.charCodeAt(0) + ';');
  }

  // ---------------------------------------------------------------- safe accessors

  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const obj = (v) => (isObj(v) ? v : {});
  const arr = (v) => (Array.isArray(v) ? v : []);
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  /** Any JSON value as display text (strings as they are, the rest as JSON). */
  function str(v) {
    if (v == null) return '';
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    try {
      return JSON.stringify(v);
    } catch (_) {
      return String(v);
    }
  }

  // ---------------------------------------------------------------- DOM building

  /**
   * el('td', {class: 'num', title: 'x'}, 'text', otherNode, [more, children])
   * Strings (and numbers) become text nodes; null/undefined/false are skipped.
   * Attributes are set with setAttribute (values are never parsed as markup);
   * `on*` keys take functions only; `dataset` takes an object.
   */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k.startsWith('on') && typeof v === 'function') {
          node.addEventListener(k.slice(2), v);
        } else if (k === 'dataset' && isObj(v)) {
          for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = str(dv);
        } else if (k === 'style' && isObj(v)) {
          for (const [sk, sv] of Object.entries(v)) node.style.setProperty(sk, str(sv));
        } else if (k === 'text') {
          node.textContent = str(v);
        } else if (v === true) {
          node.setAttribute(k, '');
        } else {
          node.setAttribute(k, str(v));
        }
      }
    }
    append(node, children);
    return node;
  }

  function append(node, children) {
    for (const c of children) {
      if (c == null || c === false) continue;
      if (Array.isArray(c)) append(node, c);
      else if (c instanceof Node) node.appendChild(c);
      else node.appendChild(document.createTextNode(str(c)));
    }
    return node;
  }

  /** Replaces the children of `node` with `children` (same rules as el()). */
  function fill(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  /** Re-renders a cell only when its signature changed (keeps text selection stable). */
  function cell(td, sig, render) {
    const s = typeof sig === 'string' ? sig : JSON.stringify(sig);
    if (td._sig === s) return td;
    td._sig = s;
    return fill(td, render());
  }

  /**
   * Keyed list sync: keeps one child node per key in `container`, in `items` order,
   * creating (create(item, key)), updating (update(node, item, key)) and removing nodes.
   * `skip`: number of leading children of `container` to leave alone.
   */
  function keyedSync(container, items, keyOf, create, update, skip) {
    const map = container._keyed || (container._keyed = new Map());
    const seen = new Set();
    let i = skip || 0; // leading children that are not part of the list (e.g. a <thead>)
    for (const item of items) {
      const k = keyOf(item);
      if (seen.has(k)) continue;
      seen.add(k);
      let node = map.get(k);
      if (!node) {
        node = create(item, k);
        map.set(k, node);
      }
      update(node, item, k);
      const at = container.children[i];
      if (at !== node) container.insertBefore(node, at || null);
      i += 1;
    }
    for (const [k, node] of map) {
      if (!seen.has(k)) {
        node.remove();
        map.delete(k);
      }
    }
  }

  // ---------------------------------------------------------------- formatting

  const nf0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const nf2 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function fmtInt(v) {
    const n = num(v);
    return n == null ? '–' : nf0.format(n);
  }
  function fmtNum(v, digits) {
    const n = num(v);
    if (n == null) return '–';
    if (digits === 2) return nf2.format(n);
    if (digits === 0) return nf0.format(n);
    return nf1.format(n);
  }
  function fmtPct(v) {
    const n = num(v);
    return n == null ? '–' : nf1.format(n) + ' %';
  }
  /** Milliseconds as a short human duration. */
  function fmtMs(v) {
    const ms = num(v);
    if (ms == null) return '–';
    if (ms < 1) return ms <= 0 ? '0 ms' : ms.toFixed(2) + ' ms';
    if (ms < 10) return ms.toFixed(1) + ' ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    if (ms < 10000) return (ms / 1000).toFixed(2) + ' s';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    return fmtSpan(ms / 1000);
  }
  /** Seconds as "3d 4h", "2h 5m", "4m 12s", "12 s". */
  function fmtSpan(v) {
    const s = num(v);
    if (s == null) return '–';
    const t = Math.max(0, Math.floor(s));
    const d = Math.floor(t / 86400);
    const h = Math.floor((t % 86400) / 3600);
    const m = Math.floor((t % 3600) / 60);
    const sec = t % 60;
    if (d) return d + 'd ' + h + 'h';
    if (h) return h + 'h ' + m + 'm';
    if (m) return m + 'm ' + sec + 's';
    return sec + ' s';
  }
  function parseTime(iso) {
    if (typeof iso !== 'string' && typeof iso !== 'number') return null;
    const t = typeof iso === 'number' ? iso : Date.parse(iso);
    return Number.isFinite(t) ? t : null;
  }
  /** "3 s ago", "5m 2s ago", "just now". */
  function fmtAgo(ms) {
    if (ms == null) return 'never';
    const diff = (Date.now() - ms) / 1000;
    if (diff < 1) return 'just now';
    return fmtSpan(diff) + ' ago';
  }
  function fmtAbs(ms) {
    if (ms == null) return '';
    const d = new Date(ms);
    return d.toLocaleString(undefined, { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0') + '  (' + d.toISOString() + ')';
  }
  function fmtClock(ms) {
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  /** A span showing a relative time, kept fresh by the 1 s ticker; absolute time on hover. */
  function timeAgo(iso, never) {
    const ms = parseTime(iso);
    if (ms == null) return el('span', { class: 'muted' }, never || 'never');
    return el('time', { class: 'ago', datetime: new Date(ms).toISOString(), title: fmtAbs(ms), dataset: { ts: ms } }, fmtAgo(ms));
  }

  function tickTimes() {
    for (const n of document.querySelectorAll('[data-ts]')) {
      const ms = Number(n.dataset.ts);
      const t = fmtAgo(ms);
      if (n.textContent !== t) n.textContent = t;
    }
  }
  setInterval(tickTimes, 1000);

  // ---------------------------------------------------------------- small widgets

  /** A coloured status pill; `tone` is one of ok|warn|bad|info|idle|invalid. */
  function pill(text, tone, title) {
    return el('span', { class: 'pill tone-' + (tone || 'idle'), title: title || null }, el('i', { class: 'dot', 'aria-hidden': 'true' }), text);
  }

  /** `map[key]` for own keys only (API strings never reach Object.prototype). */
  const lookup = (map, key, fallback) => (typeof key === 'string' && Object.prototype.hasOwnProperty.call(map, key) ? map[key] : fallback);

  const TASK_TONES = { queued: 'idle', running: 'info', completed: 'ok', failed: 'bad', timed_out: 'warn', cancelled: 'warn' };
  function taskStatePill(t) {
    const state = str(t.state) || 'unknown';
    const tip = [t.outcome ? 'outcome: ' + str(t.outcome) : '', t.error ? 'error: ' + str(t.error) : ''].filter(Boolean).join('\n');
    return pill(state.replace('_', ' '), lookup(TASK_TONES, state, 'idle'), tip || null);
  }

  /** Link to a task on the board. */
  function taskLink(id, text) {
    return el('a', { class: 'mono task-link', href: '/bull#' + encodeURIComponent(str(id)), title: 'Open ' + str(id) + ' on the task board' }, text == null ? str(id) : text);
  }

  // ---------------------------------------------------------------- key handling

  function getKey() {
    try {
      return sessionStorage.getItem(KEY_NAME) || '';
    } catch (_) {
      return '';
    }
  }
  function setKey(k) {
    try {
      sessionStorage.setItem(KEY_NAME, k);
    } catch (_) {
      /* storage disabled: the key lives only as long as this page */
    }
  }
  function clearKey() {
    try {
      sessionStorage.removeItem(KEY_NAME);
    } catch (_) {
      /* ignore */
    }
  }

  // ---------------------------------------------------------------- fetch

  class AuthError extends Error {}
  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** Base64 (standard alphabet, as btoa) of a string's UTF-8 bytes. */
  function b64(s) {
    const bytes = new TextEncoder().encode(str(s));
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  let roleAsked = false;

  /** Shows the key's role (admin, viewer) in the top bar, as text. */
  function showRole(role) {
    if (!role) return;
    let badge = document.getElementById('role');
    if (!badge) {
      const bar = document.querySelector('.topbar');
      if (!bar) return;
      badge = document.createElement('span');
      badge.id = 'role';
      badge.className = 'pill tone-idle';
      badge.title = 'What this key may do here';
      const spacer = bar.querySelector('.spacer');
      bar.insertBefore(badge, spacer ? spacer.nextSibling : null);
    }
    badge.textContent = 'key: ' + role;
    document.body.dataset.role = role;
  }

  /** GET a JSON route with the LB key. 401/403 → clears the key and throws AuthError. */
  async function api(path) {
    const key = getKey();
    if (!key) throw new AuthError('no key');
    let res;
    try {
      res = await fetch(path, { headers: { 'x-lb-auth': key, accept: 'application/json' }, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new HttpError(0, 'the load balancer did not answer (' + (e && e.message ? e.message : 'network error') + ')');
    }
    if (res.status === 401 || res.status === 403) {
      // Only forget the key if it is still the one that was rejected.
      if (getKey() === key) clearKey();
      roleAsked = false;
      throw new AuthError(res.status === 403 ? 'forbidden' : 'rejected');
    }
    const base = path.startsWith('/bull') ? '/bull' : '/dashboard';
    if (!roleAsked && !path.endsWith('/whoami')) {
      roleAsked = true;
      api(base + '/api/whoami').then((who) => showRole(who && who.role), () => { roleAsked = false; });
    }
    let text = '';
    try {
      text = await res.text();
    } catch (_) {
      /* body cut short */
    }
    let body;
    try {
      body = JSON.parse(text);
    } catch (_) {
      body = undefined;
    }
    if (!res.ok) {
      const msg = isObj(body) && typeof body.error === 'string' ? body.error : 'HTTP ' + res.status;
      throw new HttpError(res.status, msg);
    }
    if (body === undefined) throw new HttpError(res.status, path + ' did not answer JSON');
    return body;
  }

  /**
   * DELETE a route with the LB key (the task board's cancel action: an admin key).
   * The key travels in the x-lb-auth header, never a cookie (credentials: 'omit'),
   * so another site cannot make the browser send it (CSRF). 401 clears the key and
   * throws AuthError; 403 (a viewer's key) throws HttpError and keeps the key.
   */
  async function apiDelete(path) {
    const key = getKey();
    if (!key) throw new AuthError('no key');
    let res;
    try {
      res = await fetch(path, { method: 'DELETE', headers: { 'x-lb-auth': key, accept: 'application/json' }, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new HttpError(0, 'the load balancer did not answer (' + (e && e.message ? e.message : 'network error') + ')');
    }
    if (res.status === 401) {
      if (getKey() === key) clearKey();
      throw new AuthError('rejected');
    }
    let body;
    try {
      body = JSON.parse(await res.text());
    } catch (_) {
      body = undefined;
    }
    if (!res.ok) {
      const msg = isObj(body) && typeof body.error === 'string' ? body.error : 'HTTP ' + res.status;
      throw new HttpError(res.status, msg);
    }
    return obj(body);
  }

  // ---------------------------------------------------------------- app shell

  /**
   * Wires the common page chrome: key gate, refresh loop (every 2 s), Pause/Resume,
   * error banner, "updated … ago". `refresh()` fetches and renders; it may throw.
   */
  function startApp(opts) {
    const refresh = opts.refresh;
    const interval = opts.intervalMs || REFRESH_MS;
    const pauseBtn = document.getElementById('pause');
    const lockBtn = document.getElementById('lock');
    const banner = document.getElementById('banner');
    const updated = document.getElementById('updated');
    const main = document.getElementById('main');
    let paused = false;
    let timer = null;
    let running = false;
    let gate = null;
    let again = false;

    function showBanner(text, tone) {
      if (!banner) return;
      if (!text) {
        banner.hidden = true;
        banner.replaceChildren();
        return;
      }
      banner.hidden = false;
      banner.className = 'banner tone-' + (tone || 'bad');
      fill(banner, el('strong', null, tone === 'warn' ? 'Notice' : 'Problem'), ' ', text);
    }

    function setUpdated(ok) {
      if (!updated) return;
      if (ok) {
        const now = Date.now();
        fill(updated, 'updated ', el('time', { class: 'ago', title: fmtAbs(now), dataset: { ts: now } }, fmtAgo(now)));
      }
      updated.classList.toggle('stale', !ok);
    }

    function buildGate() {
      const input = el('input', { id: 'key-input', name: 'key', type: 'password', autocomplete: 'current-password', spellcheck: 'false', required: true, placeholder: 'LB_AUTH_KEY' });
      const msg = el('p', { id: 'key-msg', class: 'key-msg', role: 'status', 'aria-live': 'polite' });
      const form = el(
        'form',
        { id: 'key-form', class: 'key-form', autocomplete: 'on' },
        el('h2', null, 'Load balancer key'),
        el('p', { class: 'muted' }, 'These pages need the load balancer key (LB_AUTH_KEY). It is kept for this browser tab only and sent as the x-lb-auth header.'),
        el('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'andera-lb', hidden: true, 'aria-hidden': 'true', tabindex: '-1' }),
        el('label', { for: 'key-input' }, 'Key'),
        el('div', { class: 'key-row' }, input, el('button', { type: 'submit', class: 'btn primary', id: 'key-submit' }, 'Unlock')),
        msg
      );
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        const k = input.value.trim();
        if (!k) {
          msg.textContent = 'Enter the key.';
          return;
        }
        setKey(k);
        input.value = '';
        hideGate();
        kick();
      });
      const wrap = el('div', { id: 'key-gate', class: 'key-gate', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'key-title' }, form);
      form.querySelector('h2').id = 'key-title';
      document.body.appendChild(wrap);
      return { wrap, input, msg };
    }

    function showGate(message) {
      if (!gate) gate = buildGate();
      gate.wrap.hidden = false;
      gate.msg.textContent = message || '';
      gate.msg.classList.toggle('bad', !!message);
      if (main) main.classList.add('locked');
      showBanner(null);
      stop();
      setTimeout(() => gate && gate.input.focus(), 0);
    }
    function hideGate() {
      if (gate) gate.wrap.hidden = true;
      if (main) main.classList.remove('locked');
    }

    function stop() {
      if (timer) clearTimeout(timer);
      timer = null;
    }
    function schedule() {
      stop();
      if (!paused && getKey()) timer = setTimeout(tick, interval);
    }

    async function tick() {
      timer = null;
      if (running) {
        again = true;
        return;
      }
      if (!getKey()) {
        showGate('');
        return;
      }
      running = true;
      try {
        await refresh();
        showBanner(null);
        setUpdated(true);
        if (lockBtn) lockBtn.hidden = false;
      } catch (e) {
        if (e instanceof AuthError) {
          running = false;
          showGate(e.message === 'rejected' ? REJECTED : e.message === 'forbidden' ? FORBIDDEN : '');
          return;
        }
        setUpdated(false);
        const what = e instanceof HttpError ? e.message : 'unexpected error: ' + (e && e.message ? e.message : str(e));
        showBanner('Cannot refresh: ' + what + '. Showing the last data; retrying every ' + interval / 1000 + ' s.', 'bad');
        if (!(e instanceof HttpError)) console.warn('andera-lb page refresh failed', e); // eslint-disable-line no-console
      }
      running = false;
      if (again) {
        again = false;
        kick();
        return;
      }
      schedule();
    }

    function kick() {
      stop();
      tick();
    }

    function setPaused(p) {
      paused = p;
      if (pauseBtn) {
        pauseBtn.textContent = p ? 'Resume' : 'Pause';
        pauseBtn.setAttribute('aria-pressed', String(p));
        pauseBtn.classList.toggle('paused', p);
        pauseBtn.title = p ? 'Resume the automatic refresh (every ' + interval / 1000 + ' s)' : 'Pause the automatic refresh';
      }
      document.body.classList.toggle('is-paused', p);
      if (p) stop();
      else kick();
    }

    if (pauseBtn) pauseBtn.addEventListener('click', () => setPaused(!paused));
    if (lockBtn) {
      lockBtn.addEventListener('click', () => {
        clearKey();
        showGate('Key forgotten for this tab.');
      });
    }
    document.addEventListener('keydown', (e) => {
      if (e.key === ' ' && e.target === document.body) {
        e.preventDefault();
        setPaused(!paused);
      }
    });

    if (getKey()) kick();
    else showGate('');

    return {
      refreshNow: () => {
        if (getKey()) kick();
      },
      /** A request outside refresh() got a 401: ask for the key again. */
      rejected: () => showGate(REJECTED),
      isPaused: () => paused,
    };
  }

  window.AnderaLB = {
    escapeHtml,
    lookup,
    isObj,
    obj,
    arr,
    num,
    str,
    el,
    fill,
    cell,
    keyedSync,
    fmtInt,
    fmtNum,
    fmtPct,
    fmtMs,
    fmtSpan,
    fmtAgo,
    fmtAbs,
    fmtClock,
    parseTime,
    timeAgo,
    tickTimes,
    pill,
    taskStatePill,
    taskLink,
    getKey,
    setKey,
    clearKey,
    b64,
    api,
    apiDelete,
    AuthError,
    HttpError,
    startApp,
    KEY_NAME,
  };
})();
