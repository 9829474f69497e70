// The mishards operator's console. Plain script, no dependencies, no build step: it polls the admin
// listener's JSON (/cluster, /live, /requests, /slow, /requests/{trace}, /collections, /console/info,
// /console/faults) and draws the page with DOM nodes and SVG. Text from the gateway (collection names,
// reasons, tags) only ever goes in as textContent.
'use strict';

// Errors the page meets, for tests and for the status line: script errors, failed resources, rejected
// promises and console.error calls.
window.__consoleErrors = [];
window.addEventListener('error', (e) => {
  const what = e.message || (e.target && (e.target.src || e.target.href)) || 'error';
  window.__consoleErrors.push(String(what));
}, true);
window.addEventListener('unhandledrejection', (e) => {
  window.__consoleErrors.push('unhandled rejection: ' + String(e.reason));
});
(() => {
  const original = console.error.bind(console);
  console.error = (...args) => {
    window.__consoleErrors.push(args.map(String).join(' '));
    original(...args);
  };
})();

(() => {
  const state = {
    info: null,
    // node → {row data} of every read node seen since the page loaded, to show the ones that left.
    seen: new Map(),
    tab: 'recent',
    selected: null,
    token: null,
    refreshes: 0,
  };
  // At most this many departed nodes are listed as retired.
  const MAX_RETIRED = 32;
  const CHART_SECONDS = 300;
  const SVG = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  // el('td', {class: 'num', data: {node: 'x'}}, 'text', child…)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'data') for (const [k, v] of Object.entries(value)) node.dataset[k] = String(v);
      else if (key === 'title') node.title = String(value);
      else if (key === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // The gateway did not answer, or answered an error: news for the status line, not a bug of the page.
  class GatewayError extends Error {}

  async function getJSON(path, options) {
    let answer;
    try {
      answer = await fetch(path, Object.assign({ cache: 'no-store' }, options || {}));
    } catch (e) {
      throw new GatewayError(`${path}: the admin listener is unreachable (${e.message || e})`);
    }
    let body = null;
    try {
      body = await answer.json();
    } catch (_) {
      body = null;
    }
    if (!answer.ok) {
      const why = body && body.error ? body.error : answer.statusText;
      throw new GatewayError(`${path} answered ${answer.status}: ${why}`);
    }
    return body;
  }

  const num = (x, digits) => (x === null || x === undefined ? '–' : Number(x).toFixed(digits === undefined ? 0 : digits));
  const ms = (x) => (x === null || x === undefined ? '–' : x < 10 ? Number(x).toFixed(2) : x < 100 ? Number(x).toFixed(1) : Number(x).toFixed(0));
  function bytes(n) {
    if (!(n >= 0)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
  }
  const clock = (unixMs) => new Date(unixMs).toLocaleTimeString([], { hour12: false });

  function setStatus(text, bad) {
    const s = $('status');
    s.textContent = text;
    s.classList.toggle('bad', !!bad);
  }

  // ---- cluster -------------------------------------------------------------------------------

  function badge(stateName) {
    return el('span', { class: `badge state-${stateName}` }, stateName);
  }

  function nodeRow(n, role, retiredAt) {
    const stateName = retiredAt ? 'retired' : n.state;
    const detail = retiredAt
      ? `left the membership at ${clock(retiredAt)}`
      : [n.version, n.reason].filter(Boolean).join(' · ');
    return el('tr', { data: { node: n.node, role, state: stateName } },
      el('td', { class: 'mono' }, n.node),
      el('td', null, role),
      el('td', { class: 'state' }, badge(stateName)),
      el('td', { class: 'num' }, num(n.in_flight)),
      el('td', { class: 'num' }, ms(n.latency_ewma_ms)),
      el('td', { class: 'num' }, ms(n.latency_p95_ms)),
      el('td', { class: 'num' }, num(n.requests)),
      el('td', { class: 'num' }, num(n.errors)),
      el('td', { class: 'num' }, num(n.search_calls)),
      el('td', { class: 'num' }, num(n.batched_searches)),
      el('td', { class: 'num' }, num(n.restarts)),
      el('td', { class: 'num' }, role === 'read' ? num(n.files_owned) : ''),
      el('td', { class: 'detail' }, detail));
  }

  function card(title, value, ...lines) {
    return el('div', { class: 'card' },
      el('div', { class: 'card-title' }, title),
      el('div', { class: 'card-value' }, value),
      ...lines.filter(Boolean).map((l) => el('div', { class: 'card-line' }, l)));
  }

  function renderCluster(c) {
    const now = Date.now();
    const current = new Set(c.read_nodes.map((n) => n.node));
    for (const n of c.read_nodes) state.seen.set(n.node, { row: n, retiredAt: null });
    for (const [node, entry] of state.seen) {
      if (!current.has(node) && !entry.retiredAt) entry.retiredAt = now;
    }
    const retired = [...state.seen.entries()].filter(([, e]) => e.retiredAt)
      .sort((a, b) => b[1].retiredAt - a[1].retiredAt);
    for (const [node] of retired.slice(MAX_RETIRED)) state.seen.delete(node);

    const rows = [nodeRow(c.write_node, 'write', null)];
    for (const n of c.read_nodes) rows.push(nodeRow(n, 'read', null));
    for (const [, e] of retired.slice(0, MAX_RETIRED)) rows.push(nodeRow(e.row, 'read', e.retiredAt));
    $('nodes-body').replaceChildren(...rows);

    const healthy = c.read_nodes.filter((n) => n.state === 'healthy').length;
    const m = c.metadata;
    const r = c.router;
    const d = c.discovery || {};
    const i = c.inspector || {};
    const source = state.info ? state.info.discovery_source : '';
    $('cluster-cards').replaceChildren(
      card('read nodes', `${healthy} / ${c.read_nodes.length} healthy`,
        `write node ${c.write_node.state}`),
      card('metadata', `epoch ${m.epoch}${m.stale ? ' (stale)' : ''}`,
        `poll lag ${num(m.lag_seconds, 1)} s · ${m.collections} collections · ${m.files} files`,
        `${m.polls} polls · ${m.failures} failures · ${m.outages} outages · ${m.restarts} restarts`),
      card('discovery', `${source || 'source'} · epoch ${d.epoch}`,
        `${d.nodes} nodes · ${d.restarts} restarts`),
      card('routing', `${r.kind} · membership ${r.membership_epoch}`,
        `snapshot ${r.snapshot_epoch}${r.snapshot_stale ? ' (stale)' : ''} · ${r.placement_builds} placements · ${r.restarts} restarts`),
      card('searches', `${num(i.recorded)} recorded`,
        `${num(i.slow)} slow (≥ ${num(i.slow_query_ms)} ms) · keeps ${num(i.keep)}`));
  }

  async function refreshCluster() {
    const c = await getJSON('/cluster');
    renderCluster(c);
  }

  // ---- live charts ---------------------------------------------------------------------------

  function niceCeiling(x) {
    if (!(x > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= x) return m * step;
    return 10 * step;
  }

  // Draws `series` ([{key, label, cls, scale}]) of `samples` on `target`, the last CHART_SECONDS.
  function drawChart(target, samples, series, unit) {
    const W = 420, H = 170, L = 44, R = 8, T = 10, B = 34;
    const end = samples.length ? samples[samples.length - 1].t : Date.now();
    const start = end - CHART_SECONDS * 1000;
    const value = (s, k) => (s[k.key] === null || s[k.key] === undefined ? null : s[k.key] * (k.scale || 1));
    let top = 0;
    for (const s of samples) for (const k of series) { const v = value(s, k); if (v !== null && v > top) top = v; }
    top = niceCeiling(top);
    const x = (t) => L + ((t - start) / (end - start)) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const parts = [];
    for (const f of [0, 0.5, 1]) {
      parts.push(svg('line', { x1: L, x2: W - R, y1: y(top * f), y2: y(top * f), class: 'gridline' }));
      parts.push(svg('text', { x: L - 4, y: y(top * f) + 4, class: 'axis', 'text-anchor': 'end' },
        `${+(top * f).toPrecision(3)}${f === 1 ? unit : ''}`));
    }
    parts.push(svg('text', { x: L, y: H - B + 14, class: 'axis' }, `-${CHART_SECONDS / 60} min`));
    parts.push(svg('text', { x: W - R, y: H - B + 14, class: 'axis', 'text-anchor': 'end' }, 'now'));
    let legendX = L;
    for (const k of series) {
      // A gap in the data (no value that second) breaks the line; a lone point is a dot.
      const runs = [[]];
      for (const s of samples) {
        if (s.t < start) continue;
        const v = value(s, k);
        if (v === null) { if (runs[runs.length - 1].length) runs.push([]); continue; }
        runs[runs.length - 1].push([x(s.t), y(v)]);
      }
      let d = '';
      for (const run of runs) {
        if (run.length === 1) {
          parts.push(svg('circle', { cx: run[0][0].toFixed(1), cy: run[0][1].toFixed(1), r: 2, class: `dot ${k.cls}` }));
        } else if (run.length > 1) {
          d += run.map(([px, py], i) => `${i ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`).join('');
        }
      }
      if (d) parts.push(svg('path', { d, class: `line ${k.cls}` }));
      // The legend shows the newest value there is.
      let last = null;
      for (let j = samples.length - 1; j >= 0 && last === null; j -= 1) last = value(samples[j], k);
      parts.push(svg('rect', { x: legendX, y: H - 12, width: 10, height: 4, class: `swatch ${k.cls}` }));
      const label = svg('text', { x: legendX + 14, y: H - 7, class: 'legend' },
        `${k.label} ${last === null ? '–' : +last.toPrecision(3)}`);
      parts.push(label);
      legendX += 14 + 7.2 * label.textContent.length + 12;
    }
    target.replaceChildren(...parts);
  }

  async function refreshLive() {
    const live = await getJSON(`/live?seconds=${CHART_SECONDS}`);
    const samples = live.samples || [];
    $('charts-window').textContent = `last ${CHART_SECONDS / 60} minutes, one point a second`;
    drawChart($('chart-qps'), samples, [
      { key: 'qps', label: 'all RPCs', cls: 's1' },
      { key: 'search_qps', label: 'searches', cls: 's2' },
    ], '/s');
    drawChart($('chart-latency'), samples, [
      { key: 'search_p50_ms', label: 'p50', cls: 's1' },
      { key: 'search_p99_ms', label: 'p99', cls: 's3' },
    ], ' ms');
    drawChart($('chart-errors'), samples, [
      { key: 'error_rate', label: 'errors', cls: 's3', scale: 100 },
    ], '%');
  }

  // ---- requests and the waterfall ------------------------------------------------------------

  function statusCell(m) {
    return m.code === 0
      ? el('span', { class: 'badge ok' }, 'ok')
      : el('span', { class: 'badge failed', title: m.reason }, `code ${m.code}`);
  }

  function renderRequests(doc) {
    const rows = (doc.requests || []).slice(0, 100).map((m) => {
      const attempts = m.nodes.reduce((n, x) => n + x.attempts.length, 0);
      return el('tr', {
        data: { trace: m.trace_id },
        class: m.trace_id === state.selected ? 'selected' : null,
        onclick: () => selectRequest(m.trace_id),
      },
      el('td', null, clock(m.started_unix_ms)),
      el('td', { class: 'mono', title: m.trace_id }, m.trace_id.slice(0, 12) + '…'),
      el('td', null, m.collection),
      el('td', { class: 'num' }, `${m.nq}×${m.topk}`),
      el('td', { class: 'num' }, m.files),
      el('td', { class: 'num', title: `${attempts} attempts` }, m.nodes.length),
      el('td', { class: 'num' }, ms(m.total_ms)),
      el('td', null, statusCell(m)));
    });
    $('requests-body').replaceChildren(...rows);
    $('requests-note').textContent = state.tab === 'slow'
      ? `searches of at least ${doc.slow_query_ms} ms, newest first`
      : `the last ${doc.count} searches, newest first (keeps ${doc.keep})`;
  }

  async function refreshRequests() {
    const path = state.tab === 'slow' ? '/slow?limit=100' : '/requests?limit=100';
    renderRequests(await getJSON(path));
  }

  function fileList(ids) {
    if (!ids || !ids.length) return '';
    const shown = ids.slice(0, 8).join(', ');
    return ids.length > 8 ? `${shown}, … (${ids.length})` : shown;
  }

  // One bar on the time axis, from `from` to `to` ms of a search lasting `total` ms.
  function bar(from, to, total, cls) {
    const track = el('div', { class: 'track' });
    const b = el('div', { class: `bar ${cls}` });
    const left = total > 0 ? Math.max(0, Math.min(100, (from / total) * 100)) : 0;
    const width = total > 0 ? Math.max(0.4, Math.min(100 - left, ((to - from) / total) * 100)) : 100;
    b.style.left = `${left}%`;
    b.style.width = `${width}%`;
    track.append(b);
    return track;
  }

  function renderWaterfall(m) {
    const total = Math.max(m.total_ms, 0.001);
    const info = state.info || {};
    const head = el('div', { class: 'wf-head' },
      el('div', null, el('strong', null, m.collection), ` · ${m.rpc} · nq ${m.nq} · topk ${m.topk} · `,
        statusCell(m), m.code === 0 ? null : el('span', { class: 'reason' }, ` ${m.reason}`)),
      el('div', { class: 'sub' },
        `trace ${m.trace_id} · started ${clock(m.started_unix_ms)} · total ${ms(m.total_ms)} ms · plan ${ms(m.plan_ms)} ms · merge ${ms(m.merge_ms)} ms · snapshot ${m.epoch}${m.stale_snapshot ? ' (stale)' : ''} · ${m.files} files`),
      info.tracing && info.jaeger_url
        ? el('a', { href: `${info.jaeger_url}/trace/${m.trace_id}`, target: '_blank', rel: 'noopener noreferrer', class: 'jaeger' }, 'open the trace in Jaeger')
        : el('span', { class: 'sub' }, info.tracing ? '' : 'tracing is off: no Jaeger trace'));

    const axis = el('div', { class: 'wf-row wf-axis' }, el('div', { class: 'wf-label' }, ''),
      (() => {
        const t = el('div', { class: 'track axis' });
        for (const f of [0, 0.25, 0.5, 0.75, 1]) {
          const tick = el('span', { class: 'tick' }, `${ms(total * f)} ms`);
          tick.style.left = `${f * 100}%`;
          t.append(tick);
        }
        return t;
      })(), el('div', { class: 'wf-meta' }, ''));

    const rows = [axis];
    rows.push(el('div', { class: 'wf-row wf-phase' },
      el('div', { class: 'wf-label' }, 'plan'), bar(0, m.plan_ms, total, 'plan'),
      el('div', { class: 'wf-meta' }, `${ms(m.plan_ms)} ms`)));
    const attempts = [];
    for (const n of m.nodes) for (const a of n.attempts) attempts.push({ node: n.node, a });
    attempts.sort((p, q) => p.a.started_ms - q.a.started_ms);
    for (const { node, a } of attempts) {
      const title = [`${node}`, `round ${a.round}, ${a.why}, ${a.outcome}`,
        `files ${a.files.join(', ')}`, a.reloaded.length ? `reloaded ${a.reloaded.join(', ')}` : null,
        a.batch > 1 ? `shared one node call with ${a.batch - 1} other searches` : null,
        a.reason || null].filter(Boolean).join('\n');
      rows.push(el('div', {
        class: `wf-row wf-attempt outcome-${a.outcome}`,
        data: { node, kind: a.why, outcome: a.outcome, round: a.round },
        title,
      },
      el('div', { class: 'wf-label' }, el('span', { class: 'mono' }, node), ' ',
        el('span', { class: `kind kind-${a.why}` }, a.why), a.round ? ` r${a.round}` : ''),
      bar(a.started_ms, a.started_ms + a.latency_ms, total, `attempt ${a.why} ${a.outcome}`),
      el('div', { class: 'wf-meta' },
        el('span', { class: `badge outcome ${a.outcome}` }, a.outcome), ` ${ms(a.latency_ms)} ms · `,
        `${a.files.length} file${a.files.length === 1 ? '' : 's'} [${fileList(a.files)}]`,
        a.reloaded.length ? ` · reloaded ${a.reloaded.length}` : '',
        a.batch > 1 ? ` · batch of ${a.batch}` : '',
        a.reason ? el('div', { class: 'reason' }, a.reason) : null)));
    }
    rows.push(el('div', { class: 'wf-row wf-phase' },
      el('div', { class: 'wf-label' }, 'merge'), bar(m.total_ms - m.merge_ms, m.total_ms, total, 'merge'),
      el('div', { class: 'wf-meta' }, `${ms(m.merge_ms)} ms`)));
    if (!attempts.length) {
      rows.push(el('p', { class: 'hint' }, 'No node was asked (no files, or refused before fan-out).'));
    }
    $('waterfall').replaceChildren(head, el('div', { class: 'wf', data: { trace: m.trace_id } }, ...rows));
  }

  async function selectRequest(traceId) {
    state.selected = traceId;
    for (const row of $('requests-body').children) {
      row.classList.toggle('selected', row.dataset.trace === traceId);
    }
    try {
      renderWaterfall(await getJSON(`/requests/${traceId}`));
    } catch (e) {
      $('waterfall').replaceChildren(el('p', { class: 'hint bad' }, String(e.message || e)));
    }
  }

  // ---- collections ---------------------------------------------------------------------------

  function renderCollections(doc) {
    const cards = doc.collections.map((c) => {
      const owners = Object.entries(c.files_by_owner)
        .map(([node, n]) => el('span', { class: 'owner-chip', data: { owner: node } }, `${node}: ${n}`));
      const files = c.files.slice(0, 200).map((f) => el('tr', { data: { file: f.id, owner: f.owner || '' } },
        el('td', { class: 'num' }, f.id),
        el('td', null, f.partition),
        el('td', { class: 'mono' }, f.segment),
        el('td', null, f.file_type),
        el('td', null, f.index_type),
        el('td', { class: 'num' }, bytes(f.size_bytes)),
        el('td', { class: 'num' }, num(f.rows)),
        el('td', { class: 'mono' }, f.owner || '(none)')));
      const more = c.files_total > files.length
        ? el('p', { class: 'sub' }, `${files.length} of ${c.files_total} files shown`) : null;
      return el('details', { class: 'collection', data: { collection: c.name }, open: doc.collections.length <= 3 ? '' : null },
        el('summary', null, el('strong', null, c.name),
          ` · dim ${c.dimension} · ${c.metric} · ${c.index_type} · ${c.files_total} files · ${num(c.rows_total)} rows · ${bytes(c.bytes_total)}`,
          c.partitions.length ? ` · partitions ${c.partitions.join(', ')}` : ''),
        el('div', { class: 'owners' }, 'owners: ', ...owners),
        el('table', { class: 'grid' },
          el('thead', null, el('tr', null, ...['id', 'partition', 'segment', 'type', 'index', 'size', 'rows', 'owner (read node)']
            .map((h, i) => el('th', { class: [0, 5, 6].includes(i) ? 'num' : null }, h)))),
          el('tbody', null, ...files)),
        more);
    });
    // Keep the operator's open/closed choice across refreshes.
    const open = new Map([...document.querySelectorAll('#collections-body details')]
      .map((d) => [d.dataset.collection, d.open]));
    for (const cardNode of cards) {
      const was = open.get(cardNode.dataset.collection);
      if (was !== undefined) cardNode.open = was;
    }
    $('collections-body').replaceChildren(...(cards.length ? cards : [el('p', { class: 'hint' }, 'No collections yet.')]));
    $('collections-note').textContent = `snapshot ${doc.epoch}${doc.stale ? ' (stale: the metadata database is unreachable)' : ''} · owners from the routing placement`;
  }

  async function refreshCollections() {
    renderCollections(await getJSON('/collections'));
  }

  // ---- faults --------------------------------------------------------------------------------

  function describeTarget(t) {
    if (typeof t === 'string') return t;
    return Object.entries(t).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`).join('; ');
  }

  function describeKind(k) {
    const { type, ...rest } = k;
    const extra = Object.entries(rest).map(([a, b]) => `${a}=${b}`).join(' ');
    return extra ? `${type} ${extra}` : type;
  }

  async function faultRequest(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    return getJSON(path, { method, headers, body });
  }

  function renderFaults(doc) {
    $('faults-note').textContent = `seed ${doc.seed} · ${doc.rules.length} rules`;
    $('fault-rules').replaceChildren(...doc.rules.map((r) => el('tr', { data: { rule: r.id } },
      el('td', { class: 'num' }, r.id),
      el('td', null, describeTarget(r.target)),
      el('td', null, r.rpcs ? r.rpcs.join(', ') : 'all'),
      el('td', null, describeKind(r.kind)),
      el('td', { class: 'num' }, r.probability === undefined ? 1 : r.probability),
      el('td', null, `from ${r.armed_ms + (r.start_after_ms || 0)} ms${r.duration_ms ? ` for ${r.duration_ms} ms` : ''}`),
      el('td', null, badge(r.expired ? 'expired' : r.active ? 'active' : 'waiting')),
      el('td', null, state.token
        ? el('button', { type: 'button', onclick: () => changeFaults('DELETE', `/faults/${r.id}`) }, 'remove')
        : ''))));
    const log = doc.log.slice().reverse().slice(0, 100);
    $('fault-log').replaceChildren(...log.map((f) => el('tr', null,
      el('td', { class: 'num' }, f.at_ms), el('td', { class: 'mono' }, f.site), el('td', null, f.rpc || ''),
      el('td', { class: 'num' }, f.rule), el('td', null, f.kind), el('td', { class: 'num' }, f.call),
      el('td', null, f.detail))));
    $('fault-log-note').textContent = `newest first, ${log.length} shown of ${doc.log_kept} kept${doc.log_dropped ? `, ${doc.log_dropped} dropped` : ''}`;
  }

  async function refreshFaults() {
    if (!state.info || !state.info.fault_injection) return;
    renderFaults(await getJSON('/console/faults'));
  }

  async function changeFaults(method, path, body) {
    try {
      const answer = await faultRequest(method, path, body);
      $('fault-result').textContent = JSON.stringify(answer);
      $('fault-result').classList.remove('bad');
    } catch (e) {
      $('fault-result').textContent = String(e.message || e);
      $('fault-result').classList.add('bad');
    }
    await refreshFaults().catch(() => {});
  }

  function setupFaults() {
    $('faults').hidden = false;
    $('nav-faults').hidden = false;
    $('fault-token-use').addEventListener('click', async () => {
      const token = $('fault-token').value.trim();
      if (!token) {
        state.token = null;
      } else {
        // Check it with a read that needs it; a wrong token stays read-only.
        state.token = token;
        try {
          await faultRequest('GET', '/faults');
        } catch (e) {
          state.token = null;
          $('fault-mode').textContent = `read-only: ${e.message || e}`;
          $('fault-editor').hidden = true;
          return;
        }
      }
      $('fault-mode').textContent = state.token ? 'token accepted: rules can be changed' : 'read-only';
      $('fault-editor').hidden = !state.token;
      refreshFaults().catch(() => {});
    });
    $('fault-add').addEventListener('click', () => changeFaults('POST', '/faults', $('fault-rule').value));
    $('fault-clear').addEventListener('click', () => changeFaults('DELETE', '/faults'));
  }

  // ---- the loop ------------------------------------------------------------------------------

  async function guarded(what, work) {
    try {
      await work();
      return null;
    } catch (e) {
      // Anything but the gateway's own answer is a bug of this page.
      if (!(e instanceof GatewayError)) console.error(`console: ${what}:`, e);
      return `${what}: ${e.message || e}`;
    }
  }

  async function tick() {
    const started = Date.now();
    const slowEvery = 2;
    const jobs = [guarded('cluster', refreshCluster), guarded('live charts', refreshLive),
      guarded('requests', refreshRequests)];
    if (state.refreshes % slowEvery === 0) {
      jobs.push(guarded('collections', refreshCollections), guarded('faults', refreshFaults));
    }
    const failures = (await Promise.all(jobs)).filter(Boolean);
    state.refreshes += 1;
    if (failures.length) {
      setStatus(failures.join(' · '), true);
    } else {
      setStatus(`live · updated ${clock(Date.now())}${state.info ? ` · gateway ${state.info.version}` : ''}`, false);
    }
    const every = state.info ? state.info.refresh_ms : 1000;
    setTimeout(tick, Math.max(200, every - (Date.now() - started)));
  }

  async function start() {
    for (const tab of ['recent', 'slow']) {
      $(`tab-${tab}`).addEventListener('click', () => {
        state.tab = tab;
        $('tab-recent').classList.toggle('active', tab === 'recent');
        $('tab-slow').classList.toggle('active', tab === 'slow');
        guarded('requests', refreshRequests);
      });
    }
    // Settings first; the page works without them (e.g. an older gateway), with defaults.
    const failed = await guarded('settings', async () => { state.info = await getJSON('/console/info'); });
    if (!failed && state.info.fault_injection) setupFaults();
    tick();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
