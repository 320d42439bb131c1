// Faithful Layout Regions widget: the HTML parts around the canvas. The toolbar (Box / Paint, New, brush size),
// the phrase editor of the selected region (an input in the page: window.prompt is missing in some desktop
// builds) with the phrases that are not in the prompt listed as they are typed, and the raw layout JSON,
// collapsed by default. `ctl` is the widget (layout_widget.js).
import { BRUSH } from "./layout_paint.js";
import { parseLayout, phraseProblem } from "./layout_state.js";

const FONT = "11px sans-serif";

function el(tag, className, style = {}, props = {}) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  Object.assign(e.style, style);
  return Object.assign(e, props);
}

// Keys and pointers typed into our controls belong to them, never to the graph (Delete must not remove the
// node, a drag in a text box must not move it).
function own(e) {
  for (const t of ["pointerdown", "pointermove", "pointerup", "keydown", "keyup", "wheel", "dblclick"]) {
    e.addEventListener(t, (ev) => ev.stopPropagation());
  }
  return e;
}

const ROW = { display: "flex", flexWrap: "wrap", gap: "4px", alignItems: "center", flex: "0 0 auto", minWidth: "0",
              font: FONT, color: "#ccc", padding: "2px 4px", userSelect: "none" };

export function makeToolbar(ctl) {
  const { state } = ctl;
  const bar = own(el("div", "faithful-layout-toolbar", ROW));
  const button = (label, title, onClick) => {
    const b = el("button", "", { height: "20px", padding: "0 8px", border: "1px solid #555", borderRadius: "3px",
                                 color: "#eee", background: "#333", cursor: "pointer", font: FONT },
                 { type: "button", textContent: label, title });
    b.addEventListener("click", (ev) => { ev.stopPropagation(); onClick(); refresh(); ctl.redraw(); });
    bar.appendChild(b);
    return b;
  };
  const modes = {
    box: button("Box", "Draw, move and resize boxes; double-click a box to edit its phrase", () => { state.mode = "box"; }),
    paint: button("Paint", "Paint a region free-hand; strokes add to the selected painted region",
                  () => { state.mode = "paint"; }),
  };
  for (const [m, b] of Object.entries(modes)) { b.className = "faithful-layout-mode"; b.dataset.mode = m; }
  const fresh = button("New", "Finish the selected region: the next stroke starts a new painted region (Esc)",
                       () => { state.selected = -1; ctl.refresh(); });
  fresh.className = "faithful-layout-new";
  const group = el("span", "", { display: "inline-flex", alignItems: "center", gap: "4px", minWidth: "0" });
  const slider = el("input", "faithful-layout-brush", { width: "80px", minWidth: "40px" },
                    { type: "range", min: BRUSH.min, max: BRUSH.max, step: 1, value: state.brush,
                      title: "Brush radius, % of the image width" });
  const value = el("span", "", { minWidth: "26px" });
  slider.addEventListener("input", () => { state.brush = Number(slider.value); refresh(); ctl.redraw(); });
  group.append(el("span", "", {}, { textContent: "brush" }), slider, value);
  bar.append(group);
  function refresh() {
    for (const [m, b] of Object.entries(modes)) b.style.background = state.mode === m ? "#4363d8" : "#333";
    slider.value = state.brush;
    value.textContent = `${state.brush}%`;
    ctl.canvas.style.cursor = state.mode === "paint" ? "crosshair" : "default";
  }
  return { element: bar, refresh };
}

// The selected region's phrase, typed in place; every region whose phrase is missing from the prompt listed.
export function makePhraseEditor(ctl) {
  const { state } = ctl;
  const row = own(el("div", "faithful-layout-phrase-row", ROW));
  const input = el("input", "faithful-layout-phrase",
                   { flex: "1 1 120px", minWidth: "60px", height: "20px", font: "12px sans-serif", color: "#eee",
                     background: "#1b1b1b", border: "1px solid #555", borderRadius: "3px", padding: "0 6px" },
                   { type: "text", spellcheck: false, title: "The words of the prompt this region is for" });
  const warn = el("div", "faithful-layout-warning",
                  { flex: "1 1 100%", minWidth: "0", color: "#ffb020", whiteSpace: "normal", overflowWrap: "anywhere" });
  row.append(el("span", "", {}, { textContent: "phrase" }), input, warn);
  const region = () => state.layout.regions[state.selected];
  input.addEventListener("input", () => {
    const g = region();
    if (!g) return;
    g.phrase = input.value;
    ctl.save({ keepEditor: true });
  });
  input.addEventListener("change", () => {
    const g = region();
    if (g && g.phrase !== g.phrase.trim()) { g.phrase = g.phrase.trim(); ctl.save({ keepEditor: true }); }
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === "Escape") { ev.preventDefault(); input.blur(); ctl.canvas.focus(); }
  });
  function refresh({ keepEditor = false } = {}) {
    const g = region();
    input.disabled = !g;
    input.placeholder = g ? "words from the prompt, e.g. a cat" : "select or draw a region";
    if (!keepEditor) input.value = g ? g.phrase || "" : "";
    const problems = state.layout.regions.map((r, i) => [i, phraseProblem(r, state.prompt)]).filter(([, p]) => p);
    input.style.borderColor = g && phraseProblem(g, state.prompt) ? "#ffb020" : "#555";
    warn.textContent = problems.map(([i, p]) => `region ${i + 1}: ${p}`).join("; ");
    warn.style.display = problems.length ? "block" : "none";
    warn.dataset.count = String(problems.length);
  }
  function edit() { refresh(); if (!input.disabled) { input.focus(); input.select(); } }
  return { element: row, refresh, edit, input };
}

// The layout JSON the node saves, collapsed by default; edits that are valid JSON replace the layout.
export function makeJsonPanel(ctl) {
  const details = own(el("details", "faithful-layout-json", { flex: "0 0 auto", font: FONT, color: "#aaa",
                                                              padding: "0 4px", minWidth: "0" }));
  const summary = el("summary", "", { cursor: "pointer", userSelect: "none" }, { textContent: "layout JSON" });
  const area = el("textarea", "faithful-layout-json-text",
                  { width: "100%", boxSizing: "border-box", height: "90px", resize: "vertical", font: "11px monospace",
                    color: "#ddd", background: "#1b1b1b", border: "1px solid #555" }, { spellcheck: false });
  const error = el("div", "faithful-layout-json-error", { color: "#ff6b6b" });
  details.append(summary, area, error);
  area.addEventListener("input", () => {
    const parsed = parseLayout(area.value);
    error.textContent = parsed ? "" : "not valid JSON: the drawing keeps the last valid layout";
    if (parsed) ctl.replaceLayout(parsed, area.value);
  });
  details.addEventListener("toggle", () => ctl.onPanelToggle?.());
  function refresh() { if (document.activeElement !== area) { area.value = ctl.text(); error.textContent = ""; } }
  return { element: details, refresh };
}
