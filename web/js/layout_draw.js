// Faithful Layout Regions widget: drawing the canvas (reads the state, changes nothing). The image area shows
// the latent grid (image / 8, what the model sees), each region filled in its colour with its phrase on a label
// kept inside the image, the selected region's handles, and a hint line for the gestures of the current mode.
import { bounds, drawBrush, drawStrokes, hasBox, hasStrokes } from "./layout_paint.js";
import { COLORS, aspect, phraseProblem } from "./layout_state.js";
import { CLOSE_R, HANDLE, HINT_H, closeButton, drawArea } from "./layout_hit.js";

const BG = "#23262b", GRID = "#343840", FRAME = "#7a7f88", WARN = "#ffb020";
const FILL_ALPHA = 0.45;  // box and paint fill: clearly visible on the dark theme, the grid still shows through

export const HINTS = {  // [full, short]: the short one when the node is narrow
  box: ["drag: new box \u00b7 drag a box: move \u00b7 corner: resize \u00b7 double-click: phrase \u00b7 Del: remove",
        "drag: box \u00b7 corner: resize \u00b7 dbl-click: phrase \u00b7 Del"],
  paint: ["drag: paint \u00b7 strokes join the selected region \u00b7 New or Esc: next region \u00b7 Del: remove",
          "drag: paint \u00b7 New/Esc: next region \u00b7 Del"],
};

function sizeCanvas(canvas) {  // the backing store follows the CSS size and the pixel ratio
  const dpr = window.devicePixelRatio || 1, W = canvas.clientWidth || 300, H = canvas.clientHeight || 220;
  const bw = Math.round(W * dpr), bh = Math.round(H * dpr);
  if (canvas.width !== bw || canvas.height !== bh) { canvas.width = bw; canvas.height = bh; }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { ctx, dpr };
}

function grid(ctx, a, state) {
  const s = state.latent || state.layout;
  const gw = Math.max(1, Math.round(s.width / 8)), gh = Math.max(1, Math.round(s.height / 8));
  const step = Math.max(1, Math.ceil(Math.max(gw, gh) / 16));
  ctx.strokeStyle = GRID; ctx.lineWidth = 1;
  ctx.beginPath();
  for (let i = 0; i <= gw; i += step) { const x = a.x + (i / gw) * a.w; ctx.moveTo(x, a.y); ctx.lineTo(x, a.y + a.h); }
  for (let j = 0; j <= gh; j += step) { const y = a.y + (j / gh) * a.h; ctx.moveTo(a.x, y); ctx.lineTo(a.x + a.w, y); }
  ctx.stroke();
  return { gw, gh, w: s.width, h: s.height };
}

// The phrase on a dark label at the region's top-left, clipped and moved so it stays inside the image.
function label(ctx, a, bb, text, color, warn) {
  ctx.font = "12px sans-serif";
  const maxW = Math.max(24, a.w - 8);
  let t = text;
  while (t.length > 1 && ctx.measureText(t).width + 10 > maxW) t = t.slice(0, -2) + "\u2026";
  const w = Math.min(maxW, ctx.measureText(t).width + 10), h = 17;
  const x = Math.min(Math.max(a.x + 2, a.x + bb.x0 * a.w + 2), a.x + a.w - w - 2);
  const y = Math.min(Math.max(a.y + 2, a.y + bb.y0 * a.h + 2), a.y + a.h - h - 2);
  ctx.globalAlpha = 0.85; ctx.fillStyle = "#111"; ctx.fillRect(x, y, w, h); ctx.globalAlpha = 1;
  ctx.strokeStyle = warn ? WARN : color; ctx.lineWidth = 1; ctx.strokeRect(x + 0.5, y + 0.5, w - 1, h - 1);
  ctx.fillStyle = warn ? WARN : "#fff"; ctx.fillText(t, x + 5, y + 13);
}

function region(ctx, a, g, i, state, dpr) {
  const c = COLORS[i % COLORS.length], ar = aspect(state), bb = bounds(g, ar), sel = i === state.selected;
  if (!bb) return;
  if (hasStrokes(g)) drawStrokes(ctx, g, a, c, dpr, FILL_ALPHA + 0.1);
  if (hasBox(g)) {
    const x = a.x + g.x * a.w, y = a.y + g.y * a.h, w = g.w * a.w, h = g.h * a.h;
    ctx.globalAlpha = FILL_ALPHA; ctx.fillStyle = c; ctx.fillRect(x, y, w, h); ctx.globalAlpha = 1;
    ctx.strokeStyle = c; ctx.lineWidth = sel ? 3 : 2; ctx.strokeRect(x, y, w, h);
    if (sel) {  // resize handle: a square on the bottom-right corner, white-rimmed so it reads on any fill
      ctx.fillStyle = c; ctx.fillRect(x + w - HANDLE / 2, y + h - HANDLE / 2, HANDLE, HANDLE);
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.strokeRect(x + w - HANDLE / 2, y + h - HANDLE / 2, HANDLE, HANDLE);
    }
  } else {  // a painted region: its extent, dashed (bold when selected)
    ctx.save(); ctx.setLineDash([5, 4]); ctx.strokeStyle = c; ctx.lineWidth = sel ? 2 : 1;
    ctx.strokeRect(a.x + bb.x0 * a.w, a.y + bb.y0 * a.h, (bb.x1 - bb.x0) * a.w, (bb.y1 - bb.y0) * a.h);
    ctx.restore();
  }
  const problem = phraseProblem(g, state.prompt);
  label(ctx, a, bb, (problem && g.phrase ? "\u26a0 " : "") + (g.phrase || "(no phrase)"), c, !!problem);
  if (sel) {  // the delete button
    const b = closeButton(g, a, ar);
    ctx.fillStyle = "#111"; ctx.beginPath(); ctx.arc(b.x, b.y, CLOSE_R, 0, 2 * Math.PI); ctx.fill();
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.stroke();
    ctx.beginPath(); const d = CLOSE_R * 0.45;
    ctx.moveTo(b.x - d, b.y - d); ctx.lineTo(b.x + d, b.y + d); ctx.moveTo(b.x + d, b.y - d); ctx.lineTo(b.x - d, b.y + d);
    ctx.stroke();
  }
}

// Draw the whole widget canvas for `state`.
export function draw(canvas, state) {
  const { ctx, dpr } = sizeCanvas(canvas);
  const a = drawArea(canvas, state);
  ctx.clearRect(0, 0, a.W, a.H);
  ctx.fillStyle = BG; ctx.fillRect(a.x, a.y, a.w, a.h);
  const g = grid(ctx, a, state);
  ctx.strokeStyle = FRAME; ctx.lineWidth = 1; ctx.strokeRect(a.x + 0.5, a.y + 0.5, a.w - 1, a.h - 1);
  state.layout.regions.forEach((r, i) => region(ctx, a, r, i, state, dpr));
  if (state.mode === "paint" && state.hover) drawBrush(ctx, state.hover, a, state.brush / 100);
  ctx.font = "10px sans-serif"; ctx.fillStyle = "#aab";
  const size = `${g.w}x${g.h} px${state.latent ? " (latent)" : ""}, grid ${g.gw}x${g.gh}`;
  ctx.fillText(size, a.x + 4, a.y + a.h - 5, Math.max(10, a.w - 8));
  if (!state.layout.regions.length) {  // an empty canvas says how to start
    ctx.font = "13px sans-serif"; ctx.fillStyle = "#ccd"; ctx.textAlign = "center";
    ctx.fillText(state.mode === "paint" ? "Paint a region with the brush" : "Drag to draw a box for a phrase",
                 a.x + a.w / 2, a.y + a.h / 2, a.w - 12);
    ctx.textAlign = "start";
  }
  ctx.font = "11px sans-serif"; ctx.fillStyle = "#99a";
  const [full, short] = HINTS[state.mode] || ["", ""];
  ctx.fillText(ctx.measureText(full).width <= a.W - 12 ? full : short, 6, a.y + a.h + HINT_H - 5, Math.max(10, a.W - 12));
}
