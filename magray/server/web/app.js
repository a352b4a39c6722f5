// The magray page: plain JavaScript, no build step, nothing loaded from elsewhere.
// Memory content is text written by agents and people: it only ever reaches the page through
// textContent, attribute values and form values, never as HTML.
"use strict";

const LAYERS = ["interact", "insights", "assets"];
const LAYER_COLOURS = { interact: "#8fb3d9", insights: "#3a7bbf", assets: "#1f3d66" };
const SVG = "http://www.w3.org/2000/svg";
const PAGE = 25;
const STATS_DAYS = 30;

const state = { csrf: null, view: "search", browseOffset: 0, current: null };

// -- small DOM helpers (text only) ------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function clear(node) { node.replaceChildren(); return node; }

function say(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "error" : "ok";
  box.hidden = !text;
}

function kvTable(table, rows) {
  clear(table);
  for (const [key, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    table.append(el("tr", {}, el("th", {}, key), el("td", {}, typeof value === "object" ? JSON.stringify(value) : value)));
  }
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// -- the API ----------------------------------------------------------------------------------------

async function api(method, path, body, retried) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) { showLogin(); }
  if (response.status === 403 && method !== "GET" && !retried && /CSRF/.test(data.error && data.error.message)) {
    // The server restarted since the page loaded (a new CSRF token): fetch it and try once more.
    state.csrf = (await api("GET", "/api/session")).csrf;
    return api(method, path, body, true);
  }
  if (!response.ok) throw new Error((data.error && data.error.message) || `${response.status} ${response.statusText}`);
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== "" && value !== null && value !== undefined) q.append(key, value);
  return q.toString();
}

// -- rendering memories -------------------------------------------------------------------------------

function formatPart(value) {
  if (value !== null && typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k} ${formatPart(v)}`).join(", ");
  }
  return typeof value === "number" && !Number.isInteger(value) ? value.toFixed(4) : String(value);
}

// Score parts are shown as they come: whatever parts the search reports appear here.
function partsList(parts) {
  const list = el("dl", { class: "parts" });
  for (const [key, value] of Object.entries(parts || {})) {
    if (value === null || value === undefined) continue;
    list.append(el("div", {}, el("dt", {}, key.replace(/_/g, " ")), el("dd", {}, formatPart(value))));
  }
  return list;
}

function tagChips(tags) {
  return el("span", { class: "tags" }, ...(tags || []).map((t) => el("span", { class: "tag" }, t)));
}

function memoryCard(m, extra) {
  const card = el("li", { class: "card", "data-id": m.id, tabindex: "0" },
    el("div", { class: "card-head" },
      el("span", { class: "id" }, `#${m.id}`),
      el("span", { class: `layer layer-${LAYERS.includes(m.layer) ? m.layer : "other"}` }, m.layer),
      extra && extra.score !== undefined ? el("span", { class: "score" }, `score ${extra.score.toFixed(4)}`) : null,
      m.project ? el("span", { class: "scope" }, `project ${m.project}`) : null,
      m.session ? el("span", { class: "scope" }, `session ${m.session}`) : null,
      el("span", { class: "muted when" }, m.created_at || ""),
    ),
    el("p", { class: "content" }, m.content),
    tagChips(m.tags),
    extra && extra.parts ? partsList(extra.parts) : null,
  );
  const open = () => showDetails(m.id);
  card.addEventListener("click", open);
  card.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
  return card;
}

// -- search -------------------------------------------------------------------------------------------

async function runSearch(event) {
  if (event) event.preventDefault();
  const params = {
    q: $("q").value, mode: $("mode").value, k: $("k").value, layer: $("search-layer").value,
    tag: $("search-tag").value, project: $("search-project").value,
    since: $("search-since").value, until: $("search-until").value,
    all: $("search-all").checked ? "1" : "",
  };
  if (!params.q.trim()) return;
  try {
    const data = await api("GET", `/api/search?${query(params)}`);
    const applied = Object.entries(data.filters || {}).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(", ") : v}`);
    const w = data.window;
    const time = !w ? "" : w.vague ? `; "${w.phrase}" favours newer memories`
      : w.applied ? `; time window "${w.phrase}": ${w.since || "the beginning"} to ${w.until || "now"}`
      : `; nothing matched in "${w.phrase}", so all times were searched`;
    $("applied").textContent = (data.count ? `${data.count} result(s)` : "no memory matches") +
      `, ${data.mode} search` +
      (applied.length ? `; filters applied: ${applied.join("; ")}` : w ? "" : "; no filter, no time window") + time;
    const list = clear($("results"));
    for (const hit of data.results) list.append(memoryCard(hit, { score: hit.score, parts: hit.scores }));
    if (event) say("");  // a new search by hand; a refresh after an edit keeps its message
  } catch (error) { say(error.message, true); }
}

// -- browse -------------------------------------------------------------------------------------------

async function runBrowse(event) {
  if (event) { event.preventDefault(); state.browseOffset = 0; }
  const params = {
    layer: $("browse-layer").value, tag: $("browse-tag").value, project: $("browse-project").value,
    session: $("browse-session").value, limit: PAGE, offset: state.browseOffset,
  };
  try {
    const data = await api("GET", `/api/memories?${query(params)}`);
    const list = clear($("memories"));
    for (const m of data.memories) list.append(memoryCard(m));
    $("page-info").textContent = data.count ? `${data.offset + 1}–${data.offset + data.count}` : "no memories";
    $("prev").disabled = data.offset === 0;
    $("next").disabled = !data.more;
  } catch (error) { say(error.message, true); }
}

async function loadScopes() {
  const data = await api("GET", "/api/scopes");
  for (const [select, items, label] of [[$("browse-project"), data.projects, "any project"],
                                       [$("browse-session"), data.sessions, "any session"]]) {
    const chosen = select.value;
    clear(select).append(el("option", { value: "" }, label));
    for (const item of items) select.append(el("option", { value: item.name }, `${item.name} (${item.memories})`));
    select.value = chosen;
  }
  const tags = clear($("known-tags"));
  for (const tag of data.tags) tags.append(el("option", { value: tag.name }, `${tag.memories} memories`));
}

// -- details and curation ------------------------------------------------------------------------------

async function showDetails(id) {
  try {
    const m = await api("GET", `/api/memories/${id}`);
    state.current = m;
    $("details").hidden = false;
    $("details-title").textContent = `Memory #${m.id}`;
    kvTable($("details-fields"), [
      ["layer", m.layer], ["title", m.title], ["kind", m.kind], ["source", m.source],
      ["project", m.project], ["session", m.session], ["tags", (m.tags || []).join(", ")],
      ["metadata", m.metadata], ["importance", m.importance], ["created", m.created_at],
      ["updated", m.updated_at], ["last used", m.accessed_at], ["uses", m.access_count ?? 0],
      ["expires", m.expires_at || "never"], ["deleted", m.deleted_at],
    ]);
    $("details-merged").hidden = !m.merged_into;
    $("details-merged-link").textContent = m.merged_into ? `#${m.merged_into}` : "";
    $("edit-content").value = m.content;
    $("edit-tags").value = (m.tags || []).join(", ");
    $("edit-importance").value = m.importance ?? 0.5;
    const move = clear($("move-to"));
    for (const layer of LAYERS) if (layer !== m.layer) move.append(el("option", { value: layer }, `to ${layer}`));
    const aliases = clear($("aliases"));
    for (const a of m.aliases || []) {
      aliases.append(el("li", { "data-id": a.id }, el("span", { class: "id" }, `#${a.id} `), el("span", { class: "content" }, a.content), " ",
        el("button", { type: "button", class: "unmerge", onclick: () => unmerge(a.id) }, "Unmerge")));
    }
    if (!aliases.children.length) aliases.append(el("li", { class: "muted" }, "none"));
  } catch (error) { say(error.message, true); }
}

async function refreshLists() {
  if (state.view === "search" && $("q").value.trim()) await runSearch();
  if (state.view === "browse") await runBrowse();
}

async function save(event) {
  event.preventDefault();
  const m = state.current;
  const body = {
    tags: $("edit-tags").value.split(",").map((t) => t.trim()).filter(Boolean),
    importance: Number($("edit-importance").value),
  };
  if ($("edit-content").value !== m.content) body.content = $("edit-content").value;
  try {
    await api("PATCH", `/api/memories/${m.id}`, body);
    say(`memory #${m.id} saved`);
    await showDetails(m.id);
    await refreshLists();
  } catch (error) { say(error.message, true); }
}

async function move() {
  const m = state.current;
  try {
    await api("POST", `/api/memories/${m.id}/move`, { to: $("move-to").value });
    say(`memory #${m.id} moved to ${$("move-to").value}`);
    await showDetails(m.id);
    await refreshLists();
  } catch (error) { say(error.message, true); }
}

async function forget() {
  const m = state.current;
  if (!window.confirm(`Forget memory #${m.id}?`)) return;
  try {
    await api("DELETE", `/api/memories/${m.id}`);
    say(`memory #${m.id} forgotten`);
    $("details").hidden = true;
    state.current = null;
    await refreshLists();
  } catch (error) { say(error.message, true); }
}

async function unmerge(id) {
  try {
    await api("POST", `/api/memories/${id}/unmerge`, {});
    say(`memory #${id} is a memory of its own again`);
    await showDetails(state.current && state.current.id !== id ? state.current.id : id);
  } catch (error) { say(error.message, true); }
}

// -- statistics and status ------------------------------------------------------------------------------

function barChart(container, groups, keys, colours, labelEvery) {
  // groups: [{label, values: {key: n}}]; stacked bars, one per group.
  clear(container);
  if (!groups.length) { container.append(el("p", { class: "muted" }, "nothing yet")); return; }
  const width = 720, height = 200, left = 40, bottom = 40, top = 10;
  const biggest = Math.max(1, ...groups.map((g) => keys.reduce((s, k) => s + (g.values[k] || 0), 0)));
  const step = (width - left) / groups.length;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 20}`, role: "img", class: "bars" });
  const scale = (n) => (height - bottom - top) * n / biggest;
  chart.append(svg("line", { x1: left, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
  chart.append(svg("text", { x: left - 6, y: top + 8, "text-anchor": "end", class: "tick" }, biggest));
  chart.append(svg("text", { x: left - 6, y: height - bottom, "text-anchor": "end", class: "tick" }, 0));
  groups.forEach((g, i) => {
    let y = height - bottom;
    const barWidth = Math.max(1, Math.min(step * 0.7, 48));
    const x = left + i * step + (step - barWidth) / 2;
    for (const key of keys) {
      const h = scale(g.values[key] || 0);
      if (!h) continue;
      y -= h;
      const rect = svg("rect", { x, y, width: barWidth, height: h, fill: colours[key] });
      rect.append(svg("title", {}, `${g.label} ${key}: ${g.values[key]}`));
      chart.append(rect);
    }
    if (i % labelEvery === 0) {
      chart.append(svg("text", { x: x + barWidth / 2, y: height - bottom + 14, "text-anchor": "middle", class: "tick" }, g.label));
    }
  });
  keys.forEach((key, i) => {
    chart.append(svg("rect", { x: left + i * 110, y: height + 2, width: 12, height: 12, fill: colours[key] }));
    chart.append(svg("text", { x: left + i * 110 + 16, y: height + 12, class: "tick" }, key));
  });
  container.append(chart);
}

function tile(label, value, fraction) {
  const box = el("div", { class: "tile" }, el("div", { class: "tile-value" }, value), el("div", { class: "muted" }, label));
  if (fraction !== undefined && fraction !== null) {
    const gauge = el("div", { class: "gauge" }, el("div", { class: "gauge-fill" }));
    gauge.firstChild.style.width = `${Math.round(fraction * 100)}%`;
    box.append(gauge);
  }
  return box;
}

async function loadStats() {
  try {
    const s = await api("GET", `/api/stats?days=${STATS_DAYS}`);
    const total = Object.values(s.counts).reduce((a, b) => a + b, 0);
    const rate = s.cache.hit_rate;
    clear($("tiles")).append(
      tile("memories", total),
      ...LAYERS.map((layer) => tile(layer, s.counts[layer] ?? 0)),
      tile("embedding cache hit rate", rate === null || rate === undefined ? "n/a" : `${(rate * 100).toFixed(1)}%`, rate),
      tile("file size", bytes(s.size_bytes)),
      tile("WAL size", bytes(s.wal_bytes)),
    );
    const months = new Map();
    for (const row of s.layers_by_month) {
      if (!months.has(row.month)) months.set(row.month, {});
      months.get(row.month)[row.layer] = row.count;
    }
    barChart($("chart-months"), [...months].map(([label, values]) => ({ label, values })), LAYERS, LAYER_COLOURS,
      Math.max(1, Math.ceil(months.size / 12)));
    // Every day of the window, quiet ones included, ending today (UTC, as the file counts them).
    const days = new Map();
    const today = Date.parse(new Date().toISOString().slice(0, 10));
    for (let i = STATS_DAYS - 1; i >= 0; i--) days.set(new Date(today - i * 86400000).toISOString().slice(0, 10), {});
    for (const row of s.activity_by_day) {
      if (!days.has(row.day)) days.set(row.day, {});
      days.get(row.day)[row.name] = row.value;
    }
    barChart($("chart-days"), [...days].map(([label, values]) => ({ label: label.slice(5), values })),
      ["adds", "searches"], { adds: "#3a7bbf", searches: "#e0a040" }, Math.max(1, Math.ceil(days.size / 10)));
    kvTable($("counters"), Object.entries(s.counters));
  } catch (error) { say(error.message, true); }
}

async function loadStatus() {
  try {
    const s = await api("GET", "/api/status");
    $("file-line").textContent = s.path.split(/[\\/]/).pop();
    $("file-line").title = s.path;
    kvTable($("status-file"), [
      ["path", s.path], ["size", bytes(s.size_bytes)], ["WAL", bytes(s.wal_bytes)],
      ["schema version", s.schema_version], ["profile", `${s.profile}: ${s.durability}`],
      ["SQLite", s.sqlite_version], ["sqlite-vec", s.sqlite_vec_version],
      ["memories", LAYERS.map((l) => `${l} ${s.counts[l] ?? 0}`).join(", ")],
      ["expired / deleted", `${s.expired} / ${s.deleted}`],
      ["embedding cache", `${s.cache.entries} entries, ${bytes(s.cache.bytes)}`],
      ["magray", s.version],
    ]);
    const model = s.model || {};
    kvTable($("status-model"), [
      ["model", model.model_name || "none bound yet"], ["dimensions", model.dim], ["pooling", model.pooling],
      ["sha256", model.sha256], ["device", s.device || "not loaded"],
    ]);
  } catch (error) { say(error.message, true); }
}

// -- navigation and start-up ------------------------------------------------------------------------------

function show(view) {
  state.view = ["search", "browse", "stats", "status"].includes(view) ? view : "search";
  for (const name of ["search", "browse", "stats", "status"]) {
    $(`view-${name}`).hidden = name !== state.view;
    $(`nav-${name}`).classList.toggle("active", name === state.view);
  }
  if (state.view === "browse") { loadScopes().catch((e) => say(e.message, true)); runBrowse(); }
  if (state.view === "stats" || state.view === "status") $("details").hidden = true;
  if (state.view === "stats") loadStats();
  if (state.view === "status") loadStatus();
}

function showLogin() {
  $("app").hidden = true;
  $("login").hidden = false;
}

async function start() {
  const session = await api("GET", "/api/session");
  if (session.auth_required && !session.authenticated) {
    const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromLink) { await login(fromLink); return; }
    showLogin();
    return;
  }
  state.csrf = session.csrf;
  $("login").hidden = true;
  $("app").hidden = false;
  show(location.hash.slice(1));
  loadStatus();
  loadScopes().catch((e) => say(e.message, true));
}

async function login(token) {
  try {
    await api("POST", "/api/login", { token });
    history.replaceState(null, "", location.pathname + "#search");  // the token leaves the address bar
    await start();
  } catch (error) { say(error.message, true); }
}

function init() {
  for (const select of [$("search-layer"), $("browse-layer")]) {
    for (const layer of LAYERS) select.append(el("option", { value: layer }, layer));
  }
  $("search-form").addEventListener("submit", runSearch);
  $("browse-form").addEventListener("submit", runBrowse);
  $("prev").addEventListener("click", () => { state.browseOffset = Math.max(0, state.browseOffset - PAGE); runBrowse(); });
  $("next").addEventListener("click", () => { state.browseOffset += PAGE; runBrowse(); });
  $("edit-form").addEventListener("submit", save);
  $("move").addEventListener("click", move);
  $("forget").addEventListener("click", forget);
  $("details-close").addEventListener("click", () => { $("details").hidden = true; });
  $("details-merged-link").addEventListener("click", (e) => { e.preventDefault(); showDetails(state.current.merged_into); });
  $("details-unmerge-self").addEventListener("click", () => unmerge(state.current.id));
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("token").value); });
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  start().catch((error) => say(error.message, true));
}

document.addEventListener("DOMContentLoaded", init);
