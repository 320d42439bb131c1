// Faithful Layout Regions widget: the size of the latent this node's model is sampled on, when the graph says
// it (MODEL or CONDITIONING -> a sampler whose latent comes straight from a node with width and height widgets,
// such as Empty Latent Image). Regions are stored as fractions, so the widget only shows that aspect; the
// backend lays the fractions onto whatever latent the sampler gets.
const LATENT_INPUTS = ["latent_image", "latent", "samples"];
const MAX_SIDE = 16384;

function link(graph, id) {
  if (id == null || !graph) return null;
  return graph.getLink?.(id) ?? graph.links?.get?.(id) ?? graph.links?.[id] ?? null;
}

// {width, height, source} of the latent fed to a sampler that uses this node's outputs, or null.
export function connectedLatent(node) {
  const graph = node.graph;
  if (!graph) return null;
  for (const out of node.outputs || []) {
    for (const id of out.links || []) {
      const target = graph.getNodeById(link(graph, id)?.target_id);
      const input = target?.inputs?.find((i) => LATENT_INPUTS.includes(i.name) && i.link != null);
      const source = input && graph.getNodeById(link(graph, input.link)?.origin_id);
      const w = source?.widgets?.find((x) => x.name === "width"), h = source?.widgets?.find((x) => x.name === "height");
      const width = Number(w?.value), height = Number(h?.value);
      if (width > 0 && height > 0 && width <= MAX_SIDE && height <= MAX_SIDE) return { width, height, source, widgets: [w, h] };
    }
  }
  return null;
}

// Call onChange when the latent's width or height widget changes; returns the unsubscribe function. The
// widgets' callbacks are chained (never replaced) and our part goes quiet once unsubscribed.
export function watchWidgets(widgets, onChange) {
  let live = true;
  for (const w of widgets) {
    const prev = w.callback;
    w.callback = function (...args) {
      const r = prev?.apply(this, args);
      if (live) onChange();
      return r;
    };
  }
  return () => { live = false; };
}
