// Faithful: the region-drawing widget of the "Layout Regions (DenseDiffusion)" node (Kim et al., ICCV 2023).
// The layout is kept as JSON in the node's "layout" widget, hidden here but saved with the workflow; the canvas
// draws it and edits it. Parts: layout_state.js (the model), layout_hit.js (geometry, hit-testing),
// layout_draw.js (drawing), layout_input.js (Box and Paint modes), layout_ui.js (toolbar, phrase editor, JSON
// panel), layout_paint.js (strokes), layout_latent.js (the connected latent's size). Works on the classic
// canvas and in Nodes 2.0 (Vue nodes): the root is one DOM widget whose element carries "widget-expands", the
// class with which the Vue node layout gives a widget the node's free height.
import { app } from "../../../scripts/app.js";  // served at /extensions/faithful/js/
import { NODE, aspect, createState } from "./layout_state.js";
import { drawArea } from "./layout_hit.js";
import { draw } from "./layout_draw.js";
import { installInput } from "./layout_input.js";
import { makeJsonPanel, makePhraseEditor, makeToolbar } from "./layout_ui.js";
import { connectedLatent, watchWidgets } from "./layout_latent.js";

const MIN_CANVAS = 240;      // px: the drawing canvas never gets less than this (image >= 210 px high)
const CHROME = 24 + 30 + 20; // px: toolbar + phrase row + the collapsed JSON line
const JSON_OPEN = 120;       // px more while the JSON panel is open
const TEXT_MAX = { prompt: 120, mask_phrases: 60 };  // px: these text boxes stop growing here, so the drawing
                                                     // takes the rest of the node's free height

function chain(obj, key, after) {  // obj[key] runs as before, then `after` with the same arguments
  const prev = obj[key];
  obj[key] = function (...args) {
    const r = prev?.apply(this, args);
    after.apply(this, args);
    return r;
  };
}

function hideWidget(w) {  // hidden on the canvas and in Vue nodes, still serialised with the workflow
  w.hidden = true;
  w.options = w.options || {};
  w.options.hidden = true;
  w.options.getMinHeight = () => 0;
  w.options.getMaxHeight = () => 0;
  w.computeSize = () => [0, -4];  // older frontends size widgets by computeSize
}

function attach(node) {
  const textWidget = node.widgets?.find((w) => w.name === "layout");
  if (!textWidget || node.__faithfulLayout) return;
  const promptWidget = node.widgets.find((w) => w.name === "prompt");
  const canvas = Object.assign(document.createElement("canvas"), { className: "faithful-layout-canvas", tabIndex: 0 });
  Object.assign(canvas.style, { display: "block", width: "100%", flex: "1 1 0px", minHeight: `${MIN_CANVAS}px`,
                                outline: "none", touchAction: "none" });
  const state = createState(textWidget.value);
  node.__faithfulLayout = state;
  const cleanups = [];
  let latentSource = null;

  const ctl = {
    state, canvas,
    area: () => drawArea(canvas, state),
    text: () => state.text,
    redraw: () => draw(canvas, state),
    refresh(opts) { toolbar.refresh(); phrase.refresh(opts); json.refresh(); ctl.redraw(); },
    save(opts) {  // the state becomes the saved value of the "layout" widget
      if (state.latent) { state.layout.width = state.latent.width; state.layout.height = state.latent.height; }
      const text = JSON.stringify(state.layout);
      state.text = text;
      if (textWidget.value !== text) textWidget.value = text;  // the frontend's setter calls the widget's callback
      node.setDirtyCanvas?.(true, true);
      ctl.refresh(opts);
    },
    replaceLayout(layout, text) {  // a valid hand edit of the JSON
      state.layout = layout;
      state.selected = Math.min(state.selected, layout.regions.length - 1);
      state.text = text;
      textWidget.value = text;
      phrase.refresh(); ctl.redraw();
    },
    editPhrase(index) { state.selected = index; phrase.edit(); ctl.redraw(); },
    onPanelToggle() { node.setSize?.([node.size[0], Math.max(node.size[1], node.computeSize?.()[1] ?? 0)]); node.setDirtyCanvas?.(true, true); },
  };
  const toolbar = makeToolbar(ctl), phrase = makePhraseEditor(ctl), json = makeJsonPanel(ctl);

  const root = document.createElement("div");
  root.className = "faithful-layout widget-expands";
  Object.assign(root.style, { display: "flex", flexDirection: "column", width: "100%", height: "100%", minWidth: "0",
                              minHeight: `${MIN_CANVAS + CHROME}px`, boxSizing: "border-box", overflow: "hidden" });
  root.append(toolbar.element, canvas, phrase.element, json.element);
  const widget = node.addDOMWidget("layout_canvas", "faithful_layout", root, {
    serialize: false, hideOnZoom: false,
    getMinHeight: () => MIN_CANVAS + CHROME + (json.element.open ? JSON_OPEN : 0),
  });
  widget.serialize = false;
  hideWidget(textWidget);
  for (const w of node.widgets) {
    if (w.options && TEXT_MAX[w.name] && !w.options.getMaxHeight) w.options.getMaxHeight = () => TEXT_MAX[w.name];
  }

  function follow(text) {  // the saved value changed from outside (workflow load, undo, API): show it
    if (text === state.text) return;
    const fresh = createState(text);
    state.layout = fresh.layout; state.text = text; state.selected = -1; state.drag = null;
    ctl.refresh();
  }
  chain(textWidget, "callback", (v) => follow(typeof v === "string" ? v : textWidget.value));
  chain(node, "onConfigure", () => follow(textWidget.value));

  const promptLinked = () => node.inputs?.some((i) => i.name === "prompt" && i.link != null);
  function readPrompt(v) {
    state.prompt = promptLinked() ? null : String(typeof v === "string" ? v : promptWidget?.value ?? "");
    phrase.refresh({ keepEditor: true }); ctl.redraw();
  }
  if (promptWidget) chain(promptWidget, "callback", (v) => readPrompt(v));

  function readLatent() {  // the aspect of the latent this node's model is sampled on, when the graph says it
    const found = connectedLatent(node);
    const next = found ? { width: found.width, height: found.height } : null;
    if (found && found.source !== latentSource) {
      latentSource = found.source;
      cleanups.push(watchWidgets(found.widgets, readLatent));
    }
    const same = JSON.stringify(next) === JSON.stringify(state.latent);
    state.latent = next;
    if (!same) ctl.redraw();
  }
  chain(node, "onConnectionsChange", () => { readLatent(); readPrompt(); });
  canvas.addEventListener("pointerenter", readLatent);
  cleanups.push(() => canvas.removeEventListener("pointerenter", readLatent));

  cleanups.push(installInput(ctl));
  let grown = false;
  const observer = new ResizeObserver(() => {
    if (!grown) {  // Vue nodes (1.3x): give the drawing row more of the free height than the prompt box
      const row = root.closest(".lg-node-widget");
      if (row) { row.style.flexGrow = "4"; grown = true; }
    }
    ctl.redraw();
  });
  observer.observe(canvas);
  cleanups.push(() => observer.disconnect());
  chain(node, "onRemoved", () => { while (cleanups.length) cleanups.pop()(); });
  chain(node, "onAdded", () => { readLatent(); readPrompt(); });

  // A test and power-user hook: the layout as an object, and the aspect drawn on.
  node.faithfulLayout = () => JSON.parse(JSON.stringify(state.layout));
  node.faithfulLayoutAspect = () => aspect(state);
  node.faithfulLayoutImageRect = () => {  // the drawn image in the page's client pixels (the canvas may be zoomed)
    const r = canvas.getBoundingClientRect(), a = ctl.area(), s = r.width / (canvas.clientWidth || r.width);
    return { x: r.left + a.x * s, y: r.top + a.y * s, w: a.w * s, h: a.h * s, canvasHeight: r.height };
  };
  readPrompt();
  ctl.refresh();
}

app.registerExtension({
  name: "faithful.layoutRegions",
  nodeCreated(node) {
    if (node.comfyClass === NODE || node.type === NODE) attach(node);
  },
});
