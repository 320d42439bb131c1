// Faithful Layout Regions widget: the input modes. Box mode: drag on empty space draws a box, drag inside a
// region moves it, drag the corner handle resizes, double-click (or Enter) edits the phrase, the x button or
// Delete removes it. Paint mode: a drag brushes a stroke; strokes join the selected painted region, "New" or Esc
// starts the next one. `ctl` is the widget (layout_widget.js): {state, canvas, area(), redraw(), save(),
// editPhrase(index)}. Returns a function that removes every listener.
import { extendStroke, hasBox, hasStrokes, newStroke, translate } from "./layout_paint.js";
import { MAX_REGIONS, MIN_BOX, aspect, clamp01, roundBox } from "./layout_state.js";
import { hit, inside, toFrac } from "./layout_hit.js";

function startPaint(state, p) {
  const g = state.layout.regions[state.selected], stroke = newStroke(p, state.brush / 100);
  if (g && hasStrokes(g)) { g.strokes.push(stroke); return { mode: "paint", isNew: false }; }
  if (state.layout.regions.length >= MAX_REGIONS) return null;
  state.layout.regions.push({ phrase: "", strokes: [stroke] });
  state.selected = state.layout.regions.length - 1;
  return { mode: "paint", isNew: true };
}

function startBox(state, p, h) {
  if (h) {
    state.selected = h.index;
    const g = state.layout.regions[h.index];
    return { mode: h.part === "resize" ? "resize" : "move", start: p, orig: JSON.parse(JSON.stringify(g)) };
  }
  if (!inside(p) || state.layout.regions.length >= MAX_REGIONS) { state.selected = -1; return null; }
  state.layout.regions.push({ x: p.x, y: p.y, w: 0, h: 0, phrase: "" });
  state.selected = state.layout.regions.length - 1;
  return { mode: "new", start: p };
}

function follow(state, d, g, p) {  // one pointer move of gesture d on region g
  if (d.mode === "paint") extendStroke(g.strokes[g.strokes.length - 1], p, aspect(state));
  else if (d.mode === "move" && hasStrokes(d.orig)) translate(g, d.orig, p.x - d.start.x, p.y - d.start.y);
  else if (d.mode === "new") {
    g.x = clamp01(Math.min(d.start.x, p.x)); g.y = clamp01(Math.min(d.start.y, p.y));
    g.w = clamp01(Math.max(d.start.x, p.x)) - g.x; g.h = clamp01(Math.max(d.start.y, p.y)) - g.y;
  } else if (d.mode === "move") {
    g.x = clamp01(Math.min(1 - d.orig.w, d.orig.x + p.x - d.start.x));
    g.y = clamp01(Math.min(1 - d.orig.h, d.orig.y + p.y - d.start.y));
  } else if (d.mode === "resize") {
    g.w = Math.max(MIN_BOX, clamp01(p.x) - d.orig.x); g.h = Math.max(MIN_BOX, clamp01(p.y) - d.orig.y);
  }
}

function removeSelected(ctl) {
  const s = ctl.state;
  s.layout.regions.splice(s.selected, 1);
  s.selected = -1;
  ctl.save();
}

export function installInput(ctl) {
  const { state, canvas } = ctl;
  const on = [];
  const listen = (type, fn) => { canvas.addEventListener(type, fn); on.push([type, fn]); };

  listen("pointerdown", (ev) => {
    if (ev.button !== undefined && ev.button !== 0) return;  // middle / right: leave to the graph canvas
    ev.stopPropagation();
    canvas.focus();
    const p = toFrac(ev, canvas, ctl.area()), h = hit(state, p, ctl.area());
    if (h && h.part === "delete") { state.selected = h.index; removeSelected(ctl); return; }
    if (state.mode === "paint") state.drag = inside(p) ? startPaint(state, p) : null;
    else state.drag = startBox(state, p, h);
    if (state.drag) canvas.setPointerCapture?.(ev.pointerId);
    ctl.redraw();
  });
  listen("pointermove", (ev) => {
    const p = toFrac(ev, canvas, ctl.area());
    if (state.mode === "paint") state.hover = p;
    const d = state.drag, g = state.layout.regions[state.selected];
    if (d && g) { ev.stopPropagation(); follow(state, d, g, p); }
    if (d || state.mode === "paint") ctl.redraw();
  });
  listen("pointerup", (ev) => {
    const d = state.drag;
    if (!d) return;
    ev.stopPropagation();
    state.drag = null;
    const g = state.layout.regions[state.selected];
    if (!g) { ctl.redraw(); return; }
    if (d.mode === "new" && (g.w < MIN_BOX || g.h < MIN_BOX)) {  // a click, not a drag: no box
      state.layout.regions.pop(); state.selected = -1; ctl.redraw(); return;
    }
    if (hasBox(g)) roundBox(g);
    ctl.save();
    if (d.mode === "new" || (d.mode === "paint" && d.isNew)) ctl.editPhrase(state.selected);
  });
  listen("pointerleave", () => { if (state.hover) { state.hover = null; ctl.redraw(); } });
  listen("dblclick", (ev) => {
    ev.stopPropagation();
    if (state.mode === "paint") return;  // in Paint a double-click is two dabs; rename with Enter or in Box mode
    const h = hit(state, toFrac(ev, canvas, ctl.area()), ctl.area());
    if (h) { state.selected = h.index; ctl.redraw(); ctl.editPhrase(h.index); }
  });
  listen("keydown", (ev) => {
    const sel = state.selected >= 0;
    if ((ev.key === "Delete" || ev.key === "Backspace") && sel) removeSelected(ctl);
    else if (ev.key === "Escape" && sel) { state.selected = -1; ctl.redraw(); }
    else if (ev.key === "Enter" && sel) ctl.editPhrase(state.selected);
    else return;
    ev.stopPropagation(); ev.preventDefault();  // the graph must not also delete the node or run the prompt
  });
  return () => { for (const [type, fn] of on) canvas.removeEventListener(type, fn); };
}
