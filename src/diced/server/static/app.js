// The diced web page: repos, the version DAG, a version's instances, note and log, and a
// slice viewer or key list for the chosen instance, with a link to a local Neuroglancer.
// State lives in the URL fragment (#repo=…&node=…&inst=…&pos=x,y,z&zoom=…&scale=…), so a view
// can be bookmarked and shared; the same keys are read from the query string.

import * as api from "./api.js";
import { renderDag, branchName } from "./dag.js";
import { SliceViewer, volumeFromInfo, escapeHtml } from "./slices.js";

const $ = (id) => document.getElementById(id);
const NG_TYPES = new Set(["uint8blk", "grayscale8", "labelmap", "labelarray", "labelblk", "labels64"]);

const state = {
  repos: {},        // root uuid -> repo JSON
  repo: null,       // root uuid
  node: null,       // uuid
  inst: null,       // instance name
  view: {},         // pos / zoom / scale from the URL
  config: { neuroglancer: false, neuroglancer_path: "neuroglancer/v/diced/" },
  viewer: null,
  nodeInfos: {},    // instance name -> info JSON at the chosen version (or Error)
  loadSeq: 0,
  instSeq: 0,
  hashTimer: 0,
};

// For the browser console (and tests): the page's state, read-only by convention.
window.diced = { state };

function setStatus(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", error);
}

function readHash() {
  // The fragment, or the query string (Repo.view() opens "/?repo=<root>").
  const q = new URLSearchParams(location.search);
  for (const [k, v] of new URLSearchParams(location.hash.slice(1))) q.set(k, v);
  const view = {};
  if (q.get("pos")) {
    const p = q.get("pos").split(",").map(Number);
    if (p.length === 3 && p.every(Number.isFinite)) view.pos = p.map((x) => x + 0.5);
  }
  if (q.get("zoom") && Number(q.get("zoom")) > 0) view.zoom = Number(q.get("zoom"));
  if (q.get("scale") && q.get("scale") !== "auto" && Number.isInteger(Number(q.get("scale")))) {
    view.scale = Number(q.get("scale"));
  }
  if (q.get("overlay")) view.overlay = q.get("overlay");
  return { repo: q.get("repo"), node: q.get("node"), inst: q.get("inst"), view };
}

function writeHash(view = null) {
  const q = new URLSearchParams();
  if (state.repo) q.set("repo", state.repo);
  if (state.node) q.set("node", state.node);
  if (state.inst) q.set("inst", state.inst);
  if (view) {
    q.set("pos", view.pos.join(","));
    q.set("zoom", +view.zoom.toPrecision(4));
    if (view.scale !== "auto") q.set("scale", view.scale);
  }
  if (state.view.overlay) q.set("overlay", state.view.overlay);
  history.replaceState(null, "", "#" + q.toString());
}

// --- repos ------------------------------------------------------------------------------------

function renderRepos() {
  const ul = $("repo-list");
  ul.textContent = "";
  const roots = Object.keys(state.repos).sort((a, b) =>
    (state.repos[a].Alias || "").localeCompare(state.repos[b].Alias || ""));
  if (!roots.length) {
    ul.innerHTML = '<li class="muted">no repos in this store</li>';
  }
  for (const root of roots) {
    const r = state.repos[root];
    const li = document.createElement("li");
    li.dataset.root = root;
    if (root === state.repo) li.className = "sel";
    const nNodes = Object.keys((r.DAG && r.DAG.Nodes) || {}).length;
    const nInst = Object.keys(r.DataInstances || {}).length;
    li.innerHTML = `<span class="alias">${escapeHtml(r.Alias || root.slice(0, 8))}</span>` +
      (r.Description ? `<span class="desc">${escapeHtml(r.Description)}</span>` : "") +
      `<span class="meta">${nNodes} version${nNodes === 1 ? "" : "s"} · ${nInst} instance${nInst === 1 ? "" : "s"}</span>`;
    li.addEventListener("click", () => selectRepo(root));
    ul.appendChild(li);
  }
}

function defaultNode(repo) {
  // The newest open version (where work happens), else the newest version.
  const nodes = Object.values(repo.DAG.Nodes);
  const open = nodes.filter((n) => !n.Locked);
  const pick = (open.length ? open : nodes).sort((a, b) => b.VersionID - a.VersionID)[0];
  return pick ? pick.UUID : repo.Root;
}

function selectRepo(root, node = null, inst = null) {
  state.repo = root;
  const repo = state.repos[root];
  renderRepos();
  const head = $("repo-head");
  head.innerHTML = `<span class="alias">${escapeHtml(repo.Alias)}</span>` +
    `<span class="muted">${escapeHtml(repo.Description || "")}</span>` +
    `<span class="muted mono">root ${escapeHtml(repo.Root)}</span>`;
  if (repo.Log && repo.Log.length) {
    const d = document.createElement("details");
    d.innerHTML = `<summary class="muted">repo log (${repo.Log.length})</summary>` +
      `<ul class="log">${repo.Log.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>`;
    head.appendChild(d);
  }
  const nodes = repo.DAG.Nodes;
  const match = node ? Object.keys(nodes).filter((u) => u.startsWith(node)) : [];
  selectNode(nodes[node] ? node : match.length === 1 ? match[0] : defaultNode(repo), inst);
}

// --- version ----------------------------------------------------------------------------------

function drawDag() {
  const repo = state.repos[state.repo];
  const box = $("dag");
  const layout = renderDag(box, repo.DAG.Nodes, { selected: state.node, onSelect: (u) => selectNode(u) });
  const sel = layout.placed.find((p) => p.node.UUID === state.node);
  if (sel && (sel.x < box.scrollLeft || sel.x > box.scrollLeft + box.clientWidth - 40)) {
    box.scrollLeft = Math.max(0, sel.x - box.clientWidth / 2);  // keep the chosen version in sight
  }
  document.body.dataset.dag = "ready";
}

async function selectNode(uuid, inst = null) {
  const repo = state.repos[state.repo];
  const node = repo.DAG.Nodes[uuid];
  state.node = uuid;
  drawDag();
  const byId = new Map(Object.values(repo.DAG.Nodes).map((n) => [n.VersionID, n]));
  const link = (id) => {
    const n = byId.get(id);
    return n ? `<a href="#" data-uuid="${escapeHtml(n.UUID)}" class="mono">${escapeHtml(n.UUID.slice(0, 8))}</a>` : String(id);
  };
  const box = $("node");
  box.innerHTML = `<h3><span class="mono">${escapeHtml(uuid)}</span></h3>` +
    `<div>branch <b>${escapeHtml(branchName(node))}</b> · <span class="pill ${node.Locked ? "locked" : "open"}">${node.Locked ? "locked" : "open"}</span>` +
    ` · <span class="muted">created ${escapeHtml(node.Created || "")}</span></div>` +
    `<div class="muted">parents ${node.Parents.map(link).join(", ") || "none (root)"} · children ${node.Children.map(link).join(", ") || "none"}</div>` +
    `<h3>Note</h3><div class="note">${node.Note ? escapeHtml(node.Note) : '<span class="muted">(none)</span>'}</div>` +
    `<h3>Log</h3>` + (node.Log && node.Log.length
      ? `<ul class="log">${node.Log.map((l) => `<li>${escapeHtml(l)}</li>`).join("")}</ul>`
      : '<div class="muted">(empty)</div>') +
    `<h3>Instances at this version</h3><div id="inst-table" class="muted">loading…</div>`;
  box.querySelectorAll("a[data-uuid]").forEach((a) => a.addEventListener("click", (ev) => {
    ev.preventDefault();
    selectNode(a.dataset.uuid);
  }));
  const seq = ++state.loadSeq;
  const names = Object.keys(repo.DataInstances || {}).sort();
  const infos = {};
  await Promise.all(names.map(async (name) => {
    try {
      infos[name] = await api.instanceInfo(uuid, name);
    } catch (e) {
      infos[name] = e;
    }
  }));
  if (seq !== state.loadSeq) return;
  state.nodeInfos = infos;
  renderInstances();
  const present = names.filter((n) => !(infos[n] instanceof Error));
  const pick = inst && present.includes(inst) ? inst : (state.inst && present.includes(state.inst) ? state.inst : null);
  if (pick) return selectInstance(pick);
  // nothing chosen: open the first image (with the first label array over it) or label array
  const first = defaultInstance(present);
  return selectInstance(first.inst, { overlay: first.overlay });
}

// The instance a version opens with when none is chosen: the first image array, with the first
// label array laid over it when there is one, else the first label array.
function defaultInstance(present) {
  const shown = present.filter((n) => !volumeFromInfo(state.nodeInfos[n]).error);
  const images = shown.filter((n) => !volumeFromInfo(state.nodeInfos[n]).labels);
  const labels = shown.filter((n) => volumeFromInfo(state.nodeInfos[n]).labels);
  if (images.length) return { inst: images[0], overlay: labels[0] || null };
  return { inst: labels[0] || null, overlay: null };
}

// The box of the data written at this version (the page opens at its centre, not at the centre
// of a huge, mostly empty array), or null when unknown or nothing is written.
async function writtenBox(uuid, name) {
  try {
    const w = await api.writtenExtents(uuid, name);
    if (!w.Complete || !Array.isArray(w.MinPoint) || !Array.isArray(w.MaxPoint)) return null;
    return { min: w.MinPoint, max: w.MaxPoint };
  } catch (e) {
    return null;  // an older server or a DVID: the array's centre
  }
}

function describe(info) {
  const ext = info.Extended || {};
  const parts = [];
  const dt = ext.Values && ext.Values[0] && ext.Values[0].DataType;
  if (dt) parts.push(dt);
  if (ext.MinPoint && ext.MaxPoint) {
    parts.push(ext.MaxPoint.map((m, i) => m - ext.MinPoint[i] + 1).join("×") + " (x×y×z)");
  }
  if (ext.BlockSize) parts.push("blocks " + ext.BlockSize.join("×"));
  if (Number.isInteger(ext.MaxDownresLevel) && ext.MaxDownresLevel > 0) parts.push(`scales 0…${ext.MaxDownresLevel}`);
  return parts.join(" · ");
}

function renderInstances() {
  const div = $("inst-table");
  const infos = state.nodeInfos;
  const names = Object.keys(infos).filter((n) => !(infos[n] instanceof Error)).sort();
  if (!names.length) {
    div.textContent = "no instances at this version";
    return;
  }
  div.classList.remove("muted");
  const t = document.createElement("table");
  t.innerHTML = "<tr><th>name</th><th>type</th><th>details</th></tr>";
  for (const name of names) {
    const info = infos[name];
    const tr = document.createElement("tr");
    tr.className = "inst" + (name === state.inst ? " sel" : "");
    tr.dataset.name = name;
    tr.innerHTML = `<td><b>${escapeHtml(name)}</b></td><td>${escapeHtml(info.Base.TypeName)}</td>` +
      `<td class="muted">${escapeHtml(describe(info))}</td>`;
    tr.addEventListener("click", () => selectInstance(name));
    t.appendChild(tr);
  }
  div.textContent = "";
  div.appendChild(t);
  if (state.inst && infos[state.inst] && !(infos[state.inst] instanceof Error)) {
    const d = document.createElement("details");
    d.innerHTML = `<summary>metadata of ${escapeHtml(state.inst)}</summary><pre class="mono">${escapeHtml(JSON.stringify(infos[state.inst], null, 2))}</pre>`;
    div.appendChild(d);
  }
}

// --- instance view ----------------------------------------------------------------------------

function neuroglancerUrl(info, vol) {
  // Neuroglancer's state: one dvid:// layer of this server at the chosen version, centred on
  // the slice viewer's point at its zoom (crossSectionScale = voxels per screen pixel).
  const source = `dvid://${location.origin}/${state.node}/${state.inst}`;
  const unit = (u) => ({ nanometers: 1e-9, nanometer: 1e-9, nm: 1e-9, micrometers: 1e-6, microns: 1e-6,
    micrometer: 1e-6, um: 1e-6, millimeters: 1e-3, mm: 1e-3, meters: 1, m: 1 })[String(u || "").toLowerCase()] || 1e-9;
  const vs = vol.voxelSize.map((x, i) => Number(x) * unit(vol.units[i]));
  const box = vol.focus || vol;  // the written data when known
  const viewer = state.viewer;
  const zoom = viewer ? viewer.zoom || viewer.fitZoom() : 1;
  const position = viewer ? viewer.pos.map((x) => Math.floor(x) + 0.5)
    : box.min.map((m, i) => (m + box.max[i] + 1) / 2);
  const ngState = {
    dimensions: { x: [vs[0], "m"], y: [vs[1], "m"], z: [vs[2], "m"] },
    position,
    crossSectionScale: Math.min(64, Math.max(1 / 64, 1 / zoom)),
    projectionScale: Math.max(...box.max.map((m, i) => m - box.min[i] + 1)) * 2.5,
    layers: [{ type: vol.labels ? "segmentation" : "image", source, name: state.inst }],
    layout: "4panel",
  };
  const over = state.view.overlay;
  const overInfo = over && state.nodeInfos[over];
  if (overInfo && !(overInfo instanceof Error) && !neuroglancerProblem(overInfo, volumeFromInfo(overInfo))) {
    ngState.layers.push({ type: "segmentation", source: `dvid://${location.origin}/${state.node}/${over}`, name: over });
  }
  const base = new URL(state.config.neuroglancer_path, location.href);
  return `${base.href}#!${encodeURIComponent(JSON.stringify(ngState))}`;
}

function neuroglancerProblem(info, vol) {
  if (!state.config.neuroglancer) return "Neuroglancer's client is not installed on this server (pip install 'diced[server]')";
  if (!NG_TYPES.has(info.Base.TypeName)) return `Neuroglancer's DVID source reads uint8 images and label arrays, not ${info.Base.TypeName}`;
  if (vol.labels && !(vol.maxScale > 0)) {
    return "Neuroglancer's DVID source needs MaxDownresLevel ≥ 1 for label arrays (create it with max_scale ≥ 1)";
  }
  return null;
}

async function selectInstance(name, defaults = {}) {
  const seq = ++state.instSeq;
  if (state.viewer) {
    state.viewer.destroy();
    state.viewer = null;
  }
  // another version of the same instance keeps the view (compare versions in place)
  if (state.inst && state.inst !== name) state.view = {};
  if (defaults.overlay && !state.view.overlay) state.view.overlay = defaults.overlay;
  state.inst = name;
  document.querySelectorAll("#inst-table tr.inst").forEach((tr) => tr.classList.toggle("sel", tr.dataset.name === name));
  const head = $("view-head"), body = $("view-body");
  head.textContent = "";
  body.textContent = "";
  writeHash();
  if (!name) {
    body.innerHTML = '<div class="empty">Choose an instance of this version to view it.</div>';
    document.body.dataset.view = "none";
    return;
  }
  renderInstances();
  const info = state.nodeInfos[name];
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = name;
  const sub = document.createElement("span");
  sub.className = "muted";
  sub.textContent = info.Base.TypeName;
  sub.title = `${info.Base.TypeName} at version ${state.node}`;
  head.append(title, sub);
  if (info.Base.TypeName === "keyvalue") return showKeys(name, body);
  const vol = volumeFromInfo(info);
  if (vol.error) {
    body.innerHTML = `<div class="empty">${escapeHtml(vol.error)}</div>`;
    document.body.dataset.view = "none";
    return;
  }
  if (!state.view.pos) {
    // no point in the URL: open at the centre of the data written at this version
    const node = state.node;
    body.innerHTML = '<div class="empty muted">locating the data…</div>';
    const box = await writtenBox(node, name);
    if (seq !== state.instSeq) return;  // another instance or version was chosen meanwhile
    body.textContent = "";
    if (box) vol.focus = box;
  }
  const scale = document.createElement("select");
  scale.title = "scale (pyramid level)";
  scale.innerHTML = '<option value="auto">scale: auto</option>' +
    Array.from({ length: vol.maxScale + 1 }, (_, s) => `<option value="${s}">scale ${s}</option>`).join("");
  scale.value = state.view.scale !== undefined ? String(state.view.scale) : "auto";
  const ng = document.createElement("a");
  ng.className = "button primary";
  ng.id = "open-neuroglancer";
  ng.textContent = "Neuroglancer ↗";
  const problem = neuroglancerProblem(info, vol);
  if (problem) {
    ng.classList.add("disabled");
    ng.setAttribute("aria-disabled", "true");
    ng.title = problem;
  } else {
    ng.title = "open the same data in Neuroglancer's 3-D viewer (served by this server, offline)";
    ng.target = "_blank";
    ng.rel = "noopener";
  }
  const ngLink = () => { if (!problem) ng.href = neuroglancerUrl(info, vol); };
  const spacer = document.createElement("span");
  spacer.style.marginLeft = "auto";
  head.append(spacer);
  // an image can show a label array of the same version over it
  const labelNames = vol.labels ? [] : Object.keys(state.nodeInfos).filter((n) => {
    const i = state.nodeInfos[n];
    return !(i instanceof Error) && volumeFromInfo(i).labels && !volumeFromInfo(i).error;
  });
  let overlay = null;
  if (labelNames.length) {
    overlay = document.createElement("select");
    overlay.id = "overlay";
    overlay.title = "a label array drawn over the image";
    overlay.innerHTML = '<option value="">labels: none</option>' +
      labelNames.map((n) => `<option value="${escapeHtml(n)}">labels: ${escapeHtml(n)}</option>`).join("");
    head.append(overlay);
  }
  const goto = document.createElement("input");
  goto.id = "goto";
  goto.placeholder = "go to x,y,z";
  goto.title = "centre the slices on a voxel: x, y, z (Enter)";
  goto.size = 14;
  goto.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    const p = goto.value.split(/[\s,]+/).filter(Boolean).map(Number);
    const ok = p.length === 3 && p.every(Number.isFinite);
    goto.setCustomValidity(ok ? "" : "three numbers: x, y, z");
    goto.reportValidity();
    if (ok) state.viewer.goTo(p);
  });
  head.append(goto, scale, ng);
  state.viewer = new SliceViewer(body, {
    uuid: state.node, name, vol, initial: state.view,
    onChange: (view) => {
      state.view = { ...state.view, pos: view.pos.map((x) => x + 0.5), zoom: view.zoom, scale: view.scale };
      clearTimeout(state.hashTimer);  // browsers throttle rapid history updates
      state.hashTimer = setTimeout(() => { writeHash(view); ngLink(); }, 200);
    },
  });
  ngLink();  // and follows the slice viewer's point and zoom (above)
  if (overlay) {
    const apply = () => {
      const name = overlay.value;
      state.view.overlay = name || undefined;
      state.viewer.setOverlay(name || null, name ? volumeFromInfo(state.nodeInfos[name]) : null);
      const v = state.viewer;
      writeHash(v.zoom ? { pos: v.pos.map(Math.floor), zoom: v.zoom, scale: v.scaleMode } : null);
      ngLink();
    };
    if (state.view.overlay && labelNames.includes(state.view.overlay)) overlay.value = state.view.overlay;
    overlay.addEventListener("change", apply);
    if (overlay.value) apply();
  }
  scale.addEventListener("change", () => state.viewer.setScale(scale.value === "auto" ? "auto" : Number(scale.value)));
  document.body.dataset.view = vol.labels ? "labels" : "image";
}

async function showKeys(name, body) {
  document.body.dataset.view = "keyvalue";
  const div = document.createElement("div");
  div.className = "kv-list";
  div.textContent = "loading keys…";
  body.appendChild(div);
  try {
    const keys = await api.instanceKeys(state.node, name);
    const shown = keys.slice(0, 1000);
    div.innerHTML = `<div class="muted">${keys.length} key${keys.length === 1 ? "" : "s"}${keys.length > shown.length ? ` (first ${shown.length} shown)` : ""}</div>` +
      `<ul class="mono">${shown.map((k) => `<li><a href="${api.nodeUrl(state.node, name, "key/" + api.enc(k))}" target="_blank">${escapeHtml(k)}</a></li>`).join("")}</ul>`;
  } catch (e) {
    div.textContent = `could not list keys: ${e.message}`;
  }
}

// --- start ------------------------------------------------------------------------------------

async function start() {
  const want = readHash();
  state.view = want.view;
  setStatus("loading…");
  try {
    state.config = { ...state.config, ...(await api.viewerConfig()) };
  } catch (e) {
    /* an older server: no Neuroglancer link */
  }
  api.serverInfo().then((info) => {
    const parts = [info["DVID Version"] && `diced ${state.config.diced_version || ""}`.trim(), info["Storage backend"]].filter(Boolean);
    $("server-info").textContent = parts.join(" · ");
  }).catch(() => {});
  try {
    state.repos = await api.reposInfo();
  } catch (e) {
    setStatus(`cannot read /api/repos/info: ${e.message}`, true);
    return;
  }
  setStatus("");
  renderRepos();
  const roots = Object.keys(state.repos);
  if (!roots.length) {
    $("node").innerHTML = '<div class="muted">This store has no repos yet: create one with diced.Store(...).create_repo(...).</div>';
    return;
  }
  let root = want.repo && state.repos[want.repo] ? want.repo : null;
  if (!root && want.node) {
    root = roots.find((r) => Object.keys(state.repos[r].DAG.Nodes).some((u) => u.startsWith(want.node))) || null;
  }
  selectRepo(root || roots.sort((a, b) => (state.repos[a].Alias || "").localeCompare(state.repos[b].Alias || ""))[0], want.node, want.inst);
}

// A fragment typed or pasted by hand (the page's own updates use replaceState, which fires
// no hashchange) selects that repo, version and instance.
window.addEventListener("hashchange", () => {
  const want = readHash();
  if (!Object.keys(state.repos).length) return;
  state.view = want.view;
  state.node = null;
  const root = want.repo && state.repos[want.repo] ? want.repo : state.repo;
  selectRepo(root, want.node, want.inst);
});

start();
