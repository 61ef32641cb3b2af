// Orthogonal slice viewer: XY, ZY and XZ panes through one point of a 3-D image or label array.
// Each pane asks the server for a one-voxel-thick 3-D raw box covering what it shows (plus a
// margin), at the scale that fits the zoom (or the one chosen), and decodes the octet-stream
// by dtype: images are windowed to grey, labels get hashed colours. A label array can be laid
// over an image (half transparent, background clear). Drag pans, click moves the point, the
// wheel steps through slices, Ctrl/Shift+wheel or +/- zooms, hover reads a voxel.

import { getBytes, nodeUrl, rawUrl } from "./api.js";
import { labelColor, labelText } from "./colors.js";

export const PLANES = [
  { id: "xy", h: 0, v: 1, n: 2, label: "XY" },
  { id: "zy", h: 2, v: 1, n: 0, label: "ZY" },
  { id: "xz", h: 0, v: 2, n: 1, label: "XZ" },
];
const AXES = "xyz";
const TYPED = {
  uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array, int16: Int16Array,
  uint32: Uint32Array, int32: Int32Array, float32: Float32Array, float64: Float64Array,
  bool: Uint8Array,
};
const LABEL_TYPES = new Set(["labelmap", "labelarray", "labelblk", "labels64"]);
const MARGIN = 0.25;
// Largest slice box a pane asks for (voxels): zoomed out further than the coarsest scale
// allows, a pane says so instead of asking the server for a huge read.
export const MAX_TILE_VOXELS = 1 << 21;

// What the viewer needs from an instance's info JSON, or {error} when it cannot be shown.
export function volumeFromInfo(info) {
  const base = info.Base || {};
  const ext = info.Extended || {};
  const labels = LABEL_TYPES.has(base.TypeName);
  const values = ext.Values || [];
  const dtype = (values[0] && values[0].DataType) || (labels ? "uint64" : "");
  const min = ext.MinPoint || (info.Extents && info.Extents.MinPoint);
  const max = ext.MaxPoint || (info.Extents && info.Extents.MaxPoint);
  const vol = {
    type: base.TypeName, labels, dtype, min, max,
    maxScale: Number.isInteger(ext.MaxDownresLevel) ? ext.MaxDownresLevel : 0,
    voxelSize: ext.VoxelSize || [1, 1, 1],
    units: ext.VoxelUnits || ["nanometers", "nanometers", "nanometers"],
    blockSize: ext.BlockSize || null,
  };
  if (!labels && !(dtype in TYPED) && dtype !== "uint64" && dtype !== "int64") {
    vol.error = `the slice viewer shows 3-D numeric arrays; ${base.TypeName} with dtype ${dtype || "?"} is not shown`;
  } else if (!Array.isArray(min) || !Array.isArray(max) || min.length !== 3 || max.length !== 3) {
    vol.error = "this array has no 3-D extents yet (nothing written, or not 3-D)";
  } else if (min.some((m, i) => max[i] < m)) {
    vol.error = "this array is empty";
  }
  return vol;
}

// Decodes a little-endian octet-stream of `count` values of `dtype`.
function decode(buf, vol, count) {
  const wide = vol.labels || vol.dtype === "uint64" || vol.dtype === "int64";
  const bytesPer = wide ? 8 : TYPED[vol.dtype].BYTES_PER_ELEMENT;
  if (buf.byteLength !== count * bytesPer) {
    throw new Error(`expected ${count * bytesPer} bytes of ${vol.dtype}, received ${buf.byteLength}`);
  }
  if (wide) {
    const u32 = new Uint32Array(buf);
    const signed = vol.dtype === "int64" && !vol.labels;
    const num = (i) => {
      const lo = u32[2 * i], hi = u32[2 * i + 1];
      if (signed && hi >= 0x80000000) return (hi - 4294967296) * 4294967296 + lo;
      return hi * 4294967296 + lo;
    };
    return {
      num, lo: (i) => u32[2 * i], hi: (i) => u32[2 * i + 1],
      text: (i) => (vol.labels ? labelText(u32[2 * i], u32[2 * i + 1])
        : signed ? (BigInt.asIntN(64, (BigInt(u32[2 * i + 1]) << 32n) | BigInt(u32[2 * i]))).toString()
          : labelText(u32[2 * i], u32[2 * i + 1])),
    };
  }
  const a = new TYPED[vol.dtype](buf);
  const isFloat = vol.dtype.startsWith("float");
  return {
    num: (i) => a[i],
    text: (i) => (isFloat ? String(Number(a[i].toPrecision(7))) : String(a[i])),
  };
}

export class SliceViewer {
  constructor(root, { uuid, name, vol, initial = {}, onHover, onChange }) {
    this.root = root;
    this.uuid = uuid;
    this.name = name;
    this.vol = vol;
    // layer 0: the array viewed; layer 1: an optional label array drawn over it
    this.layers = [{ name, vol, alpha: 1 }, null];
    this.onHover = onHover || (() => {});
    this.onChange = onChange || (() => {});
    this.scaleMode = initial.scale ?? "auto";
    // vol.focus: the box of the written data, when known (the viewer opens on it)
    const box = vol.focus || vol;
    this.pos = initial.pos ? [...initial.pos] : box.min.map((m, i) => (m + box.max[i] + 1) / 2);
    this.zoom = initial.zoom || 0;
    this.focus = 0;
    this.destroyed = false;
    this.grid = document.createElement("div");
    this.grid.className = "panes";
    root.appendChild(this.grid);
    this.panes = PLANES.map((plane, k) => this.makePane(plane, k));
    this.info = document.createElement("div");
    this.info.className = "pane info";
    this.grid.appendChild(this.info);
    this.resize = new ResizeObserver(() => this.redraw());
    this.resize.observe(this.grid);
    this.keyHandler = (ev) => this.onKey(ev);
    document.addEventListener("keydown", this.keyHandler);
    this.redraw();
    this.readPoint();
  }

  destroy() {
    this.destroyed = true;
    clearTimeout(this.pointTimer);
    this.resize.disconnect();
    document.removeEventListener("keydown", this.keyHandler);
    for (const p of this.panes) for (const q of p.pending) if (q) q.controller.abort();
    this.grid.remove();
  }

  makePane(plane, k) {
    const div = document.createElement("div");
    div.className = "pane";
    div.dataset.plane = plane.id;
    div.dataset.loaded = "0";
    const canvas = document.createElement("canvas");
    const label = document.createElement("div");
    label.className = "plabel";
    const err = document.createElement("div");
    err.className = "perr";
    div.append(canvas, label, err);
    this.grid.appendChild(div);
    const pane = { plane, div, canvas, label, err, tiles: [null, null], pending: [null, null], k };
    this.bindPointer(pane);
    return pane;
  }

  // --- geometry -------------------------------------------------------------------------

  scaleFor() {
    if (this.scaleMode !== "auto") return Math.min(Math.max(0, this.scaleMode), this.vol.maxScale);
    const s = Math.floor(Math.log2(1 / this.zoom) + 1e-9);
    return Math.min(Math.max(0, s), this.vol.maxScale);
  }

  // The zoom that shows the whole array, or, for an array too large for that at its coarsest
  // scale, the smallest zoom whose slices the panes can still read.
  fitZoom() {
    const { min, max } = this.vol.focus || this.vol;
    let z = Infinity, floor = 0;
    const f = 2 ** this.vol.maxScale;
    for (const p of this.panes) {
      const W = p.canvas.clientWidth || 300, H = p.canvas.clientHeight || 300;
      const { h, v } = p.plane;
      z = Math.min(z, (W * 0.92) / (max[h] - min[h] + 1), (H * 0.92) / (max[v] - min[v] + 1));
      // (with room for the rounding of box edges)
      floor = Math.max(floor, Math.sqrt((W * H * (1 + 2 * MARGIN) ** 2) / (0.8 * MAX_TILE_VOXELS)) / f);
    }
    return Number.isFinite(z) && z > 0 ? Math.max(z, floor) : 1;
  }

  // The box a pane needs at scale s, clipped to the array: {s, f, n, h0, h1, v0, v1} or null.
  need(pane, margin, vol = this.vol) {
    const { h, v, n } = pane.plane;
    const { min, max } = vol;
    const s = Math.min(this.scaleFor(), vol.maxScale), f = 2 ** s;
    const W = pane.canvas.clientWidth, H = pane.canvas.clientHeight;
    const halfH = (W / 2 / this.zoom) * (1 + 2 * margin), halfV = (H / 2 / this.zoom) * (1 + 2 * margin);
    const nIdx = Math.floor(Math.floor(this.pos[n]) / f);
    if (nIdx < Math.floor(min[n] / f) || nIdx > Math.floor(max[n] / f)) return null;
    const h0 = Math.max(Math.floor((this.pos[h] - halfH) / f), Math.floor(min[h] / f));
    const h1 = Math.min(Math.ceil((this.pos[h] + halfH) / f), Math.floor(max[h] / f) + 1);
    const v0 = Math.max(Math.floor((this.pos[v] - halfV) / f), Math.floor(min[v] / f));
    const v1 = Math.min(Math.ceil((this.pos[v] + halfV) / f), Math.floor(max[v] / f) + 1);
    if (h1 <= h0 || v1 <= v0) return null;
    return { s, f, n: nIdx, h0, h1, v0, v1 };
  }

  // --- data -------------------------------------------------------------------------------

  ensureTile(pane, li) {
    const layer = this.layers[li];
    if (!layer) return;
    const want = this.need(pane, 0, layer.vol);
    if (want === null) return;
    const covers = (b) => b.s === want.s && b.n === want.n && b.h0 <= want.h0 && b.h1 >= want.h1 &&
      b.v0 <= want.v0 && b.v1 >= want.v1;
    const t = pane.tiles[li];
    if (t && covers(t)) return;
    const p = pane.pending[li];
    if (p) {
      if (covers(p.box)) return;
      p.controller.abort();
    }
    const box = this.need(pane, MARGIN, layer.vol);
    if ((box.h1 - box.h0) * (box.v1 - box.v0) > MAX_TILE_VOXELS) {
      if (p) p.controller.abort();
      pane.pending[li] = null;
      pane.err.textContent = `zoomed out too far to read scale ${box.s}: zoom in` +
        (box.s < layer.vol.maxScale ? " or choose a coarser scale" : "");
      return;
    }
    this.fetchTile(pane, li, box, `${layer.name}|${box.s}|${box.n}|${box.h0}|${box.h1}|${box.v0}|${box.v1}`);
  }

  async fetchTile(pane, li, box, key) {
    const { h, v, n } = pane.plane;
    const layer = this.layers[li];
    const size = [1, 1, 1], offset = [0, 0, 0];
    size[h] = box.h1 - box.h0; offset[h] = box.h0;
    size[v] = box.v1 - box.v0; offset[v] = box.v0;
    offset[n] = box.n;
    const controller = new AbortController();
    pane.pending[li] = { key, box, controller };
    try {
      const buf = await getBytes(rawUrl(this.uuid, layer.name, size, offset, box.s), { signal: controller.signal });
      const count = size[0] * size[1] * size[2];
      const data = decode(buf, layer.vol, count);
      const strides = [1, size[0], size[0] * size[1]];
      const tile = { ...box, size, data, sh: strides[h], sv: strides[v], layer };
      tile.canvas = this.paint(tile, layer.vol, li > 0);
      if (this.destroyed || pane.pending[li]?.key !== key) return;
      pane.pending[li] = null;
      pane.tiles[li] = tile;
      pane.err.textContent = "";
      pane.div.dataset[li ? "overlay" : "loaded"] = "1";
      this.redraw();
    } catch (e) {
      if (e.name === "AbortError" || this.destroyed) return;
      if (pane.pending[li]?.key === key) pane.pending[li] = null;
      pane.err.textContent = `${layer.name}: ${e.message}`;
      pane.div.dataset[li ? "overlay" : "loaded"] = "error";
    }
  }

  // Lays a label array over the slices (null: none).
  setOverlay(name, vol) {
    for (const p of this.panes) {
      if (p.pending[1]) p.pending[1].controller.abort();
      p.pending[1] = null;
      p.tiles[1] = null;
      delete p.div.dataset.overlay;
    }
    this.layers[1] = name ? { name, vol, alpha: 0.5 } : null;
    this.pointText = "";
    this.redraw();
    this.readPoint();
  }

  // An off-screen canvas with one pixel per voxel of the tile.
  paint(tile, vol, overlay = false) {
    const w = tile.h1 - tile.h0, hgt = tile.v1 - tile.v0;
    const c = document.createElement("canvas");
    c.width = w;
    c.height = hgt;
    const img = c.getContext("2d").createImageData(w, hgt);
    const px = img.data;
    const { data, sh, sv } = tile;
    if (vol.labels) {
      for (let j = 0; j < hgt; j++) {
        for (let i = 0; i < w; i++) {
          const idx = i * sh + j * sv, o = 4 * (j * w + i);
          const lo = data.lo(idx), hi = data.hi(idx);
          const [r, g, b] = labelColor(lo, hi);
          px[o] = r; px[o + 1] = g; px[o + 2] = b;
          px[o + 3] = overlay && lo === 0 && hi === 0 ? 0 : 255;  // background clear over images
        }
      }
    } else {
      let lo = 0, hi = 255;
      if (vol.dtype === "bool") hi = 1;
      else if (vol.dtype !== "uint8") {
        lo = Infinity; hi = -Infinity;
        for (let j = 0; j < hgt; j++) for (let i = 0; i < w; i++) {
          const x = data.num(i * sh + j * sv);
          if (x < lo) lo = x;
          if (x > hi) hi = x;
        }
        if (!(hi > lo)) { hi = lo + 1; }
      }
      tile.window = [lo, hi];
      const k = 255 / (hi - lo);
      for (let j = 0; j < hgt; j++) {
        for (let i = 0; i < w; i++) {
          const x = data.num(i * sh + j * sv), o = 4 * (j * w + i);
          const g = Number.isNaN(x) ? 0 : Math.max(0, Math.min(255, Math.round((x - lo) * k)));
          px[o] = g; px[o + 1] = g; px[o + 2] = g; px[o + 3] = 255;
        }
      }
    }
    c.getContext("2d").putImageData(img, 0, 0);
    return c;
  }

  // --- drawing ----------------------------------------------------------------------------

  redraw() {
    if (this.frame || this.destroyed) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      if (!this.zoom) this.zoom = this.fitZoom();
      for (const p of this.panes) this.drawPane(p);
      this.drawInfo();
    });
  }

  drawPane(pane) {
    const { canvas, plane } = pane;
    const { h, v, n } = plane;
    const dpr = window.devicePixelRatio || 1;
    const W = canvas.clientWidth, H = canvas.clientHeight;
    if (!W || !H) return;
    if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
      canvas.width = Math.round(W * dpr);
      canvas.height = Math.round(H * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, W, H);
    const sx = (c) => W / 2 + (c - this.pos[h]) * this.zoom;
    const sy = (c) => H / 2 + (c - this.pos[v]) * this.zoom;
    ctx.imageSmoothingEnabled = false;
    this.layers.forEach((layer, li) => {
      if (!layer) return;
      this.ensureTile(pane, li);
      const t = pane.tiles[li];
      if (!t || this.need(pane, 0, layer.vol) === null) return;
      ctx.globalAlpha = layer.alpha;
      ctx.drawImage(t.canvas, sx(t.h0 * t.f), sy(t.v0 * t.f), (t.h1 - t.h0) * t.f * this.zoom, (t.v1 - t.v0) * t.f * this.zoom);
      ctx.globalAlpha = 1;
    });
    const t = pane.tiles[0];
    const { min, max } = this.vol;
    ctx.strokeStyle = "rgba(160,170,190,.55)";
    ctx.lineWidth = 1;
    ctx.strokeRect(sx(min[h]), sy(min[v]), (max[h] - min[h] + 1) * this.zoom, (max[v] - min[v] + 1) * this.zoom);
    ctx.strokeStyle = "rgba(255,255,255,.35)";
    ctx.setLineDash([4, 4]);
    ctx.beginPath();
    ctx.moveTo(Math.round(W / 2) + 0.5, 0); ctx.lineTo(Math.round(W / 2) + 0.5, H);
    ctx.moveTo(0, Math.round(H / 2) + 0.5); ctx.lineTo(W, Math.round(H / 2) + 0.5);
    ctx.stroke();
    ctx.setLineDash([]);
    pane.label.textContent = `${plane.label}  ${AXES[n]}=${Math.floor(this.pos[n])}` +
      (t ? `  scale ${t.s}` : "");
  }

  drawInfo() {
    const vol = this.vol;
    const s = this.scaleFor();
    const p = this.pos.map(Math.floor);
    const vs = vol.voxelSize.map((x) => +Number(x).toPrecision(4)).join(" × ");
    this.info.innerHTML = "";
    const hov = document.createElement("div");
    hov.className = "hover mono";
    hov.textContent = this.hoverText || "hover a pane to read a voxel";
    const meta = document.createElement("div");
    meta.innerHTML = `<div><b>${escapeHtml(this.name)}</b> <span class="muted">${escapeHtml(vol.type)} · ${escapeHtml(vol.dtype)}</span></div>` +
      `<div class="muted">extent x ${vol.min[0]}…${vol.max[0]}, y ${vol.min[1]}…${vol.max[1]}, z ${vol.min[2]}…${vol.max[2]}</div>` +
      `<div class="muted">voxel ${vs} ${escapeHtml(vol.units[0] || "")} · scale ${s} of 0…${vol.maxScale}</div>` +
      (this.layers[1] ? `<div class="muted">labels over it: ${escapeHtml(this.layers[1].name)}</div>` : "") +
      `<div class="mono">point ${p[0]}, ${p[1]}, ${p[2]} · zoom ${this.zoom >= 1 ? this.zoom.toFixed(2) : "1/" + (1 / this.zoom).toFixed(2)}</div>` +
      (this.pointText ? `<div class="point mono">${escapeHtml(this.pointText)}</div>` : "");
    const keys = document.createElement("div");
    keys.className = "keys";
    keys.innerHTML = "drag: pan · click: move the point · wheel, <kbd>↑</kbd><kbd>↓</kbd>: slices · " +
      "<kbd>Ctrl</kbd>+wheel, <kbd>+</kbd><kbd>−</kbd>: zoom · <kbd>r</kbd>: reset";
    this.info.append(hov, meta, keys);
  }

  // --- interaction ------------------------------------------------------------------------

  changed() {
    this.redraw();
    this.onChange({ pos: this.pos.map(Math.floor), zoom: this.zoom, scale: this.scaleMode });
    clearTimeout(this.pointTimer);
    this.pointTimer = setTimeout(() => this.readPoint(), 250);
  }

  // The label at the point and its size, from the label array shown (or laid over the image).
  async readPoint() {
    const layer = this.layers.find((l) => l && l.vol.labels);
    if (!layer || this.destroyed) return;
    const p = this.pos.map(Math.floor);
    const seq = (this.pointSeq = (this.pointSeq || 0) + 1);
    let text = "";
    try {
      const r = await fetch(nodeUrl(this.uuid, layer.name, `label/${p.join("_")}`));
      const m = r.ok ? (await r.text()).match(/"Label"\s*:\s*(\d+)/) : null;  // digits kept exact
      if (m) {
        text = `at the point: label ${m[1]}`;
        if (m[1] !== "0") {
          const size = await fetch(nodeUrl(this.uuid, layer.name, `size/${m[1]}`));
          if (size.ok) text += ` · ${(await size.json()).voxels.toLocaleString("en-US")} voxels`;
        }
      }
    } catch (e) {
      text = "";
    }
    if (seq !== this.pointSeq || this.destroyed) return;
    this.pointText = text;
    this.drawInfo();
  }

  setScale(mode) {
    this.scaleMode = mode;
    this.changed();
  }

  step(pane, delta) {
    const { n } = pane.plane;
    const f = 2 ** this.scaleFor();
    const lo = this.vol.min[n], hi = this.vol.max[n] + 1;
    this.pos[n] = Math.min(hi - 0.5, Math.max(lo + 0.5, Math.floor(this.pos[n]) + 0.5 + delta * f));
    this.changed();
  }

  zoomBy(k) {
    this.zoom = Math.min(64, Math.max(1 / 256, this.zoom * k));
    this.changed();
  }

  // Centres the panes on a voxel (x, y, z), clamped to the array.
  goTo(xyz) {
    const { min, max } = this.vol;
    this.pos = xyz.map((c, i) => Math.min(max[i], Math.max(min[i], Math.floor(c))) + 0.5);
    this.changed();
  }

  reset() {
    const { min, max } = this.vol.focus || this.vol;
    this.pos = min.map((m, i) => (m + max[i] + 1) / 2);
    this.zoom = this.fitZoom();
    this.changed();
  }

  voxelAt(pane, ev) {
    const r = pane.canvas.getBoundingClientRect();
    const { h, v } = pane.plane;
    const c = [...this.pos];
    c[h] = this.pos[h] + (ev.clientX - r.left - r.width / 2) / this.zoom;
    c[v] = this.pos[v] + (ev.clientY - r.top - r.height / 2) / this.zoom;
    return c;
  }

  hover(pane, ev) {
    const c = this.voxelAt(pane, ev);
    const vox = c.map(Math.floor);
    const { min, max } = this.vol;
    let text = `x ${vox[0]}  y ${vox[1]}  z ${vox[2]}`;
    if (vox.some((x, i) => x < min[i] || x > max[i])) {
      text += "\noutside the array";
    }
    const { h, v } = pane.plane;
    this.layers.forEach((layer, li) => {
      const t = pane.tiles[li];
      if (!layer || !t) return;
      if (vox.some((x, i) => x < layer.vol.min[i] || x > layer.vol.max[i])) return;
      const i = Math.floor(vox[h] / t.f) - t.h0, j = Math.floor(vox[v] / t.f) - t.v0;
      if (i < 0 || j < 0 || i >= t.h1 - t.h0 || j >= t.v1 - t.v0) return;
      const value = t.data.text(i * t.sh + j * t.sv);
      text += layer.vol.labels ? `\nlabel ${value}` : `\nvalue ${value}`;
      if (t.s > 0) text += `  (scale ${t.s})`;
      if (li > 0) text += `  ${layer.name}`;
    });
    this.hoverText = text;
    this.onHover(text);
    this.drawInfo();
  }

  bindPointer(pane) {
    const { canvas } = pane;
    let drag = null;
    canvas.addEventListener("pointerdown", (ev) => {
      canvas.setPointerCapture(ev.pointerId);
      drag = { x: ev.clientX, y: ev.clientY, pos: [...this.pos], moved: false };
    });
    canvas.addEventListener("pointermove", (ev) => {
      this.focus = pane.k;
      if (drag) {
        const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        if (drag.moved) {
          const { h, v } = pane.plane;
          this.pos[h] = drag.pos[h] - dx / this.zoom;
          this.pos[v] = drag.pos[v] - dy / this.zoom;
          this.changed();
        }
      }
      this.hover(pane, ev);
    });
    canvas.addEventListener("pointerup", (ev) => {
      if (drag && !drag.moved) {
        const c = this.voxelAt(pane, ev);
        const { h, v } = pane.plane;
        const { min, max } = this.vol;
        this.pos[h] = Math.min(max[h] + 0.5, Math.max(min[h] + 0.5, Math.floor(c[h]) + 0.5));
        this.pos[v] = Math.min(max[v] + 0.5, Math.max(min[v] + 0.5, Math.floor(c[v]) + 0.5));
        this.changed();
      }
      drag = null;
    });
    canvas.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      if (ev.ctrlKey || ev.shiftKey || ev.metaKey) this.zoomBy(ev.deltaY < 0 ? 1.25 : 0.8);
      else this.step(pane, ev.deltaY < 0 ? -1 : 1);
    }, { passive: false });
  }

  onKey(ev) {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    const pane = this.panes[this.focus];
    const steps = { ArrowUp: -1, ArrowDown: 1, ",": -1, ".": 1, PageUp: -10, PageDown: 10 };
    if (ev.key in steps) this.step(pane, steps[ev.key]);
    else if (ev.key === "+" || ev.key === "=") this.zoomBy(1.25);
    else if (ev.key === "-" || ev.key === "_") this.zoomBy(0.8);
    else if (ev.key === "r") this.reset();
    else return;
    ev.preventDefault();
  }
}

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
