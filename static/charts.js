/* andera-lb dashboard: the live charts (canvas time-series line charts with a fixed
 * window of up to 5 minutes, hover crosshair and tooltip) and the rate/latency
 * formatting they share with the KPI tiles. Plain ES2020, no dependency but common.js;
 * loaded after common.js and before dashboard.js. Every API string is inserted as text
 * (see common.js). */
(function () {
  'use strict';

  const A = window.AnderaLB;
  const { el, fill, cell, num } = A;
  const $ = (id) => document.getElementById(id);

  const WINDOW = 300; // seconds shown by the charts

  function cssVar(name, fallback) {
    const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return v || fallback;
  }

  function niceScale(max, minTop, integer) {
    const top0 = Math.max(max, minTop);
    let step = top0 / 4;
    const mag = Math.pow(10, Math.floor(Math.log10(step)));
    const norm = step / mag;
    step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * mag;
    if (integer) step = Math.max(1, Math.round(step));
    const top = Math.ceil(top0 / step - 1e-9) * step;
    const ticks = [];
    for (let v = 0; v <= top + step / 1000; v += step) ticks.push(v);
    return { top, ticks };
  }

  /** A small time-series line chart on a canvas: fixed 5-minute window, y from 0. */
  class TimeChart {
    constructor(fig, opts) {
      this.fig = fig;
      this.canvas = fig.querySelector('canvas');
      this.legend = fig.querySelector('.legend');
      this.opts = opts;
      this.points = [];
      this.hoverX = null;
      this.tip = $('chart-tip');
      if (window.ResizeObserver) new ResizeObserver(() => this.draw()).observe(this.canvas);
      this.canvas.addEventListener('mousemove', (e) => {
        const r = this.canvas.getBoundingClientRect();
        this.hoverX = e.clientX - r.left;
        this.hoverPage = { x: e.clientX, y: e.clientY };
        this.draw();
      });
      this.canvas.addEventListener('mouseleave', () => {
        this.hoverX = null;
        this.tip.hidden = true;
        this.draw();
      });
    }

    set(points) {
      this.points = points;
      this.draw();
      this.renderLegend();
    }

    renderLegend() {
      const last = this.points[this.points.length - 1];
      const parts = this.opts.series.map((s) => {
        const v = last ? s.value(last) : null;
        return el('span', { class: 'lg' }, el('i', { class: 'sw', style: { background: s.color } }), s.label + ' ', el('b', null, v == null ? '–' : this.opts.fmt(v)));
      });
      cell(this.legend, parts.map((p) => p.textContent).join('|'), () => parts);
    }

    draw() {
      const c = this.canvas;
      const w = c.clientWidth;
      const h = c.clientHeight;
      if (!w || !h) return;
      const dpr = window.devicePixelRatio || 1;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const ctx = c.getContext('2d');
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const m = { l: 50, r: 10, t: 8, b: 20 };
      const pw = w - m.l - m.r;
      const ph = h - m.t - m.b;
      const pts = this.points;
      const tEnd = pts.length ? num(pts[pts.length - 1].t) || Math.floor(Date.now() / 1000) : Math.floor(Date.now() / 1000);
      // the window grows with the data (1 to 5 minutes), so a young LB fills the chart
      const tFirst = pts.length ? num(pts[0].t) || tEnd : tEnd;
      const win = Math.min(WINDOW, Math.max(60, Math.ceil((tEnd - tFirst + 1) / 30) * 30));
      const tStart = tEnd - win + 1;
      const tickStep = win <= 60 ? 10 : win <= 120 ? 20 : win <= 180 ? 30 : 60;
      let max = 0;
      for (const p of pts) {
        for (const s of this.opts.series) {
          const v = s.value(p);
          if (v != null && v > max) max = v;
        }
      }
      const { top, ticks } = niceScale(max, this.opts.minTop, this.opts.integer);
      const x = (t) => m.l + ((t - tStart) / (win - 1)) * pw;
      const y = (v) => m.t + ph - (Math.min(v, top) / top) * ph;
      const grid = cssVar('--grid', '#243042');
      const muted = cssVar('--muted', '#8b96a5');
      ctx.font = '11px ' + cssVar('--font', 'system-ui, sans-serif');
      ctx.lineWidth = 1;
      // horizontal grid and y labels
      ctx.textAlign = 'right';
      ctx.textBaseline = 'middle';
      for (const v of ticks) {
        const yy = Math.round(y(v)) + 0.5;
        ctx.strokeStyle = grid;
        ctx.beginPath();
        ctx.moveTo(m.l, yy);
        ctx.lineTo(m.l + pw, yy);
        ctx.stroke();
        ctx.fillStyle = muted;
        ctx.fillText(this.opts.axis(v), m.l - 6, yy);
      }
      // vertical grid each minute, clock labels
      ctx.textAlign = 'center';
      ctx.textBaseline = 'top';
      let lastRight = -Infinity;
      for (let t = Math.ceil(tStart / tickStep) * tickStep; t <= tEnd; t += tickStep) {
        const xx = Math.round(x(t)) + 0.5;
        ctx.strokeStyle = grid;
        ctx.beginPath();
        ctx.moveTo(xx, m.t);
        ctx.lineTo(xx, m.t + ph);
        ctx.stroke();
        ctx.fillStyle = muted;
        const d = new Date(t * 1000);
        const label = tickStep < 60 ? A.fmtClock(t * 1000) : String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
        const half = ctx.measureText(label).width / 2;
        if (xx - half > lastRight + 8 && xx + half <= w - 2) {
          ctx.fillText(label, xx, m.t + ph + 5);
          lastRight = xx + half;
        }
      }
      if (!pts.length) {
        ctx.fillStyle = muted;
        ctx.textAlign = 'center';
        ctx.textBaseline = 'middle';
        ctx.fillText('waiting for samples…', m.l + pw / 2, m.t + ph / 2);
        return;
      }
      ctx.save();
      ctx.beginPath();
      ctx.rect(m.l, m.t - 2, pw + 2, ph + 4);
      ctx.clip();
      for (const s of this.opts.series) {
        if (s.bars) {
          ctx.fillStyle = s.color;
          const bw = Math.max(1, pw / win - 0.5);
          for (const p of pts) {
            const v = s.value(p);
            if (!v) continue;
            ctx.fillRect(x(p.t) - bw / 2, y(v), bw, m.t + ph - y(v));
          }
          continue;
        }
        // split into runs (a gap > 2 s or a null value breaks the line)
        const runs = [];
        let run = [];
        let prevT = null;
        for (const p of pts) {
          const v = s.value(p);
          const t = num(p.t);
          if (v == null || t == null || (prevT != null && t - prevT > 2.5)) {
            if (run.length) runs.push(run);
            run = [];
          }
          if (v != null && t != null) run.push([x(t), y(v)]);
          prevT = t;
        }
        if (run.length) runs.push(run);
        for (const r of runs) {
          if (s.fill) {
            ctx.globalAlpha = 0.16;
            ctx.fillStyle = s.color;
            ctx.beginPath();
            ctx.moveTo(r[0][0], m.t + ph);
            for (const [px, py] of r) ctx.lineTo(px, py);
            ctx.lineTo(r[r.length - 1][0], m.t + ph);
            ctx.closePath();
            ctx.fill();
            ctx.globalAlpha = 1;
          }
          ctx.strokeStyle = s.color;
          ctx.lineWidth = 1.6;
          ctx.lineJoin = 'round';
          ctx.beginPath();
          r.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
          if (r.length === 1) ctx.arc(r[0][0], r[0][1], 1.5, 0, Math.PI * 2);
          ctx.stroke();
        }
      }
      ctx.restore();
      // axes
      ctx.strokeStyle = cssVar('--border', '#2b3646');
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(m.l + 0.5, m.t);
      ctx.lineTo(m.l + 0.5, m.t + ph + 0.5);
      ctx.lineTo(m.l + pw, m.t + ph + 0.5);
      ctx.stroke();
      // hover crosshair and tooltip
      if (this.hoverX != null && this.hoverX >= m.l && this.hoverX <= m.l + pw) {
        const tHover = tStart + ((this.hoverX - m.l) / pw) * (win - 1);
        let best = null;
        for (const p of pts) if (best == null || Math.abs(p.t - tHover) < Math.abs(best.t - tHover)) best = p;
        if (best && Math.abs(best.t - tHover) <= 3) {
          const xx = Math.round(x(best.t)) + 0.5;
          ctx.strokeStyle = muted;
          ctx.setLineDash([3, 3]);
          ctx.beginPath();
          ctx.moveTo(xx, m.t);
          ctx.lineTo(xx, m.t + ph);
          ctx.stroke();
          ctx.setLineDash([]);
          const lines = [el('div', { class: 'tip-t' }, A.fmtClock(best.t * 1000))];
          for (const s of this.opts.series) {
            const v = s.value(best);
            if (v != null && !s.bars) {
              ctx.fillStyle = s.color;
              ctx.beginPath();
              ctx.arc(xx, y(v), 3, 0, Math.PI * 2);
              ctx.fill();
            }
            lines.push(el('div', null, el('i', { class: 'sw', style: { background: s.color } }), s.label + ' ', el('b', null, v == null ? '–' : this.opts.fmt(v))));
          }
          fill(this.tip, lines);
          this.tip.hidden = false;
          const tw = this.tip.offsetWidth;
          const px = this.hoverPage.x + 14 + tw > window.innerWidth ? this.hoverPage.x - tw - 14 : this.hoverPage.x + 14;
          this.tip.style.left = px + window.scrollX + 'px';
          this.tip.style.top = this.hoverPage.y + window.scrollY + 12 + 'px';
        } else {
          this.tip.hidden = true;
        }
      }
    }
  }

  const fmtRate = (v) => (v >= 100 ? Math.round(v) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + '/s';
  const fmtLat = (ms) => A.fmtMs(ms);
  const axisLat = (ms) => (ms >= 1000 ? +(ms / 1000).toFixed(2) + ' s' : +ms.toFixed(ms < 10 ? 1 : 0) + ' ms');
  const lat = (k) => (p) => (num(p.throughput) > 0 && num(p[k]) != null ? p[k] * 1000 : null);

  function makeCharts() {
    const c = {
      accent: cssVar('--accent', '#4ea1ff'),
      ok: cssVar('--ok', '#3fb950'),
      warn: cssVar('--warn', '#d29922'),
      bad: cssVar('--bad', '#f85149'),
      violet: cssVar('--violet', '#a371f7'),
    };
    return {
      throughput: new TimeChart($('chart-throughput'), {
        series: [
          { label: 'done', color: c.accent, fill: true, value: (p) => num(p.throughput) },
          { label: 'errors', color: c.bad, bars: true, value: (p) => num(p.errors) },
        ],
        minTop: 1,
        axis: (v) => +v.toFixed(2) + '/s',
        fmt: (v) => fmtRate(v),
      }),
      latency: new TimeChart($('chart-latency'), {
        series: [
          { label: 'p50', color: c.ok, value: lat('p50') },
          { label: 'p95', color: c.warn, value: lat('p95') },
          { label: 'p99', color: c.bad, value: lat('p99') },
        ],
        minTop: 10,
        axis: axisLat,
        fmt: fmtLat,
      }),
      queue: new TimeChart($('chart-queue'), {
        series: [{ label: 'depth', color: c.violet, fill: true, value: (p) => num(p.queueDepth) }],
        minTop: 4,
        integer: true,
        axis: (v) => A.fmtInt(v),
        fmt: (v) => A.fmtInt(v),
      }),
    };
  }

  window.AnderaCharts = {
    cssVar,
    niceScale,
    TimeChart,
    makeCharts,
    fmtRate,
    fmtLat,
    axisLat,
  };
})();
