// The version DAG of a repo as an SVG graph with a layered layout: one column per generation
// (longest path from the root), one row (lane) per branch. Locked versions are filled, open ones
// hollow; edges from every parent but the first of a merge are dashed; tags (DVID makes a tag a
// locked, childless child whose UUID is the tag name, on branch "tag-<name>") are drawn as
// badges on the version they name. Works in O(nodes + edges); very large DAGs show the most
// recent MAX_NODES versions.

const SVG = "http://www.w3.org/2000/svg";
export const MAX_NODES = 400;
const DX = 64, DY = 40, LEFT = 92, TOP = 40, R = 8;

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

export const isTagNode = (n) => n.Branch.startsWith("tag-") && n.Children.length === 0 && n.Parents.length === 1;
export const branchName = (n) => n.Branch || "master";

// Layout: {placed: [{node, x, y, lane}], edges: [{from, to, merge}], tags: Map(uuid -> [tag nodes]),
// lanes: [{name, y}], width, height, hidden}
export function layoutDag(dagNodes) {
  const all = Object.values(dagNodes);
  const byId = new Map(all.map((n) => [n.VersionID, n]));
  // Topological order (Kahn): parents first, ties by version id.
  const indeg = new Map(all.map((n) => [n.VersionID, n.Parents.filter((p) => byId.has(p)).length]));
  const ready = all.filter((n) => indeg.get(n.VersionID) === 0).map((n) => n.VersionID).sort((a, b) => a - b);
  const order = [];
  while (ready.length) {
    const id = ready.shift();
    order.push(byId.get(id));
    const kids = [...(byId.get(id).Children || [])].sort((a, b) => a - b);
    for (const c of kids) {
      if (!indeg.has(c)) continue;
      const d = indeg.get(c) - 1;
      indeg.set(c, d);
      if (d === 0) ready.push(c);
    }
  }
  const depth = new Map();
  for (const n of order) {
    let d = 0;
    for (const p of n.Parents) if (depth.has(p)) d = Math.max(d, depth.get(p) + 1);
    depth.set(n.VersionID, d);
  }
  const tags = new Map();
  let shown = order.filter((n) => {
    if (!isTagNode(n) || !byId.has(n.Parents[0])) return true;
    const parent = byId.get(n.Parents[0]).UUID;
    if (!tags.has(parent)) tags.set(parent, []);
    tags.get(parent).push(n);
    return false;
  });
  let hidden = 0;
  if (shown.length > MAX_NODES) {
    hidden = shown.length - MAX_NODES;
    shown = [...shown].sort((a, b) => a.VersionID - b.VersionID).slice(hidden);
  }
  const shownIds = new Set(shown.map((n) => n.VersionID));
  const minDepth = Math.min(...shown.map((n) => depth.get(n.VersionID)));
  // Lanes: master first, then branches in order of their first version.
  const laneOf = new Map();
  const lanes = [];
  const occupied = new Set();
  const placed = [];
  const pos = new Map();
  for (const n of shown) {
    const name = branchName(n);
    if (!laneOf.has(name)) {
      laneOf.set(name, lanes.length);
      lanes.push({ name });
    }
    let lane = laneOf.get(name);
    const col = depth.get(n.VersionID) - minDepth;
    while (occupied.has(`${lane},${col}`)) {
      // Two versions of one branch in the same generation (possible after merges): own row.
      lane = lanes.length;
      lanes.push({ name: "" });
    }
    occupied.add(`${lane},${col}`);
    const p = { node: n, x: LEFT + col * DX, y: TOP + lane * DY, lane };
    placed.push(p);
    pos.set(n.VersionID, p);
  }
  lanes.forEach((l, i) => (l.y = TOP + i * DY));
  const edges = [];
  for (const n of shown) {
    n.Parents.forEach((p, i) => {
      if (shownIds.has(p)) edges.push({ from: pos.get(p), to: pos.get(n.VersionID), merge: i > 0 });
    });
  }
  const maxCol = Math.max(0, ...placed.map((p) => (p.x - LEFT) / DX));
  return {
    placed, edges, tags, lanes, hidden,
    width: LEFT + maxCol * DX + 80,
    height: TOP + lanes.length * DY + 4,
  };
}

function edgePath(a, b) {
  if (a.y === b.y) return `M${a.x + R} ${a.y} H${b.x - R}`;
  const mx = (a.x + b.x) / 2;
  return `M${a.x} ${a.y + (b.y > a.y ? R : -R)} C${a.x} ${b.y} ${mx} ${b.y} ${b.x - R} ${b.y}`;
}

// Draws the DAG into `container`; `onSelect(uuid)` is called when a version or tag is clicked.
export function renderDag(container, dagNodes, { selected, onSelect }) {
  const L = layoutDag(dagNodes);
  container.textContent = "";
  const svg = el("svg", { width: L.width, height: L.height, role: "img", "aria-label": "version DAG" }, container);
  for (const lane of L.lanes) {
    if (!lane.name) continue;
    const t = el("text", { x: 8, y: lane.y + 4, class: "lane-label" }, svg);
    t.textContent = lane.name.length > 12 ? lane.name.slice(0, 11) + "…" : lane.name;
  }
  for (const e of L.edges) el("path", { d: edgePath(e.from, e.to), class: e.merge ? "edge merge" : "edge" }, svg);
  for (const p of L.placed) {
    const n = p.node;
    const g = el("g", {
      class: `node ${n.Locked ? "locked" : "open"}${n.UUID === selected ? " sel" : ""}`,
      "data-uuid": n.UUID, transform: `translate(${p.x},${p.y})`, tabindex: "0",
    }, svg);
    const title = el("title", {}, g);
    title.textContent = `${n.UUID}\nbranch ${branchName(n)} · ${n.Locked ? "locked" : "open"}` +
      (n.Note ? `\n${n.Note}` : "");
    el("circle", { r: R }, g);
    if (n.UUID === selected) el("circle", { r: R + 4, class: "ring" }, g);
    const u = el("text", { y: R + 12, "text-anchor": "middle", class: "uuid" }, g);
    u.textContent = n.UUID.slice(0, 6);
    g.addEventListener("click", () => onSelect(n.UUID));
    g.addEventListener("keydown", (ev) => { if (ev.key === "Enter") onSelect(n.UUID); });
    let ty = -R - 5;
    for (const t of L.tags.get(n.UUID) || []) {
      const name = t.Branch.slice(4) || t.UUID;
      const w = 8 + 6.2 * Math.min(name.length, 14);
      const tg = el("g", { class: "tag", "data-uuid": t.UUID, transform: `translate(${-w / 2},${ty - 13})` }, g);
      el("rect", { width: w, height: 13, rx: 3 }, tg);
      const tt = el("text", { x: 4, y: 10 }, tg);
      tt.textContent = name.length > 14 ? name.slice(0, 13) + "…" : name;
      const ttitle = el("title", {}, tg);
      ttitle.textContent = `tag ${name} (${t.UUID})`;
      tg.addEventListener("click", (ev) => { ev.stopPropagation(); onSelect(t.UUID); });
      ty -= 15;
    }
  }
  if (L.hidden) {
    const t = el("text", { x: LEFT, y: 12, class: "lane-label" }, svg);
    t.textContent = `${L.hidden} older versions not drawn`;
  }
  return L;
}
