// Faithful Layout Regions widget: the layout model (no DOM). DenseDiffusion (Kim et al., ICCV 2023) modulates
// attention inside regions given as a layout: {"width", "height", "regions": [region, ...]} where a region is
// a box {"x", "y", "w", "h"} (fractions of the image, 0..1) and/or painted strokes (layout_paint.js), plus the
// "phrase" from the prompt whose words attend inside it. The backend (nodes/layout.py) reads the same JSON.

export const NODE = "FaithfulLayoutRegions";
export const COLORS = ["#ff4d6d", "#4cd964", "#5b8cff", "#ff9f40", "#c77dff", "#42d4f4", "#f062e6", "#c8f04b"];
export const SIZE = { min: 64, max: 8192, fallback: 512 };  // width / height of a layout, px (bounded)
export const MAX_REGIONS = 32;
export const MIN_BOX = 0.02;  // the smallest box side kept, as a fraction of the image

export const clamp01 = (v) => Math.max(0, Math.min(1, v));
export const round3 = (v) => Math.round(v * 1000) / 1000;
const side = (v) => (Number.isFinite(v) ? Math.max(SIZE.min, Math.min(SIZE.max, Math.round(v))) : SIZE.fallback);

// The layout in `text`, or null when it is not valid JSON (the widget then keeps its last good layout).
export function parseLayout(text) {
  try {
    const v = JSON.parse(text || "{}");
    if (!v || typeof v !== "object") return null;
    const regions = Array.isArray(v.regions) ? v.regions.filter((g) => g && typeof g === "object") : [];
    return { width: side(v.width), height: side(v.height), regions: regions.slice(0, MAX_REGIONS) };
  } catch (e) {
    return null;
  }
}

export const emptyLayout = () => ({ width: SIZE.fallback, height: SIZE.fallback, regions: [] });

// Words as CLIP sees them for matching: lower case, runs of letters/digits (punctuation and weights split off).
export function words(text) { return (String(text || "").toLowerCase().match(/[\p{L}\p{N}']+/gu) || []); }

// Does `phrase` occur word for word in `prompt`? (The backend's rule, nodes/layout.py: toks.locate.)
export function phraseInPrompt(phrase, prompt) {
  const p = words(phrase), q = words(prompt);
  if (!p.length) return false;
  outer: for (let i = 0; i + p.length <= q.length; i++) {
    for (let j = 0; j < p.length; j++) if (q[i + j] !== p[j]) continue outer;
    return true;
  }
  return false;
}

// What is wrong with region g's phrase for this prompt: "" when fine. prompt === null: the prompt is not known
// here (a linked input), so only an empty phrase is flagged.
export function phraseProblem(g, prompt) {
  const phrase = (g.phrase || "").trim();
  if (!phrase) return "no phrase yet: type words from the prompt";
  if (prompt !== null && !phraseInPrompt(phrase, prompt)) return `"${phrase}" is not in the prompt`;
  return "";
}

// The widget's state: the layout, the selection, the current gesture and the input mode.
export function createState(text) {
  return { layout: parseLayout(text) || emptyLayout(), text, selected: -1, drag: null, mode: "box",
           brush: 5, hover: null, prompt: null, latent: null };
}

// Width / height of what the artist draws on: the connected latent's when known, else the layout's own.
export function aspect(state) {
  const s = state.latent || state.layout;
  return s.width / s.height;
}

export function roundBox(g) {
  for (const k of ["x", "y", "w", "h"]) if (Number.isFinite(g[k])) g[k] = round3(g[k]);
}
