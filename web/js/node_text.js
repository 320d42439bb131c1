// Faithful: what a node did, shown on the node. Parse Prompt Bindings shows its parse (its "text" UI output) after
// each run; the guidance nodes show the one-line summary the server sends when the sampler finishes
// ("faithful.summary" events: {node, text}). The text sits in a read-only box that is not saved with the workflow.
import { app } from "../../../scripts/app.js";  // served at /extensions/faithful/js/
import { api } from "../../../scripts/api.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

const SHOWN = { FaithfulParsePromptBindings: "parse", FaithfulExciteTokens: "summary",
                FaithfulBindAttributes: "summary", FaithfulSpatialAlignment: "summary" };

function textBox(node, name) {
  let w = node.widgets?.find((x) => x.name === name);
  if (w) return w;
  w = ComfyWidgets.STRING(node, name, ["STRING", { multiline: true }], app).widget;
  w.serialize = false;
  w.options = Object.assign(w.options || {}, { read_only: true });
  const el = w.inputEl || w.element;
  if (el) { el.readOnly = true; el.placeholder = name === "parse" ? "the parse appears here after a run"
                                                                    : "what guidance did appears here after a run"; }
  return w;
}

function show(node, name, text) {
  const w = textBox(node, name);
  w.value = text ?? "";
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: "faithful.nodeText",
  async beforeRegisterNodeDef(nodeType, def) {
    const name = SHOWN[def.name];
    if (!name) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = created?.apply(this, arguments);
      textBox(this, name);
      return r;
    };
    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (out) {
      executed?.apply(this, arguments);
      if (out?.text?.length) show(this, name, out.text.join("\n"));
    };
  },
  setup() {
    api.addEventListener("faithful.summary", ({ detail }) => {
      const node = app.graph?.getNodeById?.(Number(detail?.node)) ?? app.graph?.getNodeById?.(detail?.node);
      if (node && SHOWN[node.comfyClass || node.type]) show(node, SHOWN[node.comfyClass || node.type], detail.text);
    });
  },
});
