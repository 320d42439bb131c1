// Faithful: free-hand mask painting for the Layout Regions widget (geometry of painted strokes; it registers
// nothing itself). A painted region is {"phrase", "strokes": [{"r", "points": [[x, y], ...]}]}: x, y are
// fractions of the image, r the brush radius as a fraction of the image WIDTH. Its mask is every pixel within
// r of a stroke's polyline, which is what guidance_core/strokes.py rasterises at the latent size. A region may
// also keep a box (x, y, w, h): then its mask is the union of both.

export const BRUSH = { min: 1, max: 25, initial: 5 };  // brush radius, % of the image width

const round3 = (v) => Math.round(v * 1000) / 1000;
const clamp01 = (v) => Math.max(0, Math.min(1, v));
const num = (v) => typeof v === "number" && Number.isFinite(v);

export function hasBox(g) { return ["x", "y", "w", "h"].every((k) => num(g[k])); }
export function hasStrokes(g) { return Array.isArray(g.strokes) && g.strokes.length > 0; }

function* strokePoints(g) {  // [stroke, points] with malformed (hand-edited) entries skipped, never thrown on
  for (const s of Array.isArray(g.strokes) ? g.strokes : []) {
    if (!s || !num(s.r) || !Array.isArray(s.points)) continue;
    const pts = s.points.filter((p) => Array.isArray(p) && num(p[0]) && num(p[1]));
    if (pts.length) yield [s, pts];
  }
}

// {x0, y0, x1, y1} (fractions) around the box and the painted discs, or null; aspect = width / height.
export function bounds(g, aspect) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  if (hasBox(g)) { x0 = g.x; y0 = g.y; x1 = g.x + g.w; y1 = g.y + g.h; }
  for (const [s, pts] of strokePoints(g)) {
    for (const [x, y] of pts) {
      x0 = Math.min(x0, x - s.r); x1 = Math.max(x1, x + s.r);
      y0 = Math.min(y0, y - s.r * aspect); y1 = Math.max(y1, y + s.r * aspect);
    }
  }
  if (!Number.isFinite(x0)) return null;
  return { x0: clamp01(x0), y0: clamp01(y0), x1: clamp01(x1), y1: clamp01(y1) };
}

function dist2(px, py, ax, ay, bx, by) {  // squared distance from p to the segment a-b
  const dx = bx - ax, dy = by - ay, L = dx * dx + dy * dy;
  const t = L > 0 ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / L)) : 0;
  const ex = px - ax - t * dx, ey = py - ay - t * dy;
  return ex * ex + ey * ey;
}

// Is p (fractions) on the painted part of g? b is the drawing area in canvas pixels.
export function hitStrokes(g, p, b) {
  const px = p.x * b.w, py = p.y * b.h;
  for (const [s, pts] of strokePoints(g)) {
    const r = s.r * b.w;
    for (let i = 0; i < pts.length; i++) {
      const a = pts[i], c = pts[Math.min(i + 1, pts.length - 1)];
      if (dist2(px, py, a[0] * b.w, a[1] * b.h, c[0] * b.w, c[1] * b.h) <= r * r) return true;
    }
  }
  return false;
}

let scratch = null;  // strokes are painted opaque here, then laid on the view once, so overlaps do not darken

// Draw g's strokes filled semi-transparent in `color`; b is the drawing area, dpr the canvas pixel ratio.
export function drawStrokes(ctx, g, b, color, dpr, alpha = 0.35) {
  const W = ctx.canvas.width, H = ctx.canvas.height;
  scratch = scratch || document.createElement("canvas");
  if (scratch.width !== W || scratch.height !== H) { scratch.width = W; scratch.height = H; }
  const s = scratch.getContext("2d");
  s.setTransform(1, 0, 0, 1, 0, 0);
  s.clearRect(0, 0, W, H);
  s.setTransform(dpr, 0, 0, dpr, 0, 0);
  s.save();
  s.beginPath(); s.rect(b.x, b.y, b.w, b.h); s.clip();
  s.strokeStyle = s.fillStyle = color; s.lineCap = "round"; s.lineJoin = "round";
  for (const [st, pts] of strokePoints(g)) {
    const r = st.r * b.w, X = (p) => b.x + p[0] * b.w, Y = (p) => b.y + p[1] * b.h;
    if (pts.length === 1) { s.beginPath(); s.arc(X(pts[0]), Y(pts[0]), r, 0, 2 * Math.PI); s.fill(); continue; }
    s.lineWidth = 2 * r;
    s.beginPath(); s.moveTo(X(pts[0]), Y(pts[0]));
    for (const p of pts.slice(1)) s.lineTo(X(p), Y(p));
    s.stroke();
  }
  s.restore();
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.globalAlpha = alpha;
  ctx.drawImage(scratch, 0, 0);
  ctx.restore();
}

// The brush outline at p (fractions), for the paint-mode cursor.
export function drawBrush(ctx, p, b, radiusFrac) {
  ctx.save();
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 1; ctx.setLineDash([3, 3]);
  ctx.beginPath(); ctx.arc(b.x + p.x * b.w, b.y + p.y * b.h, radiusFrac * b.w, 0, 2 * Math.PI); ctx.stroke();
  ctx.restore();
}

// Move g (box and strokes) to orig shifted by (dx, dy), clamped so every point and the box stay on the image.
export function translate(g, orig, dx, dy) {
  let lo = -Infinity, hi = Infinity, loY = -Infinity, hiY = Infinity;
  const keep = (x, y) => { lo = Math.max(lo, -x); hi = Math.min(hi, 1 - x); loY = Math.max(loY, -y); hiY = Math.min(hiY, 1 - y); };
  if (hasBox(orig)) { keep(orig.x, orig.y); keep(orig.x + orig.w, orig.y + orig.h); }
  for (const [, pts] of strokePoints(orig)) for (const [x, y] of pts) keep(x, y);
  dx = Math.max(lo, Math.min(hi, dx)); dy = Math.max(loY, Math.min(hiY, dy));
  if (hasBox(orig)) { g.x = round3(orig.x + dx); g.y = round3(orig.y + dy); }
  if (Array.isArray(orig.strokes)) {
    g.strokes = orig.strokes.map((s) => (s && Array.isArray(s.points)
      ? { ...s, points: s.points.map((p) => (Array.isArray(p) && num(p[0]) && num(p[1]) ? [round3(clamp01(p[0] + dx)), round3(clamp01(p[1] + dy))] : p)) }
      : s));
  }
}

// A new stroke at p (fractions) with radius r (fraction of the width).
export function newStroke(p, r) { return { r: round3(r), points: [[round3(clamp01(p.x)), round3(clamp01(p.y))]] }; }

// Add p to the stroke when it is far enough from the last point (keeps the JSON small); aspect = width / height.
export function extendStroke(stroke, p, aspect) {
  const q = [round3(clamp01(p.x)), round3(clamp01(p.y))], last = stroke.points[stroke.points.length - 1];
  const step = Math.max(0.004, stroke.r / 4);
  if (Math.hypot(q[0] - last[0], (q[1] - last[1]) / aspect) >= step) { stroke.points.push(q); return true; }
  return false;
}
