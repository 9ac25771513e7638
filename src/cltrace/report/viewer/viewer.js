// cltrace graph viewer: plain JavaScript and SVG, no dependency, no request outside the server
// that served it (api/index, api/feature, files/, api/qparams).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const DX = 28; // horizontal room per node in a cell
const DY = 64; // vertical room per layer row
const PAD = { left: 40, right: 30, top: 30, bottom: 60 };
const MAX_CELL = 14; // nodes side by side in one layer-position cell before they squeeze
const MAX_DRAWN_EDGES = 4000; // the strongest visible edges are drawn; SVG slows down past this
const KIND = {
  "cross layer transcoder": "feature",
  "mlp reconstruction error": "error",
  "embedding": "embedding",
  "logit": "logit",
};

const S = {
  index: null, path: null, doc: null, nodes: [], byId: new Map(), links: [],
  inEdges: new Map(), outEdges: new Map(), maxW: 1, nLayers: 0, nPos: 0,
  pinned: [], supernodes: [], selected: null, nodeT: 1, edgeT: 0,
  kept: new Map(), features: new Map(), descriptions: {}, dirty: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toPrecision(d));
const keyOf = (layer, feature) => `${layer}/${feature}`;

// ---------------------------------------------------------------- graph model

function decorate(n) {
  // a coarsened graph's merged nodes (cltrace supernodes) have their own feature_type
  n.kind = KIND[n.feature_type] || "supernode";
  const parts = n.node_id.split("_");
  if (n.kind === "supernode") {
    n.L = n.layer === "E" ? -1 : parseInt(n.layer, 10);
  } else if (n.kind === "feature") {
    n.L = parseInt(n.layer, 10);
    n.F = parseInt(parts[1], 10); // both writers put the feature index in the id
  } else if (n.kind === "error") {
    n.L = parseInt(n.layer, 10);
  } else if (n.kind === "embedding") {
    n.L = -1;
    n.token = parseInt(parts[1], 10);
  } else {
    n.L = parseInt(n.layer, 10) - 1;
  }
  n.pos = n.ctx_idx;
}

function tokenText(pos) {
  const toks = (S.doc && S.doc.metadata.prompt_tokens) || [];
  return (toks[pos] || "").replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}

function label(n) {
  if (n.kind === "feature") {
    const desc = n.clerp || S.descriptions[keyOf(n.L, n.F)] || "";
    return desc ? `L${n.L} F${n.F}: ${desc}` : `L${n.L} F${n.F}`;
  }
  if (n.kind === "error") return `error L${n.L} at "${tokenText(n.pos)}"`;
  if (n.kind === "embedding") return `token "${tokenText(n.pos)}" (pos ${n.pos})`;
  if (n.kind === "supernode") return `supernode: ${n.clerp}` + (n.members ? ` (${n.members.length} nodes)` : "");
  return n.clerp || `logit ${n.feature}`;
}

function build(doc) {
  S.doc = doc;
  S.nodes = doc.nodes.slice();
  S.nodes.forEach(decorate);
  S.byId = new Map(S.nodes.map((n) => [n.node_id, n]));
  S.links = doc.links.filter((l) => S.byId.has(l.source) && S.byId.has(l.target));
  S.inEdges = new Map(); S.outEdges = new Map();
  for (const l of S.links) {
    if (!S.inEdges.has(l.target)) S.inEdges.set(l.target, []);
    if (!S.outEdges.has(l.source)) S.outEdges.set(l.source, []);
    S.inEdges.get(l.target).push(l);
    S.outEdges.get(l.source).push(l);
  }
  S.maxW = 1e-12;
  for (const l of S.links) S.maxW = Math.max(S.maxW, Math.abs(l.weight));
  const logitLayers = S.nodes.filter((n) => n.kind === "logit").map((n) => n.L);
  const layers = S.nodes.filter((n) => n.kind === "feature" || n.kind === "error").map((n) => n.L + 1);
  S.nLayers = Math.max(0, ...logitLayers, ...layers);
  S.nPos = Math.max((doc.metadata.prompt_tokens || []).length, ...S.nodes.map((n) => n.pos + 1));
  const q = doc.qParams || {};
  S.pinned = (q.pinnedIds || []).filter((id) => S.byId.has(id));
  S.supernodes = (q.supernodes || []).map((s) => s.slice());
  S.selected = q.clickedId && S.byId.has(q.clickedId) ? q.clickedId : null;
  S.dirty = false;
}

function rowOf(n) {
  if (n.kind === "embedding" || (n.kind === "supernode" && n.L < 0)) return 0;
  if (n.kind === "logit") return S.nLayers + 1;
  return n.L + 1;
}

function layout(nodes) {
  // cells (row, position), most influential node first; a column is as wide as its fullest
  // cell, up to MAX_CELL nodes (more squeeze together: lower the node threshold to spread them)
  const cells = new Map();
  for (const n of nodes) {
    const k = `${rowOf(n)}:${n.pos}`;
    if (!cells.has(k)) cells.set(k, []);
    cells.get(k).push(n);
  }
  const width = new Array(S.nPos).fill(1);
  for (const [k, list] of cells) {
    const pos = parseInt(k.split(":")[1], 10);
    width[pos] = Math.min(MAX_CELL, Math.max(width[pos], list.length));
    list.sort((a, b) => (a.influence ?? -1) - (b.influence ?? -1));
  }
  const start = [];
  let x = PAD.left;
  for (let p = 0; p < S.nPos; p++) { start.push(x); x += width[p] * DX + 14; }
  S.colStart = start; S.colWidth = width.map((w) => w * DX);
  S.width = x + PAD.right;
  S.height = PAD.top + (S.nLayers + 1) * DY + PAD.bottom;
  for (const [k, list] of cells) {
    const [row, pos] = k.split(":").map((v) => parseInt(v, 10));
    const step = Math.min(DX, S.colWidth[pos] / list.length);
    const off = (S.colWidth[pos] - list.length * step) / 2;
    list.forEach((n, i) => {
      n.x = start[pos] + off + (i + 0.5) * step;
      n.y = PAD.top + (S.nLayers + 1 - row) * DY;
    });
  }
}

function nodeVisible(n) {
  if (n.kind === "embedding" || n.kind === "logit") return true;
  if (S.pinned.includes(n.node_id) || S.nodeT >= 1) return true; // shares reach 1 + rounding
  return n.influence === null || n.influence === undefined || n.influence <= S.nodeT + 1e-9;
}

function edgeVisible(l, shown) {
  return shown.has(l.source) && shown.has(l.target) && Math.abs(l.weight) >= S.edgeT * S.maxW;
}

// ---------------------------------------------------------------- drawing

function render() {
  const g = $("graph");
  g.replaceChildren();
  if (!S.doc) return;
  const shownNodes = S.nodes.filter(nodeVisible);
  const shown = new Set(shownNodes.map((n) => n.node_id));
  layout(shownNodes);
  g.setAttribute("width", S.width);
  g.setAttribute("height", S.height);
  const axis = svg("g", { class: "axis" });
  for (let r = 0; r <= S.nLayers + 1; r++) {
    const y = PAD.top + (S.nLayers + 1 - r) * DY;
    axis.append(svg("line", { x1: 0, x2: S.width, y1: y, y2: y }));
    const t = svg("text", { x: 2, y: y + 4 });
    t.textContent = r === 0 ? "emb" : r === S.nLayers + 1 ? "logit" : `L${r - 1}`;
    axis.append(t);
  }
  for (let p = 0; p < S.nPos; p++) {
    const t = svg("text", {
      x: S.colStart[p] + S.colWidth[p] / 2, y: S.height - PAD.bottom + 24, "text-anchor": "middle",
    });
    t.textContent = tokenText(p);
    axis.append(t);
  }
  g.append(axis);

  const edges = svg("g", { id: "edges" });
  let visible = S.links.filter((l) => edgeVisible(l, shown));
  const nVisible = visible.length;
  if (nVisible > MAX_DRAWN_EDGES) {
    visible = visible.sort((x, y) => Math.abs(y.weight) - Math.abs(x.weight)).slice(0, MAX_DRAWN_EDGES);
  }
  let nEdges = 0;
  for (const l of visible) {
    const a = S.byId.get(l.source), b = S.byId.get(l.target);
    const my = (a.y + b.y) / 2;
    const path = svg("path", {
      class: "edge", d: `M${a.x},${a.y} C${a.x},${my} ${b.x},${my} ${b.x},${b.y}`,
      stroke: l.weight >= 0 ? "#2b6cb0" : "#c0392b",
      "stroke-width": (0.4 + 3.6 * Math.abs(l.weight) / S.maxW).toFixed(2),
      "stroke-opacity": 0.55, "data-source": l.source, "data-target": l.target,
    });
    edges.append(path);
    nEdges++;
  }
  g.append(edges);

  const groups = svg("g", { id: "supernodes" });
  for (const [name, ...ids] of S.supernodes) {
    const members = ids.map((id) => S.byId.get(id)).filter((n) => n && shown.has(n.node_id));
    if (!members.length) continue;
    const xs = members.map((n) => n.x), ys = members.map((n) => n.y);
    const x0 = Math.min(...xs) - 12, y0 = Math.min(...ys) - 14;
    const sg = svg("g", { class: "supernode", "data-name": name });
    sg.append(svg("rect", {
      x: x0, y: y0, width: Math.max(...xs) - x0 + 12, height: Math.max(...ys) - y0 + 12, rx: 6,
    }));
    const t = svg("text", { x: x0 + 2, y: y0 - 2 });
    t.textContent = name;
    sg.append(t);
    groups.append(sg);
  }
  g.append(groups);

  const nodes = svg("g", { id: "nodes" });
  let nShown = 0;
  for (const n of S.nodes) {
    if (!shown.has(n.node_id)) continue;
    nShown++;
    const cls = ["node", n.kind];
    if (n.kind === "feature" && S.kept.has(keyOf(n.L, n.F))) cls.push("kept");
    if (S.pinned.includes(n.node_id)) cls.push("pinned");
    if (S.selected === n.node_id) cls.push("selected");
    const ng = svg("g", {
      class: cls.join(" "), "data-id": n.node_id, transform: `translate(${n.x},${n.y})`,
    });
    let shape;
    if (n.kind === "feature") shape = svg("circle", { r: 7 });
    else if (n.kind === "error") shape = svg("rect", { x: -6, y: -6, width: 12, height: 12 });
    else if (n.kind === "embedding") shape = svg("rect", { x: -9, y: -6, width: 18, height: 12, rx: 3 });
    else if (n.kind === "supernode") shape = svg("rect", { x: -11, y: -8, width: 22, height: 16, rx: 8 });
    else shape = svg("polygon", { points: "0,-9 9,0 0,9 -9,0" });
    shape.setAttribute("class", "shape");
    ng.append(shape);
    if (n.kind === "feature" || n.kind === "logit" || n.kind === "supernode") {
      const t = svg("text", { y: 18, "text-anchor": "middle" });
      t.textContent = n.kind === "feature" ? `${n.L}/${n.F}`
        : n.kind === "supernode" ? n.clerp : (n.clerp.match(/"(.*)"/) || ["", ""])[1];
      ng.append(t);
    }
    ng.addEventListener("mouseenter", (ev) => hover(n, ev));
    ng.addEventListener("mouseleave", () => hover(null));
    ng.addEventListener("click", () => select(n.node_id));
    nodes.append(ng);
  }
  g.append(nodes);
  g.dataset.nodes = nShown;
  g.dataset.edges = nEdges;
  $("counts").textContent =
    `${nShown} of ${S.nodes.length} nodes, ${nVisible} of ${S.links.length} edges shown` +
    (nEdges < nVisible ? ` (the strongest ${nEdges} drawn)` : "");
}

function hover(n, ev) {
  const tip = $("tooltip");
  const g = $("graph");
  if (!n) {
    tip.hidden = true;
    g.querySelectorAll(".dim").forEach((e) => e.classList.remove("dim"));
    return;
  }
  const near = new Set([n.node_id]);
  for (const l of S.inEdges.get(n.node_id) || []) near.add(l.source);
  for (const l of S.outEdges.get(n.node_id) || []) near.add(l.target);
  g.querySelectorAll(".node").forEach((e) => e.classList.toggle("dim", !near.has(e.dataset.id)));
  g.querySelectorAll(".edge").forEach((e) => e.classList.toggle(
    "dim", e.dataset.source !== n.node_id && e.dataset.target !== n.node_id));
  tip.textContent = label(n) + (n.activation != null ? `  (act ${fmt(n.activation)})` : "");
  const area = $("graph-area").getBoundingClientRect();
  tip.style.left = `${ev.clientX - area.left + $("graph-area").scrollLeft + 12}px`;
  tip.style.top = `${ev.clientY - area.top + $("graph-area").scrollTop + 12}px`;
  tip.hidden = false;
}

// ---------------------------------------------------------------- cards

async function featureData(layer, feature) {
  const k = keyOf(layer, feature);
  if (S.index.kind === "graph") return null;
  if (!S.features.has(k)) {
    try { S.features.set(k, await getJSON(`api/feature/${layer}/${feature}`)); }
    catch (e) { S.features.set(k, null); }
  }
  return S.features.get(k);
}

function edgeList(title, list, other) {
  const sorted = list.slice().sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 12);
  const ul = el("ul", { class: "edges" });
  for (const l of sorted) {
    const n = S.byId.get(l[other]);
    ul.append(el("li", { onclick: () => select(n.node_id) },
      el("span", { class: l.weight >= 0 ? "w-pos" : "w-neg" }, fmt(l.weight)), " ", label(n)));
  }
  return el("div", {}, el("h3", {}, `${title} (${list.length})`), ul);
}

function examplesBlock(detail) {
  const out = el("div", { class: "examples" });
  const quantiles = (detail && detail.examples_quantiles) || [];
  const examples = quantiles.length ? quantiles[0].examples.slice(0, 6) : [];
  if (!examples.length) return null;
  const max = detail.max_activation || Math.max(1e-9, ...examples.flatMap((e) => e.tokens_acts_list));
  out.append(el("h3", {}, `Top activating examples (${quantiles[0].quantile_name || "top"})`));
  for (const ex of examples) {
    const line = el("div", { class: "example" });
    ex.tokens.forEach((tok, i) => {
      const a = Math.max(0, ex.tokens_acts_list[i] || 0) / max;
      const span = el("span", { title: fmt(ex.tokens_acts_list[i]) }, tok.replace(/\n/g, "⏎"));
      if (a > 0) span.style.background = `rgba(230, 126, 34, ${Math.min(1, a).toFixed(2)})`;
      line.append(span);
    });
    out.append(line);
  }
  return out;
}

function logitsBlock(detail) {
  if (!detail || !detail.top_logits) return null;
  const col = (title, list) => el("div", {}, el("h3", {}, title),
    el("ul", {}, ...list.slice(0, 8).map((t) => el("li", {}, `${JSON.stringify(t.token)} ${fmt(t.value)}`))));
  return el("div", { class: "logits" },
    col("Promotes", detail.top_logits), col("Suppresses", detail.bottom_logits || []));
}

function scoresBlock(scores) {
  if (!scores) return null;
  const rows = Object.entries(scores).map(([k, v]) => el("tr", {}, el("td", { class: "l" }, k), el("td", {}, fmt(v))));
  return el("div", {}, el("h3", {}, "Interpretation scores"), el("table", {}, ...rows));
}

async function showCard(n, layer, feature) {
  const card = $("card");
  const parts = [];
  let data = null;
  if (n) {
    const pinned = S.pinned.includes(n.node_id);
    parts.push(el("h2", {}, label(n)));
    parts.push(el("div", { class: "muted" }, `${n.node_id} · ${n.kind} · position ${n.pos} "${tokenText(n.pos)}"`));
    const facts = [];
    if (n.activation != null) facts.push(`activation on this prompt ${fmt(n.activation)}`);
    if (n.influence != null) facts.push(`cumulative influence ${fmt(n.influence)}`);
    if (n.token_prob) facts.push(`probability ${fmt(n.token_prob)}`);
    if (facts.length) parts.push(el("div", { class: "facts" }, facts.join(" · ")));
    parts.push(el("button", { id: "pin-button", type: "button", onclick: () => togglePin(n.node_id) },
      pinned ? "Unpin" : "Pin"));
    if (n.kind === "feature") { layer = n.L; feature = n.F; }
  }
  if (layer !== undefined && feature !== undefined) {
    data = await featureData(layer, feature);
    if (!n) parts.push(el("h2", {}, `L${layer} F${feature}`));
    const desc = (n && n.clerp) || (data && data.description) || "";
    parts.push(el("p", { class: "description" }, desc ? desc : el("span", { class: "muted" }, "no description")));
    if (data && data.explainer) parts.push(el("div", { class: "muted" }, `explainer: ${data.explainer}`));
    if (data && data.kept) {
      parts.push(el("div", { class: "kept-note" },
        `kept by PIE on ${data.kept.kept_count} prompts (${data.kept.occurrences} occurrences)`));
    }
    if (data && data.detail) {
      parts.push(el("div", { class: "muted" },
        `frequency ${fmt(data.detail.frequency)} · max activation ${fmt(data.detail.max_activation)}`));
    }
    parts.push(scoresBlock(data && data.scores));
    parts.push(examplesBlock(data && data.detail));
    parts.push(logitsBlock(data && data.detail));
  }
  if (n) {
    parts.push(edgeList("Inputs", S.inEdges.get(n.node_id) || [], "source"));
    parts.push(edgeList("Outputs", S.outEdges.get(n.node_id) || [], "target"));
  }
  card.replaceChildren(...parts.filter(Boolean));
}

function select(id) {
  S.selected = id;
  render();
  showCard(S.byId.get(id));
}

// ---------------------------------------------------------------- pins, supernodes, saving

function togglePin(id) {
  const i = S.pinned.indexOf(id);
  if (i >= 0) S.pinned.splice(i, 1); else S.pinned.push(id);
  S.dirty = true;
  render();
  renderPins();
  if (S.selected === id) showCard(S.byId.get(id));
}

function renderPins() {
  $("pinned-list").replaceChildren(...S.pinned.map((id) => el("li", {},
    el("span", { onclick: () => select(id) }, label(S.byId.get(id))), " ",
    el("button", { type: "button", title: "unpin", onclick: () => togglePin(id) }, "×"))));
  $("supernode-list").replaceChildren(...S.supernodes.map(([name, ...ids], i) => el("li", {},
    `${name}: ${ids.length} nodes `,
    el("button", { type: "button", title: "remove", onclick: () => {
      S.supernodes.splice(i, 1); S.dirty = true; render(); renderPins();
    } }, "×"))));
  $("save-status").textContent = S.dirty ? "unsaved changes" : "";
}

function groupPinned() {
  // a node belongs to one supernode at most, and names are distinct (as the format's readers
  // check): pinned nodes already in a group stay out of the new one
  const grouped = new Set(S.supernodes.flatMap(([, ...ids]) => ids));
  const members = S.pinned.filter((id) => !grouped.has(id));
  if (members.length < 2) {
    $("save-status").textContent = "pin at least two nodes that are in no supernode yet";
    return;
  }
  const names = new Set(S.supernodes.map(([name]) => name));
  const name = $("supernode-name").value.trim() || `supernode ${S.supernodes.length + 1}`;
  if (names.has(name)) {
    $("save-status").textContent = `a supernode is already called "${name}"; pick another name`;
    return;
  }
  S.supernodes.push([name, ...members]);
  $("supernode-name").value = "";
  S.dirty = true;
  render();
  renderPins();
}

async function save() {
  const body = {
    pinnedIds: S.pinned, supernodes: S.supernodes,
    linkType: (S.doc.qParams && S.doc.qParams.linkType) || "both",
    clickedId: S.selected || "", sg_pos: (S.doc.qParams && S.doc.qParams.sg_pos) || "",
  };
  try {
    const out = await getJSON(`api/qparams/${encodeURIComponent(S.path)}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    S.doc.qParams = out.qParams;
    S.dirty = false;
    renderPins();
    $("save-status").textContent = "saved";
  } catch (e) {
    $("save-status").textContent = `not saved: ${e.message}`;
  }
}

// ---------------------------------------------------------------- run panel and start

function renderRun() {
  const run = S.index.run;
  if (!run) return;
  $("run").hidden = false;
  S.kept = new Map(run.kept.map((f) => [keyOf(f.layer, f.feature), f]));
  $("run-info").textContent = `${run.kept.length} features kept by ${run.method || "?"} at K=${run.budget || "?"}` +
    (run.task ? ` (task ${run.task})` : "");
  if (run.report) {
    const a = $("report-link");
    a.href = `files/${run.report}`;
    a.hidden = false;
  }
  $("kept-list").replaceChildren(...run.kept.slice(0, 200).map((f) => el("li", {
    onclick: () => {
      const here = S.nodes.filter((n) => n.kind === "feature" && n.L === f.layer && n.F === f.feature);
      if (here.length) select(here[0].node_id); else showCard(null, f.layer, f.feature);
    },
  }, `L${f.layer} F${f.feature} `, el("span", { class: "muted" },
    `kept on ${f.kept_count}` + (S.descriptions[keyOf(f.layer, f.feature)] ? ` · ${S.descriptions[keyOf(f.layer, f.feature)]}` : "")))));
}

async function loadGraph(path) {
  S.path = path;
  const doc = await getJSON(`files/${path.split("/").map(encodeURIComponent).join("/")}`);
  build(doc);
  $("prompt").textContent = doc.metadata.prompt || "";
  $("prompt").title = doc.metadata.prompt || "";
  const url = new URL(window.location.href);
  url.searchParams.set("graph", path);
  window.history.replaceState(null, "", url);
  $("empty").hidden = true;
  render();
  renderPins();
  if (S.selected) showCard(S.byId.get(S.selected));
  else $("card").replaceChildren(el("p", { class: "muted" }, "Hover a node to see its edges; click it for its card."));
}

function slider(id, set) {
  const input = $(id);
  const show = () => { $(`${id}-value`).textContent = Number(input.value).toFixed(2); };
  input.addEventListener("input", () => { set(Number(input.value)); show(); render(); });
  show();
}

async function start() {
  S.index = await getJSON("api/index");
  document.title = `cltrace · ${S.index.name}`;
  const sel = $("graph-select");
  for (const g of S.index.graphs) sel.append(el("option", { value: g.path }, `${g.path} · ${g.prompt}`));
  sel.addEventListener("change", () => loadGraph(sel.value));
  slider("node-threshold", (v) => { S.nodeT = v; });
  slider("edge-threshold", (v) => { S.edgeT = v; });
  $("group-button").addEventListener("click", groupPinned);
  $("save-button").addEventListener("click", save);
  if (S.index.kind !== "graph") S.descriptions = await getJSON("api/descriptions");
  renderRun();
  if (!S.index.graphs.length) {
    sel.hidden = true;
    const msg = $("empty");
    msg.hidden = false;
    msg.textContent = S.index.kind === "pie"
      ? "This run has no graph yet. Write one into it with: cltrace attribute --prompt '...' --out RUN/graphs/NAME.json; the kept features on the right open their cards."
      : "No graph file here.";
    return;
  }
  const wanted = new URL(window.location.href).searchParams.get("graph");
  const first = S.index.graphs.find((g) => g.path === wanted) || S.index.graphs[0];
  sel.value = first.path;
  await loadGraph(first.path);
}

window.addEventListener("DOMContentLoaded", () => {
  start().catch((e) => {
    const msg = $("empty");
    msg.hidden = false;
    msg.textContent = `The viewer could not start: ${e.message}`;
  });
});
