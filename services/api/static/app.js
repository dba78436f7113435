/* Écoute live page: brand tiles, charts, topic mix, top authors, the inbox and the live alert feed.
 *
 * Plain JavaScript, no build step and nothing fetched from elsewhere: every number comes from this API
 * (`/v1/...`, Bearer key), alerts arrive over Server-Sent Events (`/v1/alerts/stream?key=`, since
 * EventSource cannot send headers). Data is only ever put in the page as text (textContent, attributes),
 * never as HTML. Lists are updated in place, so a focused button keeps its focus across refreshes.
 */
"use strict";

(() => {
  const KEY_STORE = "ecoute.apiKey";
  const BRAND_STORE = "ecoute.brand";
  const RANGE_STORE = "ecoute.range";
  const REFRESH_MS = 5000;
  const MAX_ALERTS = 200;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const KINDS = {
    volume_spike: "Volume spike",
    volume_drop: "Volume drop",
    negative_surge: "Negative surge",
    sentiment_drop: "Sentiment drop",
    influencer: "Influencer mention",
    keyword: "Crisis keyword",
  };
  const REASONS = { negative: "negative", question: "question" };

  const state = {
    key: null,
    brands: [],
    brand: null,
    range: "1h",
    alerts: new Map(), // alert id -> {alert, node}
    stream: null,
    streamRetryMs: 1000,
    streamTimer: null,
    refreshTimer: null,
    refreshing: false,
    running: false,
    series: null, // the last time series, redrawn when the charts change size
    rendered: new Map(), // section -> JSON of what it shows, to skip redrawing unchanged sections
    history: { report: null, loading: 0, search: null }, // the history view: its report, and the last search
  };

  class AuthError extends Error {}
  class ApiError extends Error {
    constructor(message, status, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  // ------------------------------------------------------------------------------------------ helpers

  const $ = (selector) => document.querySelector(selector);

  /** Builds an element: h("a", {href, class, text}, ...children). Children are nodes or text. */
  function h(tag, attrs, ...children) {
    const svg = tag.startsWith("svg:");
    const el = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") el.textContent = value;
      else if (name === "dataset") Object.assign(el.dataset, value);
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function changed(section, data) {
    const json = JSON.stringify(data);
    if (state.rendered.get(section) === json) return false;
    state.rendered.set(section, json);
    return true;
  }

  const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const percent = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 0 });
  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const clockSeconds = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dayClock = new Intl.DateTimeFormat(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit" });

  const num = (n) => (Math.abs(n) >= 10000 ? compact.format(n) : integer.format(n));
  const tone = (x) => (x === null || x === undefined ? "—" : (x > 0 ? "+" : x < 0 ? "−" : "") + Math.abs(x).toFixed(2));
  const toneClass = (x) => (x === null || x === undefined ? "" : x >= 0.05 ? "pos" : x <= -0.05 ? "neg" : "neu");

  function ago(iso) {
    const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
    if (!Number.isFinite(seconds)) return "";
    if (seconds < 45) return "just now";
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} d ago`;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${Math.round(seconds / 86400)} d`;
  }

  function timeEl(iso, withSeconds) {
    const date = new Date(iso);
    return h("time", {
      datetime: iso,
      title: date.toLocaleString(),
      text: (withSeconds ? clockSeconds : clock).format(date),
    });
  }

  /** Only http(s) links are made clickable. */
  function safeUrl(url) {
    try {
      const parsed = new URL(url);
      return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function link(url, text, extra) {
    const href = safeUrl(url);
    if (!href) return h("span", { text });
    return h("a", { href, target: "_blank", rel: "noopener noreferrer", ...extra, text });
  }

  /** Puts `nodes` in `parent` in this order, moving only what is out of place (focus survives). */
  function placeChildren(parent, nodes) {
    nodes.forEach((node, index) => {
      if (parent.children[index] !== node) parent.insertBefore(node, parent.children[index] || null);
    });
    while (parent.children.length > nodes.length) parent.lastElementChild.remove();
  }

  function setBanner(message) {
    const banner = $("#banner");
    banner.hidden = !message;
    banner.textContent = message || "";
  }

  // ------------------------------------------------------------------------------------------ API

  async function errorDetail(response) {
    try {
      const body = await response.json();
      if (typeof body.detail === "string") return body.detail;
      if (Array.isArray(body.detail)) return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
    } catch {
      /* not JSON */
    }
    return `HTTP ${response.status}`;
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    const response = await fetch(path, { ...options, headers, cache: "no-store" });
    if (response.status === 401) throw new AuthError(await errorDetail(response));
    if (!response.ok) {
      throw new ApiError(await errorDetail(response), response.status, response.headers.get("Retry-After"));
    }
    return response.json();
  }

  const brandPath = (brand) => `/v1/brands/${encodeURIComponent(brand)}`;

  // ------------------------------------------------------------------------------------------ the key

  function keyFromFragment() {
    const match = /^#(?:.*&)?key=([^&]*)/.exec(location.hash);
    if (!match) return null;
    // Out of the address bar (and of the history) once read.
    history.replaceState(null, "", location.pathname + location.search);
    try {
      return decodeURIComponent(match[1]);
    } catch {
      return match[1];
    }
  }

  function storeKey(key) {
    state.key = key;
    try {
      if (key) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
    } catch {
      /* private mode: the key lives as long as the page */
    }
  }

  /** A value kept in local storage (null when storage is unavailable, as in some private modes). */
  function remembered(name) {
    try {
      return localStorage.getItem(name);
    } catch {
      return null;
    }
  }

  function remember(name, value) {
    try {
      localStorage.setItem(name, value);
    } catch {
      /* the page still works; the choice is only not kept */
    }
  }

  function askForKey(message) {
    stop();
    const dialog = $("#key-dialog");
    $("#key-error").textContent = message || "";
    $("#key-input").value = "";
    document.body.dataset.auth = "needed";
    if (!dialog.open) dialog.showModal();
    $("#key-input").focus();
  }

  function setupKeyDialog() {
    const dialog = $("#key-dialog");
    $("#key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("#key-input").value.trim();
      if (!key) {
        $("#key-error").textContent = "Enter an API key.";
        return;
      }
      storeKey(key);
      dialog.close();
      start();
    });
    $("#key-forget").addEventListener("click", () => {
      storeKey(null);
      $("#key-error").textContent = "The key is forgotten in this browser.";
      $("#key-input").focus();
    });
    // Escape closes the dialog only when there is a key to go on with.
    dialog.addEventListener("cancel", (event) => {
      if (!state.key) event.preventDefault();
    });
    dialog.addEventListener("close", () => {
      if (state.key && !state.running) start();
    });
    $("#change-key").addEventListener("click", () => askForKey(""));
  }

  // ------------------------------------------------------------------------------------------ refresh loop

  async function start() {
    stop();
    state.running = true;
    document.body.dataset.auth = "ok";
    try {
      await refresh(true);
      loadHistory();
      await loadAlerts();
    } catch (error) {
      if (error instanceof AuthError) {
        askForKey(state.key ? `This key was refused: ${error.message}` : "");
        return;
      }
      setBanner(`Cannot reach the API: ${error.message}. Retrying…`);
    }
    connectStream();
    schedule();
  }

  function stop() {
    state.running = false;
    clearTimeout(state.refreshTimer);
    clearTimeout(state.streamTimer);
    if (state.stream) state.stream.close();
    state.stream = null;
    setStreamState("offline", "Not connected");
  }

  function schedule(delay = REFRESH_MS) {
    clearTimeout(state.refreshTimer);
    if (state.running) state.refreshTimer = setTimeout(tick, delay);
  }

  async function tick() {
    let delay = REFRESH_MS;
    if (!document.hidden) {
      try {
        await refresh(false);
      } catch (error) {
        if (error instanceof AuthError) {
          askForKey(`This key was refused: ${error.message}`);
          return;
        }
        if (error instanceof ApiError && error.status === 429) delay = 1000 * Math.max(1, Number(error.retryAfter) || 5);
        setBanner(`Could not refresh: ${error.message}. Retrying…`);
      }
    }
    schedule(delay);
  }

  async function refresh(first) {
    if (state.refreshing && !first) return;
    state.refreshing = true;
    try {
      const [brands, voice] = await Promise.all([
        api("/v1/brands"),
        api("/v1/share-of-voice?window=1h").catch((error) => {
          if (error instanceof AuthError) throw error;
          return null; // share of voice is a bonus: the tiles show without it
        }),
      ]);
      state.brands = brands;
      if (!brands.some((b) => b.brand === state.brand)) {
        const saved = remembered(BRAND_STORE);
        const pick = brands.find((b) => b.brand === saved) || brands.find((b) => b.configured) || brands[0];
        state.brand = pick ? pick.brand : null;
      }
      renderTiles(brands, voice);
      await refreshDetail();
      setBanner(null);
      $("#updated").textContent = `Updated ${clockSeconds.format(new Date())}`;
      document.body.dataset.ready = "true";
    } finally {
      state.refreshing = false;
    }
  }

  async function refreshDetail() {
    const brand = state.brand;
    const range = state.range;
    $("#detail-title").textContent = brand || "No brand yet";
    if (!brand) {
      renderCharts(null);
      renderTopics(null);
      renderAuthors(null);
      renderInbox(null);
      renderLove(null);
      return;
    }
    const path = brandPath(brand);
    const [series, kpis, authors, inbox, accounts] = await Promise.all([
      api(`${path}/timeseries?bucket=${range === "1h" ? "1m" : "1h"}`),
      api(`${path}/kpis?window=${range}`),
      api(`${path}/authors?window=${range}&limit=8`),
      api(`${path}/inbox?limit=20`),
      // The brand's accounts the inbox can reply and follow with (none: no Reply or Follow buttons).
      api(`${path}/accounts`).catch((error) => {
        if (error instanceof AuthError) throw error;
        return null;
      }),
    ]);
    if (brand !== state.brand || range !== state.range) return; // the user moved on meanwhile
    state.series = series;
    renderCharts(series);
    renderTopics(kpis);
    renderAuthors(authors);
    renderInbox(inbox, accounts);
    // Love KPIs are a bonus: the rest of the page shows without them.
    const love = await api(`${path}/love`).catch((error) => {
      if (error instanceof AuthError) throw error;
      return null;
    });
    if (brand === state.brand) renderLove(love);
  }

  function selectBrand(brand) {
    if (brand === state.brand) return;
    state.brand = brand;
    remember(BRAND_STORE, brand);
    for (const tile of document.querySelectorAll(".tile")) {
      tile.setAttribute("aria-pressed", String(tile.dataset.brand === brand));
    }
    refreshSoon();
    loadHistory();
  }

  function selectRange(range) {
    state.range = range;
    remember(RANGE_STORE, range);
    for (const button of document.querySelectorAll(".seg")) {
      button.setAttribute("aria-pressed", String(button.dataset.range === range));
    }
    $("#volume-caption").lastElementChild.textContent = range === "1h" ? "mentions per minute" : "mentions per hour";
    refreshSoon();
  }

  function refreshSoon() {
    if (!state.running) return;
    refreshDetail().catch((error) => {
      if (error instanceof AuthError) askForKey(`This key was refused: ${error.message}`);
      else setBanner(`Could not load ${state.brand}: ${error.message}`);
    });
  }

  // ------------------------------------------------------------------------------------------ tiles

  function voiceOf(voice, brand) {
    if (!voice) return null;
    const own = voice.groups.find((g) => g.brand === brand) || voice.groups.find((g) => g.members.some((m) => m.brand === brand));
    if (!own || own.members.length < 2) return null;
    const member = own.members.find((m) => m.brand === brand);
    return member ? { share: member.share, rivals: own.members.filter((m) => m.brand !== brand).map((m) => m.brand) } : null;
  }

  function renderTiles(brands, voice) {
    const container = $("#tiles");
    if (!brands.length) {
      if (changed("tiles", [])) container.replaceChildren(h("p", { class: "empty", text: "No brand yet: configure brands or send mentions." }));
      return;
    }
    container.querySelector(".empty")?.remove();
    const nodes = brands.map((summary) => {
      let tile = container.querySelector(`.tile[data-brand="${CSS.escape(summary.brand)}"]`);
      if (!tile) {
        tile = h("button", { type: "button", class: "tile", dataset: { brand: summary.brand }, onclick: () => selectBrand(summary.brand) });
      }
      tile.setAttribute("aria-pressed", String(summary.brand === state.brand));
      fillTile(tile, summary, voiceOf(voice, summary.brand));
      return tile;
    });
    placeChildren(container, nodes);
  }

  function fillTile(tile, summary, voice) {
    const k = summary.kpis;
    const scored = k.positive + k.neutral + k.negative;
    const share = (n) => (scored ? n / scored : 0);
    const splitLabel = scored
      ? `${percent.format(share(k.positive))} positive, ${percent.format(share(k.neutral))} neutral, ${percent.format(share(k.negative))} negative`
      : "no scored mention";
    const data = { k, voice };
    if (!changed(`tile:${summary.brand}`, data)) return;
    tile.dataset.mentions = String(k.mentions);
    tile.replaceChildren(
      h("span", { class: "tile-name" }, summary.brand, summary.configured ? null : h("span", { class: "tag", text: "seen" })),
      h("span", { class: "tile-volume" }, h("strong", { class: "tile-mentions", text: num(k.mentions) }), " mentions"),
      h(
        "span",
        { class: "split", role: "img", "aria-label": `Sentiment: ${splitLabel}` },
        h("span", { class: "pos", style: `width:${share(k.positive) * 100}%` }),
        h("span", { class: "neu", style: `width:${share(k.neutral) * 100}%` }),
        h("span", { class: "neg", style: `width:${share(k.negative) * 100}%` }),
      ),
      h(
        "span",
        { class: "split-legend", "aria-hidden": "true" },
        h("span", { class: "pos", text: `${percent.format(share(k.positive))} pos` }),
        h("span", { class: "neu", text: `${percent.format(share(k.neutral))} neu` }),
        h("span", { class: "neg", text: `${percent.format(share(k.negative))} neg` }),
      ),
      h(
        "span",
        { class: "tile-stats" },
        h("span", null, h("span", { class: "stat-label", text: "Avg tone" }), h("b", { class: `tone ${toneClass(k.sentiment_avg)}`, text: tone(k.sentiment_avg) })),
        h(
          "span",
          { title: voice ? `Share of the mentions of ${[summary.brand, ...voice.rivals].join(", ")}` : "no competitor configured" },
          h("span", { class: "stat-label", text: "Share of voice" }),
          h("b", { class: "tile-voice", text: voice && voice.share !== null ? percent.format(voice.share) : "—" }),
        ),
        h("span", null, h("span", { class: "stat-label", text: "Authors" }), h("b", { text: num(k.unique_authors) })),
      ),
    );
  }

  // ------------------------------------------------------------------------------------------ charts

  function niceMax(value) {
    if (value <= 4) return 4;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function bucketLabel(iso, hourly) {
    return (hourly ? dayClock : clock).format(new Date(iso));
  }

  /** Stacked bars (one per bucket) with an optional line on a −1…+1 scale, drawn to the container's width. */
  function drawChart(container, points, options) {
    const label = options.label || ((iso) => bucketLabel(iso, options.hourly));
    const width = Math.max(260, container.clientWidth || 600);
    const height = 180;
    const pad = { left: 40, right: options.line ? 34 : 10, top: 10, bottom: 24 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const totals = points.map((p) => options.series.reduce((sum, s) => sum + (p[s.key] || 0), 0));
    const top = niceMax(Math.max(0, ...totals));
    const y = (v) => pad.top + plotH - (v / top) * plotH;
    const svg = h("svg:svg", {
      width,
      height,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-label": options.summary,
      class: "chart-svg",
    });
    for (const tick of [0, top / 2, top]) {
      svg.append(
        h("svg:line", { x1: pad.left, x2: width - pad.right, y1: y(tick), y2: y(tick), class: "grid" }),
        h("svg:text", { x: pad.left - 6, y: y(tick) + 4, class: "axis", "text-anchor": "end", text: num(tick) }),
      );
    }
    const n = Math.max(points.length, 1);
    const step = plotW / n;
    const gap = step > 5 ? Math.min(2, step * 0.2) : 0;
    points.forEach((point, i) => {
      const group = h("svg:g", { class: "bar" });
      let base = 0;
      const parts = [];
      for (const s of options.series) {
        const value = point[s.key] || 0;
        if (value > 0) {
          group.append(
            h("svg:rect", {
              x: pad.left + i * step + gap / 2,
              y: y(base + value),
              width: Math.max(step - gap, 0.5),
              height: Math.max(y(base) - y(base + value), 0.5),
              class: s.cls,
            }),
          );
          parts.push(`${num(value)} ${s.label}`);
        }
        base += value;
      }
      const extra = options.line && point[options.line.key] !== null && point[options.line.key] !== undefined
        ? `, ${options.line.label} ${tone(point[options.line.key])}` : "";
      group.prepend(h("svg:title", { text: `${label(point.start)}: ${parts.join(", ") || "none"}${extra}` }));
      // An invisible full-height target, so the tooltip shows on empty buckets too.
      group.prepend(h("svg:rect", { x: pad.left + i * step, y: pad.top, width: step, height: plotH, class: "hit" }));
      svg.append(group);
    });
    if (options.line) {
      const ly = (v) => pad.top + plotH / 2 - (v * plotH) / 2;
      svg.append(h("svg:line", { x1: pad.left, x2: width - pad.right, y1: ly(0), y2: ly(0), class: "zero" }));
      for (const [v, label] of [[1, "+1"], [0, "0"], [-1, "−1"]]) {
        svg.append(h("svg:text", { x: width - pad.right + 6, y: ly(v) + 4, class: "axis", text: label }));
      }
      let d = "";
      let pen = false;
      points.forEach((point, i) => {
        const v = point[options.line.key];
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        d += `${pen ? "L" : "M"}${(pad.left + (i + 0.5) * step).toFixed(1)},${ly(v).toFixed(1)}`;
        pen = true;
      });
      if (d) svg.append(h("svg:path", { d, class: "avg-line" }));
      // A value with no neighbour draws no line: show it as a dot.
      points.forEach((point, i) => {
        const v = point[options.line.key];
        const has = (j) => j >= 0 && j < points.length && points[j][options.line.key] !== null && points[j][options.line.key] !== undefined;
        if (has(i) && !has(i - 1) && !has(i + 1)) {
          svg.append(h("svg:circle", { cx: pad.left + (i + 0.5) * step, cy: ly(v), r: 2.5, class: "avg-dot" }));
        }
      });
    }
    // Alerts of the brand, where they fired.
    const since = options.since ? new Date(options.since).getTime() : NaN;
    const until = options.until ? new Date(options.until).getTime() : NaN;
    for (const marker of options.markers || []) {
      const at = new Date(marker.at).getTime();
      if (!(at >= since && at < until)) continue;
      const x = pad.left + ((at - since) / (until - since)) * plotW;
      svg.append(
        h(
          "svg:g",
          { class: `marker sev-${marker.severity}` },
          h("svg:title", { text: marker.label }),
          h("svg:line", { x1: x, x2: x, y1: pad.top + 6, y2: pad.top + plotH }),
          h("svg:path", { d: `M${x - 5},${pad.top - 2} L${x + 5},${pad.top - 2} L${x},${pad.top + 6} Z` }),
        ),
      );
    }
    const labels = Math.min(points.length, Math.max(2, Math.floor(plotW / 90)));
    for (let j = 0; j < labels && points.length; j++) {
      const i = Math.round((j * (points.length - 1)) / Math.max(labels - 1, 1));
      const anchor = j === 0 ? "start" : j === labels - 1 ? "end" : "middle";
      const x = anchor === "start" ? pad.left + i * step : anchor === "end" ? pad.left + (i + 1) * step : pad.left + (i + 0.5) * step;
      svg.append(h("svg:text", { x, y: height - 6, class: "axis", "text-anchor": anchor, text: label(points[i].start) }));
    }
    if (!totals.some((t) => t > 0)) {
      svg.append(h("svg:text", { x: pad.left + plotW / 2, y: pad.top + plotH / 2, class: "no-data", "text-anchor": "middle", text: options.empty || "No mentions in this range" }));
    }
    container.replaceChildren(svg);
  }

  function renderCharts(series) {
    const volume = $("#volume-chart");
    const sentiment = $("#sentiment-chart");
    if (!series) {
      volume.replaceChildren();
      sentiment.replaceChildren();
      return;
    }
    const points = series.points;
    const hourly = series.bucket === "1h";
    const total = points.reduce((sum, p) => sum + p.mentions, 0);
    const peak = points.reduce((best, p) => (p.mentions > (best ? best.mentions : -1) ? p : best), null);
    const span = hourly ? "24 hours" : "hour";
    const markers = [...state.alerts.values()]
      .filter((e) => e.alert.brand === series.brand)
      .map((e) => ({
        at: e.alert.created_at,
        severity: e.alert.severity,
        label: `${KINDS[e.alert.kind] || e.alert.kind} at ${clock.format(new Date(e.alert.created_at))}: ${e.alert.message}`,
      }));
    drawChart(volume, points, {
      hourly,
      since: series.since,
      until: series.until,
      markers,
      series: [{ key: "mentions", label: "mentions", cls: "vol" }],
      summary: `Volume over the last ${span}: ${num(total)} mentions${peak && peak.mentions ? `, peak ${num(peak.mentions)} at ${bucketLabel(peak.start, hourly)}` : ""}.`,
    });
    const sums = ["positive", "neutral", "negative"].map((k) => points.reduce((sum, p) => sum + p[k], 0));
    drawChart(sentiment, points, {
      hourly,
      series: [
        { key: "positive", label: "positive", cls: "pos" },
        { key: "neutral", label: "neutral", cls: "neu" },
        { key: "negative", label: "negative", cls: "neg" },
      ],
      line: { key: "sentiment_avg", label: "average tone" },
      summary: `Sentiment over the last ${span}: ${num(sums[0])} positive, ${num(sums[1])} neutral, ${num(sums[2])} negative.`,
    });
  }

  // ------------------------------------------------------------------------------------------ topics, authors

  function renderTopics(kpis) {
    const list = $("#topics");
    if (!changed("topics", kpis && [kpis.brand, kpis.mentions, kpis.topics])) return;
    const entries = kpis ? Object.entries(kpis.topics).sort((a, b) => b[1] - a[1]).slice(0, 8) : [];
    if (!entries.length) {
      list.replaceChildren(h("li", { class: "empty", text: "No topic detected in this range." }));
      return;
    }
    const most = entries[0][1];
    list.replaceChildren(
      ...entries.map(([topic, count]) =>
        h(
          "li",
          { class: "hbar" },
          h("span", { class: "hbar-label", text: topic.replaceAll("_", " ") }),
          h("span", { class: "hbar-track", "aria-hidden": "true" }, h("span", { class: "hbar-fill", style: `width:${(count / most) * 100}%` })),
          h("span", { class: "hbar-value", text: `${num(count)} · ${percent.format(kpis.mentions ? count / kpis.mentions : 0)}` }),
        ),
      ),
    );
  }

  function renderAuthors(top) {
    const body = $("#authors");
    if (!changed("authors", top && top.authors)) return;
    if (!top || !top.authors.length) {
      body.replaceChildren(h("tr", null, h("td", { colspan: 5, class: "empty", text: "No author in this range." })));
      return;
    }
    body.replaceChildren(
      ...top.authors.map((a) => {
        const name = a.handle ? `@${a.handle.replace(/^@/, "")}` : a.name || a.key;
        const pos = a.positive_share || 0;
        const neg = a.negative_share || 0;
        return h(
          "tr",
          null,
          h("th", { scope: "row" }, link(a.url, name), a.followers ? h("span", { class: "muted small", text: ` ${num(a.followers)} followers` }) : null),
          h("td", { class: "num", text: num(a.mentions) }),
          h("td", { class: "num", text: num(a.reach) }),
          h("td", { class: "num", text: num(a.engagement) }),
          h(
            "td",
            null,
            h(
              "span",
              { class: "split small-split", role: "img", "aria-label": `${percent.format(pos)} positive, ${percent.format(neg)} negative` },
              h("span", { class: "pos", style: `width:${pos * 100}%` }),
              h("span", { class: "neu", style: `width:${Math.max(0, 1 - pos - neg) * 100}%` }),
              h("span", { class: "neg", style: `width:${neg * 100}%` }),
            ),
          ),
        );
      }),
    );
  }

  // ------------------------------------------------------------------------------------------ love

  function figures(dl, pairs) {
    dl.replaceChildren(
      ...pairs.map(([id, label, value]) => h("div", null, h("dt", { text: label }), h("dd", { id, text: value }))),
    );
  }

  const orDash = (x, format = num) => (x === null || x === undefined ? "—" : format(x));

  function renderLove(love) {
    if (!changed("love", love)) return;
    $("#love-index").textContent = love && love.love_index !== null ? `${love.love_index}` : "";
    $("#love-formula").textContent = love ? love.formula : "";
    const links = love && love.inbound_links;
    $("#links-domains").textContent = links ? `to ${links.owned_domains.join(", ")}` : "";
    const sites = $("#links-sites");
    if (!links) {
      figures($("#links-figures"), []);
      sites.replaceChildren(h("li", { class: "empty", text: "No owned domains configured (brands.<name>.owned_domains)." }));
    } else {
      figures($("#links-figures"), [
        ["links-24h", "Links · 24 h", num(links.last_24h.links)],
        ["links-7d", "Links · 7 days", num(links.last_7d.links)],
        ["linking-sites-7d", "Linking sites · 7 days", num(links.last_7d.linking_sites)],
        ["new-sites-7d", "New linking sites · 7 days", num(links.last_7d.new_linking_sites)],
        ["new-authors-7d", "New linking authors · 7 days", num(links.last_7d.new_authors)],
      ]);
      sites.replaceChildren(
        ...(links.top_sites.length
          ? links.top_sites.map((site) =>
              h(
                "li",
                { class: "link-site", dataset: { site: site.site } },
                h("span", { class: "link-site-name", text: site.site }),
                site.new ? h("span", { class: "badge-new", text: "new" }) : null,
                h("span", { class: "muted small", text: ` ${num(site.links)} link${site.links === 1 ? "" : "s"}` }),
              ),
            )
          : [h("li", { class: "empty", text: "No inbound link in the last 7 days." })]),
      );
    }
    const web = love && love.web;
    const rows = $("#web-days");
    if (!web) {
      figures($("#web-figures"), []);
      rows.replaceChildren(h("tr", null, h("td", { colspan: 5, class: "empty", text: "No web analytics source (matomo or plausible)." })));
      return;
    }
    const week = web.last_7d;
    figures($("#web-figures"), [
      ["web-visits-7d", "Visits · 7 days", orDash(week.visits)],
      ["social-visits-7d", "Social visits · 7 days", orDash(week.social_visits)],
      ["social-per-mention-7d", "Social visits per mention", orDash(week.social_visits_per_mention, (x) => x.toFixed(2))],
      ["conversion-rate-7d", "Conversion rate", orDash(week.conversion_rate, (x) => `${x.toFixed(1)} %`)],
    ]);
    rows.replaceChildren(
      ...[...web.days].reverse().map((day) =>
        h(
          "tr",
          { dataset: { day: day.date } },
          h("th", { scope: "row", text: day.date }),
          h("td", { class: "num", text: num(day.mentions) }),
          h("td", { class: "num", text: orDash(day.visits) }),
          h("td", { class: "num social-visits", text: orDash(day.social_visits) }),
          h("td", { class: "small networks", text: Object.entries(day.social).map(([n, v]) => `${n} ${num(v)}`).join(", ") || "—" }),
        ),
      ),
    );
  }

  // ------------------------------------------------------------------------------------------ inbox

  function renderInbox(inbox, accounts) {
    const list = $("#inbox");
    $("#inbox-count").textContent = inbox ? String(inbox.pending) : "";
    const rt = inbox && inbox.response_time;
    $("#response-time").textContent = rt && rt.count
      ? `Response time (24 h): median ${duration(rt.median_seconds)}, p90 ${duration(rt.p90_seconds)} over ${num(rt.count)} handled`
      : "Nothing handled in the last 24 h";
    const items = inbox ? inbox.items : [];
    if (!items.length) {
      placeChildren(list, [list.querySelector(".empty") || h("li", { class: "empty", text: "Inbox zero: nothing waits for an answer." })]);
      return;
    }
    const existing = new Map([...list.querySelectorAll(".mention")].map((node) => [node.dataset.key, node]));
    const nodes = items.map((m) => {
      const key = `${m.brand}\u0000${m.id}`;
      const node = existing.get(key) || inboxItem(m, key, accounts);
      node.querySelector(".mention-when").textContent = ago(m.published_at);
      return node;
    });
    placeChildren(list, nodes);
  }

  function inboxItem(m, key, accounts) {
    const author = m.author || {};
    const who = author.handle ? `@${author.handle.replace(/^@/, "")}` : author.name || author.id || "someone";
    const label = m.sentiment ? m.sentiment.label : "unscored";
    const button = h("button", { type: "button", class: "button small", text: "Mark handled", "aria-label": `Mark the mention by ${who} handled` });
    const status = h("span", { class: "action-status", role: "status" });
    const node = h(
      "li",
      { class: "mention", dataset: { key, mentionId: m.id } },
      h(
        "div",
        { class: "mention-head" },
        link(author.url, who, { class: "mention-author" }),
        m.reach ? h("span", { class: "muted", text: `${num(m.reach)} followers` }) : null,
        h("span", { class: "muted" }, m.site || m.source),
        h("span", { class: "muted mention-when", title: new Date(m.published_at).toLocaleString() }),
        h("span", { class: "chips" }, ...(m.reasons || []).map((r) => h("span", { class: `chip ${r === "negative" ? "neg" : "info"}`, text: REASONS[r] || r })), h("span", { class: `chip ${toneClass(m.sentiment && m.sentiment.compound)}`, text: `tone ${tone(m.sentiment ? m.sentiment.compound : null)}`, title: label })),
      ),
      m.title ? h("p", { class: "mention-title", text: m.title }) : null,
      h("p", { class: "mention-text", text: m.text }),
      h("div", { class: "mention-actions" }, safeUrl(m.url) ? link(m.url, "Open the post", { class: "button small ghost" }) : null, button, status),
    );
    engageControls(m, who, accounts, node);
    button.addEventListener("click", async () => {
      button.disabled = true;
      status.textContent = "Saving…";
      try {
        await api(`/v1/mentions/${encodeURIComponent(m.id)}/handled`, { method: "POST", body: JSON.stringify({ brand: m.brand }) });
        status.textContent = "Handled";
        node.classList.add("done");
        const count = $("#inbox-count");
        count.textContent = String(Math.max(0, (Number(count.textContent) || 1) - 1));
        setTimeout(() => node.remove(), 600);
      } catch (error) {
        if (error instanceof AuthError) return askForKey(`This key was refused: ${error.message}`);
        status.textContent = `Not saved: ${error.message}`;
        button.disabled = false;
      }
    });
    return node;
  }

  /** "Reply" (a text box, sent with the brand's account) and "Follow" for a mention of a platform the brand has
   * an account on, when the key may use it. A reply is sent with a request id kept until the text changes, so
   * sending again after a failure never posts twice. */
  function engageControls(m, who, accounts, node) {
    const platform = m.source;
    const usable = accounts && accounts.can_respond && (accounts.accounts || []).some((a) => a.platform === platform);
    if (!usable) return;
    const actions = node.querySelector(".mention-actions");
    const status = node.querySelector(".action-status");
    const replyButton = h("button", { type: "button", class: "button small", text: "Reply", "aria-expanded": "false", "aria-label": `Reply to ${who} on ${platform}` });
    const text = h("textarea", { class: "reply-text", rows: "3", maxlength: "5000", "aria-label": `Your reply to ${who}` });
    const send = h("button", { type: "submit", class: "button small", text: "Send reply" });
    const form = h("form", { class: "reply-form", hidden: true }, text, h("div", { class: "mention-actions" }, send));
    let sent = { text: null, id: null };
    replyButton.addEventListener("click", () => {
      form.hidden = !form.hidden;
      replyButton.setAttribute("aria-expanded", String(!form.hidden));
      if (!form.hidden) text.focus();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = text.value;
      if (!body.trim()) return;
      if (sent.text !== body) sent = { text: body, id: requestId() };
      send.disabled = true;
      status.textContent = "Sending…";
      try {
        const answer = await api(`/v1/mentions/${encodeURIComponent(m.id)}/reply`, {
          method: "POST",
          body: JSON.stringify({ text: body, brand: m.brand, request_id: sent.id }),
        });
        status.replaceChildren(answer.url ? link(answer.url, "Replied: open the reply") : "Replied");
        form.hidden = true;
        node.classList.add("done");
        const count = $("#inbox-count");
        count.textContent = String(Math.max(0, (Number(count.textContent) || 1) - 1));
        setTimeout(() => node.remove(), 4000);
      } catch (error) {
        if (error instanceof AuthError) return askForKey(`This key was refused: ${error.message}`);
        status.textContent = `Not sent: ${error.message}`;
        send.disabled = false;
      }
    });
    const author = m.author || {};
    const authorId = platform === "mastodon" ? author.handle || author.id : author.id;
    let followButton = null;
    if (authorId) {
      followButton = h("button", { type: "button", class: "button small ghost", text: "Follow", "aria-label": `Follow ${who} on ${platform}` });
      const followId = requestId();
      followButton.addEventListener("click", async () => {
        followButton.disabled = true;
        status.textContent = "Following…";
        try {
          await api(`/v1/authors/${platform}/${encodeURIComponent(authorId)}/follow`, {
            method: "POST",
            body: JSON.stringify({ brand: m.brand, request_id: followId }),
          });
          followButton.textContent = "Following";
          status.textContent = `Following ${who}`;
        } catch (error) {
          if (error instanceof AuthError) return askForKey(`This key was refused: ${error.message}`);
          status.textContent = `Not followed: ${error.message}`;
          followButton.disabled = false;
        }
      });
    }
    actions.insertBefore(replyButton, status);
    if (followButton) actions.insertBefore(followButton, status);
    node.append(form);
  }

  function requestId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  }

  // ------------------------------------------------------------------------------------------ alerts

  async function loadAlerts() {
    const alerts = await api("/v1/alerts?limit=100");
    for (const alert of alerts.slice().reverse()) addAlert(alert, false);
  }

  function connectStream() {
    clearTimeout(state.streamTimer);
    if (!state.running) return;
    if (state.stream) state.stream.close();
    const url = state.key ? `/v1/alerts/stream?key=${encodeURIComponent(state.key)}` : "/v1/alerts/stream";
    const stream = new EventSource(url);
    state.stream = stream;
    setStreamState("connecting", "Connecting…");
    stream.addEventListener("open", () => {
      state.streamRetryMs = 1000;
      setStreamState("live", "Live");
    });
    stream.addEventListener("alert", (event) => {
      try {
        addAlert(JSON.parse(event.data), true);
      } catch (error) {
        console.warn("unreadable alert event", error);
      }
    });
    stream.addEventListener("error", () => {
      if (stream !== state.stream) return;
      if (stream.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself and resumes with Last-Event-ID.
        setStreamState("reconnecting", "Reconnecting…");
        return;
      }
      // Closed for good (the server refused it, e.g. 401): find out why, then try again later.
      setStreamState("offline", "Offline");
      stream.close();
      state.stream = null;
      api("/v1/alerts?limit=100")
        .then((alerts) => {
          for (const alert of alerts.slice().reverse()) addAlert(alert, true);
          state.streamTimer = setTimeout(connectStream, state.streamRetryMs);
          state.streamRetryMs = Math.min(state.streamRetryMs * 2, 30000);
        })
        .catch((error) => {
          if (error instanceof AuthError) askForKey(`This key was refused: ${error.message}`);
          else {
            state.streamTimer = setTimeout(connectStream, state.streamRetryMs);
            state.streamRetryMs = Math.min(state.streamRetryMs * 2, 30000);
          }
        });
    });
  }

  function setStreamState(name, text) {
    const pill = $("#stream-status");
    pill.dataset.state = name;
    pill.textContent = text;
  }

  function addAlert(alert, fresh) {
    const known = state.alerts.get(alert.id);
    if (known) {
      if (alert.acked && !known.alert.acked) showAck(known, alert);
      return;
    }
    const entry = { alert, node: alertItem(alert) };
    state.alerts.set(alert.id, entry);
    const feed = $("#alert-feed");
    // Newest first, by creation time (a replayed older alert goes to its place).
    const after = [...feed.children].find((node) => state.alerts.get(node.dataset.alertId).alert.created_at < alert.created_at);
    feed.insertBefore(entry.node, after || null);
    if (fresh) {
      entry.node.classList.add("fresh");
      setTimeout(() => entry.node.classList.remove("fresh"), 8000);
    }
    while (feed.children.length > MAX_ALERTS) {
      const last = feed.lastElementChild;
      state.alerts.delete(last.dataset.alertId);
      last.remove();
    }
    if (alert.acked) showAck(entry, alert);
    updateAlertCount();
    if (fresh && state.series && state.series.brand === alert.brand) renderCharts(state.series);
  }

  function alertItem(alert) {
    const ev = alert.evidence || {};
    const button = h("button", { type: "button", class: "button small primary ack", text: "Acknowledge", "aria-label": `Acknowledge: ${alert.message}` });
    const status = h("span", { class: "action-status", role: "status" });
    const facts = [
      ["observed", num(alert.observed)],
      ["baseline", Number(alert.baseline).toFixed(1)],
      ["threshold", Number(alert.threshold).toFixed(1)],
    ];
    const evidence = [
      ["Terms", ev.terms],
      ["Topics", (ev.topics || []).map((t) => t.replaceAll("_", " "))],
      ["Authors", ev.authors],
    ].filter(([, values]) => values && values.length);
    const node = h(
      "li",
      { class: `alert sev-${alert.severity}`, dataset: { alertId: alert.id, kind: alert.kind, severity: alert.severity, brand: alert.brand, acked: "false" } },
      h(
        "div",
        { class: "alert-head" },
        h("span", { class: `sev sev-${alert.severity}`, text: alert.severity }),
        h("span", { class: "alert-kind", text: KINDS[alert.kind] || alert.kind.replaceAll("_", " ") }),
        h("span", { class: "brand-tag", text: alert.brand }),
        h("span", { class: "muted alert-time" }, timeEl(alert.created_at, true)),
      ),
      h("p", { class: "alert-message", text: alert.message }),
      h("dl", { class: "facts" }, ...facts.map(([k, v]) => h("div", null, h("dt", { text: k }), h("dd", { text: v })))),
      evidence.length ? h("dl", { class: "evidence" }, ...evidence.map(([k, v]) => h("div", null, h("dt", { text: k }), h("dd", { text: v.slice(0, 6).join(", ") })))) : null,
      ev.sample_mentions && ev.sample_mentions.length
        ? h("ul", { class: "samples", "aria-label": "Sample mentions" }, ...ev.sample_mentions.slice(0, 3).map((u, i) => h("li", null, link(u, shortUrl(u) || `sample ${i + 1}`))))
        : null,
      h("div", { class: "alert-actions" }, button, status),
    );
    const entry = () => state.alerts.get(alert.id);
    button.addEventListener("click", async () => {
      button.disabled = true;
      status.textContent = "Saving…";
      try {
        const view = await api(`/v1/alerts/${encodeURIComponent(alert.id)}/ack`, { method: "POST", body: "{}" });
        showAck(entry(), view);
      } catch (error) {
        if (error instanceof AuthError) return askForKey(`This key was refused: ${error.message}`);
        status.textContent = `Not saved: ${error.message}`;
        button.disabled = false;
      }
    });
    return node;
  }

  function shortUrl(url) {
    try {
      const parsed = new URL(url);
      const path = parsed.pathname.length > 28 ? `${parsed.pathname.slice(0, 27)}…` : parsed.pathname;
      return parsed.host + path;
    } catch {
      return null;
    }
  }

  function showAck(entry, view) {
    if (!entry) return;
    entry.alert = { ...entry.alert, acked: true, acked_at: view.acked_at, acked_by: view.acked_by };
    const node = entry.node;
    node.dataset.acked = "true";
    const button = node.querySelector(".ack");
    const status = node.querySelector(".alert-actions .action-status");
    const hadFocus = document.activeElement === button;
    button.remove();
    status.replaceChildren("✓ Acknowledged", view.acked_at ? " " : "", view.acked_at ? timeEl(view.acked_at) : "", view.acked_by ? ` by ${view.acked_by}` : "");
    if (hadFocus) {
      status.setAttribute("tabindex", "-1");
      status.focus();
    }
    updateAlertCount();
  }

  function updateAlertCount() {
    const open = [...state.alerts.values()].filter((e) => !e.alert.acked).length;
    $("#alerts-count").textContent = open ? `${open} open` : "";
    $("#alerts-empty").hidden = state.alerts.size > 0;
    document.title = open ? `(${open}) Écoute — live` : "Écoute — live";
  }

  // ------------------------------------------------------------------------------------------ history

  // The history view: a period report from the history store (`/report`, buckets in UTC) as a chart, a table
  // and headline figures against the previous period, its CSV, and a search of the period's stored mentions.
  // Loaded on demand (start, brand change, the form), never on the refresh tick: a report reads months.

  const HISTORY_DAYS = 30;
  const DAY_MS = 86400000;
  const utcDay = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric", timeZone: "UTC" });
  const utcMonth = new Intl.DateTimeFormat(undefined, { month: "long", year: "numeric", timeZone: "UTC" });
  const utcShortDay = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 1 });
  const HEADLINES = [
    ["mentions", "Mentions", "count"],
    ["positive_share", "Positive share", "share"],
    ["sentiment_avg", "Avg tone", "tone"],
    ["engagement", "Engagement", "count"],
    ["reach", "Reach", "count"],
    ["unique_authors", "Authors", "count"],
    ["share_of_voice", "Share of voice", "share"],
    ["love_index", "Love index", "index"],
  ];

  const isoDate = (ms) => new Date(ms).toISOString().slice(0, 10);

  function periodLabel(iso, bucket) {
    const date = new Date(iso);
    if (bucket === "month") return utcMonth.format(date);
    if (bucket === "week") return `Week of ${utcDay.format(date)}`;
    return utcDay.format(date);
  }

  /** The report's query from the form: whole UTC days, the "to" day included. */
  function historyQuery() {
    const since = $("#history-since").value;
    const until = $("#history-until").value;
    if (!since || !until) return null;
    const untilMs = Date.parse(`${until}T00:00:00Z`) + DAY_MS;
    if (!Number.isFinite(untilMs)) return null;
    const params = new URLSearchParams({
      since: `${since}T00:00:00Z`,
      until: new Date(untilMs).toISOString().replace(".000Z", "Z"),
      bucket: $("#history-bucket").value,
    });
    return params;
  }

  function setupHistory() {
    const today = Date.parse(`${isoDate(Date.now())}T00:00:00Z`);
    $("#history-until").value = isoDate(today);
    $("#history-since").value = isoDate(today - (HISTORY_DAYS - 1) * DAY_MS);
    $("#history-form").addEventListener("submit", (event) => {
      event.preventDefault();
      loadHistory();
    });
    $("#history-bucket").addEventListener("change", () => loadHistory());
    $("#history-csv").addEventListener("click", downloadCsv);
    $("#history-search").addEventListener("submit", (event) => {
      event.preventDefault();
      searchHistory(false);
    });
    $("#history-more").addEventListener("click", () => searchHistory(true));
  }

  async function loadHistory() {
    const brand = state.brand;
    const params = historyQuery();
    const status = $("#history-status");
    $("#history-brand").textContent = brand ? `· ${brand}` : "";
    if (!brand || !params) return;
    const csv = new URLSearchParams(params);
    csv.set("format", "csv");
    $("#history-csv").href = `${brandPath(brand)}/report?${csv}`;
    const ticket = ++state.history.loading;
    const section = $("#history");
    section.dataset.state = "loading";
    status.textContent = "Loading the report…";
    try {
      const report = await api(`${brandPath(brand)}/report?${params}`);
      if (ticket !== state.history.loading) return; // a later request replaced this one
      state.history.report = report;
      renderHistory(report);
      status.textContent = `${utcDay.format(new Date(report.since))} to ${utcDay.format(new Date(Date.parse(report.until) - 1))} (UTC), per ${report.bucket}; compared with the ${Math.round((Date.parse(report.until) - Date.parse(report.since)) / DAY_MS)} days before.`;
      section.dataset.state = "ready";
    } catch (error) {
      if (ticket !== state.history.loading) return;
      if (error instanceof AuthError) return askForKey(`This key was refused: ${error.message}`);
      state.history.report = null;
      renderHistory(null);
      status.textContent = error.status === 503 ? `History is not available: ${error.message}` : `No report: ${error.message}`;
      section.dataset.state = "error";
    }
  }

  function formatFigure(value, kind) {
    if (value === null || value === undefined) return "—";
    if (kind === "share") return percent.format(value);
    if (kind === "tone") return tone(value);
    if (kind === "index") return decimal.format(value);
    return integer.format(value);
  }

  function formatChange(change, kind) {
    if (!change || change.change === null || change.change === undefined) return "no comparison";
    const sign = (x) => (x > 0 ? "+" : x < 0 ? "−" : "±");
    if (kind === "count") {
      return change.change_pct === null ? `${sign(change.change)}${integer.format(Math.abs(change.change))}` : `${sign(change.change_pct)}${decimal.format(Math.abs(change.change_pct))} %`;
    }
    if (kind === "share") return `${sign(change.change)}${decimal.format(Math.abs(change.change) * 100)} pts`;
    if (kind === "tone") return `${sign(change.change)}${Math.abs(change.change).toFixed(2)}`;
    return `${sign(change.change)}${decimal.format(Math.abs(change.change))}`;
  }

  function renderHistory(report) {
    const totals = $("#history-totals");
    const rows = $("#history-rows");
    if (!report) {
      totals.replaceChildren();
      rows.replaceChildren(h("tr", null, h("td", { colspan: 13, class: "empty", text: "No report." })));
      $("#history-chart").replaceChildren();
      return;
    }
    totals.replaceChildren(
      ...HEADLINES.map(([name, title, kind]) => {
        const change = report.changes[name];
        const direction = !change || !change.change ? "flat" : change.change > 0 ? "up" : "down";
        return h(
          "div",
          { class: "figure", dataset: { figure: name } },
          h("dt", { text: title }),
          h("dd", { class: "figure-value", dataset: { value: change ? String(change.current ?? "") : "" }, text: formatFigure(change && change.current, kind) }),
          h("dd", { class: `figure-change ${direction}`, title: `previous period: ${formatFigure(change && change.previous, kind)}`, text: formatChange(change, kind) }),
        );
      }),
    );
    const cell = (field, value, text) => h("td", { class: "num", dataset: { field, value: value === null || value === undefined ? "" : String(value) }, text });
    rows.replaceChildren(
      ...report.buckets.map((b) =>
        h(
          "tr",
          { dataset: { start: b.start.slice(0, 10) }, class: b.partial ? "partial" : null },
          h("th", { scope: "row", title: b.partial ? "partly outside the period: counts only what falls in it" : null, text: periodLabel(b.start, report.bucket) + (b.partial ? " *" : "") }),
          cell("mentions", b.mentions, integer.format(b.mentions)),
          cell("positive", b.sentiment.positive, integer.format(b.sentiment.positive)),
          cell("neutral", b.sentiment.neutral, integer.format(b.sentiment.neutral)),
          cell("negative", b.sentiment.negative, integer.format(b.sentiment.negative)),
          cell("unscored", b.sentiment.unscored, integer.format(b.sentiment.unscored)),
          cell("sentiment_avg", b.sentiment_avg, tone(b.sentiment_avg)),
          cell("engagement", b.engagement.total, integer.format(b.engagement.total)),
          cell("reach", b.reach, integer.format(b.reach)),
          cell("unique_authors", b.unique_authors, integer.format(b.unique_authors)),
          cell("share_of_voice", b.share_of_voice, b.share_of_voice === null ? "—" : percent.format(b.share_of_voice)),
          cell("love_index", b.love.index, b.love.index === null ? "—" : decimal.format(b.love.index)),
          cell("social_visits", b.web && b.web.social_visits, b.web && b.web.social_visits !== null ? integer.format(b.web.social_visits) : "—"),
        ),
      ),
    );
    renderHistoryChart(report);
  }

  function renderHistoryChart(report) {
    const points = report.buckets.map((b) => ({ start: b.start, ...b.sentiment, sentiment_avg: b.sentiment_avg }));
    const total = report.totals.mentions;
    const short = report.bucket === "month" ? (iso) => utcMonth.format(new Date(iso)) : (iso) => utcShortDay.format(new Date(iso));
    drawChart($("#history-chart"), points, {
      label: short,
      series: [
        { key: "positive", label: "positive", cls: "pos" },
        { key: "neutral", label: "neutral", cls: "neu" },
        { key: "negative", label: "negative", cls: "neg" },
        { key: "unscored", label: "unscored", cls: "uns" },
      ],
      line: { key: "sentiment_avg", label: "average tone" },
      empty: "No mentions stored in this period",
      summary: `Mentions per ${report.bucket} from ${utcDay.format(new Date(report.since))}: ${num(total)} in all, ${num(report.totals.sentiment.positive)} positive, ${num(report.totals.sentiment.neutral)} neutral, ${num(report.totals.sentiment.negative)} negative.`,
    });
  }

  /** The CSV goes through fetch (the key is a header, which a plain link cannot send), then is saved. */
  async function downloadCsv(event) {
    event.preventDefault();
    const link = event.currentTarget;
    if (!link.href || link.getAttribute("href") === "#") return;
    const headers = state.key ? { Authorization: `Bearer ${state.key}` } : {};
    const status = $("#history-status");
    try {
      const response = await fetch(link.href, { headers, cache: "no-store" });
      if (response.status === 401) throw new AuthError(await errorDetail(response));
      if (!response.ok) throw new ApiError(await errorDetail(response), response.status);
      const blob = await response.blob();
      const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
      const url = URL.createObjectURL(blob);
      const save = h("a", { href: url, download: match ? match[1] : "report.csv", hidden: true });
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      if (error instanceof AuthError) return askForKey(`This key was refused: ${error.message}`);
      status.textContent = `The CSV could not be made: ${error.message}`;
    }
  }

  /** Turns the search's headline (escaped text with <mark> around the matched words) into nodes, as text. */
  function headlineNodes(headline) {
    const unescape = (text) => text.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&quot;", '"').replaceAll("&#39;", "'").replaceAll("&amp;", "&");
    const nodes = [];
    let marked = false;
    for (const part of headline.split(/(<\/?mark>)/)) {
      if (part === "<mark>") marked = true;
      else if (part === "</mark>") marked = false;
      else if (part) nodes.push(marked ? h("mark", { text: unescape(part) }) : unescape(part));
    }
    return nodes;
  }

  function searchResult(m) {
    const author = m.author || {};
    const who = author.handle ? `@${author.handle.replace(/^@/, "")}` : author.name || author.id || "someone";
    const compound = m.sentiment ? m.sentiment.compound : null;
    return h(
      "li",
      { class: "mention", dataset: { mentionId: m.id } },
      h(
        "div",
        { class: "mention-head" },
        link(author.url, who, { class: "mention-author" }),
        h("span", { class: "muted" }, m.site || m.source),
        h("time", { class: "muted", datetime: m.published_at, text: dateTime.format(new Date(m.published_at)) }),
        h("span", { class: "chips" }, h("span", { class: `chip ${toneClass(compound)}`, text: `tone ${tone(compound)}`, title: m.sentiment ? m.sentiment.label : "unscored" })),
      ),
      m.title ? h("p", { class: "mention-title", text: m.title }) : null,
      h("p", { class: "mention-text" }, ...(m.headline ? headlineNodes(m.headline) : [m.text])),
      safeUrl(m.url) ? h("div", { class: "mention-actions" }, link(m.url, "Open the post", { class: "button small ghost" })) : null,
    );
  }

  async function searchHistory(more) {
    const brand = state.brand;
    const params = historyQuery();
    const status = $("#history-search-status");
    const list = $("#history-results");
    const moreButton = $("#history-more");
    if (!brand || !params) return;
    const previous = state.history.search;
    if (more && !(previous && previous.cursor)) return;
    const query = more ? previous.params : new URLSearchParams({ since: params.get("since"), until: params.get("until"), limit: "20" });
    const q = $("#history-q").value.trim();
    if (!more && q) query.set("q", q);
    const page = new URLSearchParams(query);
    if (more) page.set("cursor", previous.cursor);
    status.textContent = "Searching…";
    moreButton.disabled = true;
    try {
      const found = await api(`${brandPath(brand)}/mentions/search?${page}`);
      if (!more) list.replaceChildren();
      list.append(...found.mentions.map(searchResult));
      const shown = list.children.length;
      state.history.search = { params: query, cursor: found.next_cursor, brand };
      moreButton.hidden = !found.next_cursor;
      status.textContent = shown
        ? `${integer.format(shown)} mention${shown === 1 ? "" : "s"}${found.next_cursor ? " so far" : ""}, newest first`
        : `Nothing found${q ? ` for “${q}”` : ""} in this period.`;
    } catch (error) {
      if (error instanceof AuthError) return askForKey(`This key was refused: ${error.message}`);
      status.textContent = `Search failed: ${error.message}`;
    } finally {
      moreButton.disabled = false;
    }
  }

  // ------------------------------------------------------------------------------------------ start

  function init() {
    setupKeyDialog();
    setupHistory();
    for (const button of document.querySelectorAll(".seg")) button.addEventListener("click", () => selectRange(button.dataset.range));
    const savedRange = remembered(RANGE_STORE);
    if (savedRange === "1h" || savedRange === "24h") selectRange(savedRange);
    if ("ResizeObserver" in window) {
      let last = 0;
      new ResizeObserver((entries) => {
        const width = Math.round(entries[0].contentRect.width);
        if (width !== last && state.series) renderCharts(state.series);
        if (width !== last && state.history.report) renderHistoryChart(state.history.report);
        last = width;
      }).observe($("#volume-chart"));
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.running) schedule(0);
    });
    const fromFragment = keyFromFragment();
    if (fromFragment) storeKey(fromFragment);
    else state.key = remembered(KEY_STORE);
    // Without a key, try anyway: an API with no key configured is open (development).
    start();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
