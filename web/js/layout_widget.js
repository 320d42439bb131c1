// Faithful: a region-drawing canvas for the "Layout Regions (DenseDiffusion)" node.
// Box mode: drag on empty space to draw a box, drag inside a region to move it, drag a box's corner handle to
// resize, double-click a region to edit its phrase. Paint mode (layout_paint.js): brush a new region free-hand;
// strokes add to the selected painted region, "New" or Esc finishes it. Click the selected region's x or press
// Delete to remove it, Enter to rename it. The layout is kept as JSON in the node's "layout" text widget, so it
// saves and loads with the workflow and can be edited by hand.
import { app } from "../../../scripts/app.js";  // served at /extensions/faithful/js/
import { BRUSH, bounds, drawBrush, drawStrokes, extendStroke, hasBox, hasStrokes, hitStrokes, makeToolbar,
         newStroke, translate } from "./layout_paint.js";

const NODE = "FaithfulLayoutRegions";
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];
const HANDLE = 8;

function parseLayout(text) {
  try {
    const v = JSON.parse(text || "{}");
    return { width: v.width || 512, height: v.height || 512, regions: Array.isArray(v.regions) ? v.regions : [] };
  } catch (e) {
    return null;
  }
}

function clamp01(v) { return Math.max(0, Math.min(1, v)); }

function attach(node) {
  const textWidget = node.widgets?.find((w) => w.name === "layout");
  if (!textWidget || node.__faithfulLayout) return;
  const canvas = document.createElement("canvas");
  canvas.className = "faithful-layout-canvas";
  canvas.tabIndex = 0;
  Object.assign(canvas.style, { display: "block", width: "100%", flex: "1 1 0px", minHeight: "0", outline: "none" });
  const state = { layout: parseLayout(textWidget.value) || { width: 512, height: 512, regions: [] },
                  text: textWidget.value, selected: -1, drag: null, mode: "box", brush: BRUSH.initial, hover: null };
  node.__faithfulLayout = state;
  const toolbar = makeToolbar(state, () => { canvas.style.cursor = state.mode === "paint" ? "crosshair" : "default"; draw(); });
  const root = document.createElement("div");
  root.className = "faithful-layout";
  Object.assign(root.style, { display: "flex", flexDirection: "column", width: "100%", height: "100%" });
  root.append(toolbar.element, canvas);

  const widget = node.addDOMWidget("layout_canvas", "faithful_layout", root, {
    serialize: false, hideOnZoom: false,
    getMinHeight: () => 250, getHeight: () => 290,
  });
  widget.serialize = false;

  function save() {
    const text = JSON.stringify(state.layout);
    state.text = text;
    textWidget.value = text;
    textWidget.callback?.(text);
    node.setDirtyCanvas?.(true, true);
    draw();
  }

  function box() {  // the drawing area inside the canvas, with the layout's aspect ratio
    const W = canvas.clientWidth || 300, H = canvas.clientHeight || 220;
    const ar = state.layout.width / state.layout.height;
    let w = W - 8, h = w / ar;
    if (h > H - 8) { h = H - 8; w = h * ar; }
    return { x: (W - w) / 2, y: (H - h) / 2, w, h, W, H };
  }

  function toFrac(ev) {
    const r = canvas.getBoundingClientRect(), b = box();
    const sx = (canvas.clientWidth || r.width) / r.width;
    return { x: ((ev.clientX - r.left) * sx - b.x) / b.w, y: ((ev.clientY - r.top) * sx - b.y) / b.h };
  }

  function aspect() { return state.layout.width / state.layout.height; }

  function hit(p) {  // {index, part: "delete" | "resize" | "move"} of the topmost region under p
    const b = box();
    for (let i = state.layout.regions.length - 1; i >= 0; i--) {
      const g = state.layout.regions[i], bb = bounds(g, aspect());
      if (!bb) continue;
      const px = p.x * b.w, py = p.y * b.h, x1 = bb.x1 * b.w, y0 = bb.y0 * b.h;
      if (Math.abs(px - x1) < HANDLE && Math.abs(py - y0) < HANDLE) return { index: i, part: "delete" };
      if (hasBox(g)) {
        const bx1 = (g.x + g.w) * b.w, by1 = (g.y + g.h) * b.h;
        if (Math.abs(px - bx1) < HANDLE && Math.abs(py - by1) < HANDLE) return { index: i, part: "resize" };
        if (p.x >= g.x && p.x <= g.x + g.w && p.y >= g.y && p.y <= g.y + g.h) return { index: i, part: "move" };
      }
      if (hitStrokes(g, p, b)) return { index: i, part: "move" };
    }
    return null;
  }

  function draw() {
    if (textWidget.value !== state.text) {  // edited by hand: follow the text
      const parsed = parseLayout(textWidget.value);
      if (parsed) state.layout = parsed;
      state.text = textWidget.value;
    }
    const dpr = window.devicePixelRatio || 1;
    const W = canvas.clientWidth || 300, H = canvas.clientHeight || 220;
    if (canvas.width !== W * dpr || canvas.height !== H * dpr) { canvas.width = W * dpr; canvas.height = H * dpr; }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const b = box();
    ctx.fillStyle = "#1e1e1e";
    ctx.fillRect(b.x, b.y, b.w, b.h);
    // the latent grid (image / 8): what the model actually sees
    const gw = Math.max(1, Math.round(state.layout.width / 8)), gh = Math.max(1, Math.round(state.layout.height / 8));
    const step = Math.max(1, Math.ceil(gw / 16));
    ctx.strokeStyle = "#2c2c2c";
    ctx.lineWidth = 1;
    for (let i = 0; i <= gw; i += step) { const x = b.x + (i / gw) * b.w; ctx.beginPath(); ctx.moveTo(x, b.y); ctx.lineTo(x, b.y + b.h); ctx.stroke(); }
    for (let j = 0; j <= gh; j += step) { const y = b.y + (j / gh) * b.h; ctx.beginPath(); ctx.moveTo(b.x, y); ctx.lineTo(b.x + b.w, y); ctx.stroke(); }
    ctx.strokeStyle = "#666";
    ctx.strokeRect(b.x, b.y, b.w, b.h);
    state.layout.regions.forEach((g, i) => {
      const c = COLORS[i % COLORS.length], bb = bounds(g, aspect());
      if (!bb) return;
      if (hasStrokes(g)) drawStrokes(ctx, g, b, c, dpr);
      const x = b.x + bb.x0 * b.w, y = b.y + bb.y0 * b.h, w = (bb.x1 - bb.x0) * b.w, h = (bb.y1 - bb.y0) * b.h;
      if (hasBox(g)) {
        const bx = b.x + g.x * b.w, by = b.y + g.y * b.h, bw = g.w * b.w, bh = g.h * b.h;
        ctx.globalAlpha = 0.3; ctx.fillStyle = c; ctx.fillRect(bx, by, bw, bh);
        ctx.globalAlpha = 1; ctx.strokeStyle = c; ctx.lineWidth = i === state.selected ? 3 : 1.5; ctx.strokeRect(bx, by, bw, bh);
        if (i === state.selected) { ctx.fillStyle = c; ctx.fillRect(bx + bw - HANDLE / 2, by + bh - HANDLE / 2, HANDLE, HANDLE); }
      } else if (i === state.selected) {  // a painted region: its extent, dashed
        ctx.save(); ctx.setLineDash([4, 3]); ctx.strokeStyle = c; ctx.lineWidth = 1.5; ctx.strokeRect(x, y, w, h); ctx.restore();
      }
      ctx.globalAlpha = 1;
      ctx.fillStyle = "#fff"; ctx.font = "12px sans-serif";
      ctx.fillText(g.phrase || "(no phrase)", x + 4, y + 14, Math.max(10, w - 8));
      if (i === state.selected) {
        ctx.fillStyle = "#fff"; ctx.font = "bold 12px sans-serif"; ctx.fillText("\u00d7", x + w - 4, y + 4);
      }
    });
    if (state.mode === "paint" && state.hover) drawBrush(ctx, state.hover, b, state.brush / 100);
    ctx.fillStyle = "#888"; ctx.font = "10px sans-serif";
    ctx.fillText(`${state.layout.width}x${state.layout.height} px, latent ${gw}x${gh}`, b.x + 2, b.y + b.h - 3);
  }

  function askPhrase(current) {
    const v = window.prompt("Phrase for this region (words from the prompt):", current || "");
    return v === null ? current : v.trim();
  }

  canvas.addEventListener("pointerdown", (ev) => {
    ev.stopPropagation();
    canvas.focus();
    const p = toFrac(ev);
    const h = hit(p);
    if (h && h.part === "delete" && h.index === state.selected) {
      state.layout.regions.splice(h.index, 1); state.selected = -1; save(); return;
    }
    const inside = p.x >= 0 && p.x <= 1 && p.y >= 0 && p.y <= 1;
    if (state.mode === "paint") {
      if (!inside) return;
      const g = state.layout.regions[state.selected], stroke = newStroke(p, state.brush / 100);
      if (g && hasStrokes(g)) {
        g.strokes.push(stroke);
        state.drag = { mode: "paint", isNew: false };
      } else {
        state.layout.regions.push({ phrase: "", strokes: [stroke] });
        state.selected = state.layout.regions.length - 1;
        state.drag = { mode: "paint", isNew: true };
      }
    } else if (h) {
      state.selected = h.index;
      const g = state.layout.regions[h.index];
      state.drag = { mode: h.part === "resize" ? "resize" : "move", start: p, orig: JSON.parse(JSON.stringify(g)) };
    } else if (p.x >= 0 && p.x <= 1 && p.y >= 0 && p.y <= 1) {
      state.layout.regions.push({ x: p.x, y: p.y, w: 0, h: 0, phrase: "" });
      state.selected = state.layout.regions.length - 1;
      state.drag = { mode: "new", start: p };
    }
    canvas.setPointerCapture?.(ev.pointerId);
    draw();
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!state.drag) {
      if (state.mode === "paint") { state.hover = toFrac(ev); draw(); }
      return;
    }
    ev.stopPropagation();
    const p = toFrac(ev), d = state.drag, g = state.layout.regions[state.selected];
    if (!g) return;
    if (state.mode === "paint") state.hover = p;
    if (d.mode === "paint") {
      extendStroke(g.strokes[g.strokes.length - 1], p, aspect());
    } else if (d.mode === "move" && hasStrokes(d.orig)) {
      translate(g, d.orig, p.x - d.start.x, p.y - d.start.y);
    } else if (d.mode === "new") {
      g.x = clamp01(Math.min(d.start.x, p.x)); g.y = clamp01(Math.min(d.start.y, p.y));
      g.w = clamp01(Math.max(d.start.x, p.x)) - g.x; g.h = clamp01(Math.max(d.start.y, p.y)) - g.y;
    } else if (d.mode === "move") {
      g.x = clamp01(Math.min(1 - d.orig.w, d.orig.x + p.x - d.start.x));
      g.y = clamp01(Math.min(1 - d.orig.h, d.orig.y + p.y - d.start.y));
    } else {
      g.w = Math.max(0.02, clamp01(p.x) - d.orig.x); g.h = Math.max(0.02, clamp01(p.y) - d.orig.y);
    }
    draw();
  });
  canvas.addEventListener("pointerup", (ev) => {
    if (!state.drag) return;
    ev.stopPropagation();
    const d = state.drag, g = state.layout.regions[state.selected];
    state.drag = null;
    if (d.mode === "new") {
      if (!g || g.w < 0.02 || g.h < 0.02) { state.layout.regions.pop(); state.selected = -1; draw(); return; }
      g.phrase = askPhrase("");
    }
    if (!g) { draw(); return; }
    if (d.mode === "paint" && d.isNew) g.phrase = askPhrase("");
    if (hasBox(g)) for (const k of ["x", "y", "w", "h"]) g[k] = Math.round(g[k] * 1000) / 1000;
    save();
  });
  canvas.addEventListener("pointerleave", () => { if (state.hover) { state.hover = null; draw(); } });
  canvas.addEventListener("dblclick", (ev) => {
    ev.stopPropagation();
    if (state.mode === "paint") return;  // in Paint a double-click is two dabs; rename with Enter or in Box mode
    const h = hit(toFrac(ev));
    if (!h) return;
    const g = state.layout.regions[h.index];
    g.phrase = askPhrase(g.phrase);
    state.selected = h.index;
    save();
  });
  canvas.addEventListener("keydown", (ev) => {
    if ((ev.key === "Delete" || ev.key === "Backspace") && state.selected >= 0) {
      ev.stopPropagation(); ev.preventDefault();
      state.layout.regions.splice(state.selected, 1); state.selected = -1; save();
    } else if (ev.key === "Escape" && state.selected >= 0) {
      ev.stopPropagation(); ev.preventDefault();
      state.selected = -1; draw();
    } else if (ev.key === "Enter" && state.selected >= 0) {
      ev.stopPropagation(); ev.preventDefault();
      const g = state.layout.regions[state.selected];
      g.phrase = askPhrase(g.phrase); save();
    }
  });
  new ResizeObserver(() => draw()).observe(canvas);
  const onDraw = node.onDrawForeground;
  node.onDrawForeground = function () { const r = onDraw?.apply(this, arguments); if (textWidget.value !== state.text) draw(); return r; };
  // A test and power-user hook: the layout as an object.
  node.faithfulLayout = () => JSON.parse(JSON.stringify(state.layout));
  setTimeout(draw, 0);
}

app.registerExtension({
  name: "faithful.layoutRegions",
  nodeCreated(node) {
    if (node.comfyClass === NODE || node.type === NODE) attach(node);
  },
});
