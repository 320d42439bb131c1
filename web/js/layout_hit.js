// Faithful Layout Regions widget: geometry and hit-testing (no drawing). The drawing area is the largest
// rectangle with the image's aspect inside the canvas; points are fractions of the image (0..1 on each axis).
import { bounds, hasBox, hitStrokes } from "./layout_paint.js";
import { aspect } from "./layout_state.js";

export const HANDLE = 12;   // side of the resize handle, CSS px
export const GRAB = 14;     // how close (CSS px) a pointer must be to a handle to grab it
export const CLOSE_R = 9;   // radius of the selected region's delete button, CSS px
export const HINT_H = 18;   // the gesture hint line under the image, CSS px

// {x, y, w, h} of the image in canvas CSS pixels, plus the canvas size W x H.
export function drawArea(canvas, state) {
  const W = canvas.clientWidth || 300, H = canvas.clientHeight || 220;
  const ar = aspect(state), pad = 6, avail = Math.max(10, H - HINT_H - pad);
  let w = Math.max(10, W - 2 * pad), h = w / ar;
  if (h > avail) { h = avail; w = h * ar; }
  return { x: (W - w) / 2, y: pad, w, h, W, H };  // top-aligned: the hint line sits right under the image
}

// The pointer event's position as fractions of the image. The canvas may be CSS-scaled (the graph's zoom), so
// client pixels are converted to the canvas's own CSS pixels first.
export function toFrac(ev, canvas, area) {
  const r = canvas.getBoundingClientRect();
  const sx = (canvas.clientWidth || r.width) / (r.width || 1), sy = (canvas.clientHeight || r.height) / (r.height || 1);
  return { x: ((ev.clientX - r.left) * sx - area.x) / area.w, y: ((ev.clientY - r.top) * sy - area.y) / area.h };
}

export const inside = (p) => p.x >= 0 && p.x <= 1 && p.y >= 0 && p.y <= 1;

// Centre of region g's delete button (fractions -> CSS px inside the area): top-right corner of its extent.
export function closeButton(g, area, ar) {
  const bb = bounds(g, ar);
  if (!bb) return null;
  const x = area.x + bb.x1 * area.w - CLOSE_R - 2, y = area.y + bb.y0 * area.h + CLOSE_R + 2;
  return { x: Math.max(area.x + CLOSE_R, x), y: Math.min(area.y + area.h - CLOSE_R, y) };
}

// {index, part: "delete" | "resize" | "move"} of the topmost region under p, or null. Handles of the selected
// region win over the bodies of regions above it, so a handle can always be grabbed.
export function hit(state, p, area) {
  const regions = state.layout.regions, ar = aspect(state);
  const px = area.x + p.x * area.w, py = area.y + p.y * area.h;
  const g = regions[state.selected];
  if (g) {
    const c = closeButton(g, area, ar);
    if (c && Math.hypot(px - c.x, py - c.y) <= CLOSE_R + 3) return { index: state.selected, part: "delete" };
    if (hasBox(g)) {
      const hx = area.x + (g.x + g.w) * area.w, hy = area.y + (g.y + g.h) * area.h;
      if (Math.abs(px - hx) <= GRAB && Math.abs(py - hy) <= GRAB) return { index: state.selected, part: "resize" };
    }
  }
  for (let i = regions.length - 1; i >= 0; i--) {
    const r = regions[i];
    if (hasBox(r) && p.x >= r.x && p.x <= r.x + r.w && p.y >= r.y && p.y <= r.y + r.h) return { index: i, part: "move" };
    if (hitStrokes(r, p, area)) return { index: i, part: "move" };
  }
  return null;
}
