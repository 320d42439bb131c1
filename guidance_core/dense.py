"""DenseDiffusion (Kim et al., ICCV 2023, arXiv 2308.12964): attention modulation by a region layout.

Segments. The layout's N regions (drawn boxes, painted strokes, MASK inputs) are N segments; the pixels no
region covers form one more segment, the background (the reference always has one: its Gradio app's white
region and its test set's empty first phrase). The background's words are an explicit background phrase if
one is given, else none. Masks are binary, taken at the latent size and resized (nearest) to each attention
resolution (h, w); P = h*w query pixels, T context tokens.

Scores S = Q K^T / sqrt(d) per head, query row i, key j. R_ij = 1 when i and j belong together:
  cross-attention  R (P, T): pixel i lies in the mask of a segment whose phrase contains token j (a token of
                   two segments counts for both; tokens of no segment, such as sot, eot, 'and', have R = 0);
  self-attention   R (P, P): pixels i and j share a segment, R_ij = [sum_n m_n(i) m_n(j) > 0] (background
                   pixels attend to each other).
Area factor, the reference's sum of segment areas (a pixel in two overlapping boxes counts both areas):

    s_i = max(0, 1 - w_size * sum_{n : m_n(i) = 1} |m_n| / P)

The max(0, .) is ours: without it, overlapping large regions give s < 0 and reverse the modulation (positive
pairs pushed toward the row minimum). A large background gets a small s (weak modulation), as in the reference.
Time factor lambda_t = (t/1000)^5, t the model timestep of the step's sigma. Update, then softmax over j:

    S'_ij = S_ij + R_ij * lambda_t * w * s_i * (max_j S_ij - S_ij) - (1 - R_ij) * lambda_t * w * s_i * (S_ij - min_j S_ij)

with w = w_c (1.0) for cross- and w_s (0.3) for self-attention, on the conditional rows only, for the first
30% of the steps. Positive pairs move toward the row maximum and the others toward the row minimum, so S'
stays inside the original row range (the "value-range adaptive" modulation). This is the paper's formula, not
the Omost variant (logit scaling by area and -inf outside the region) other packs ship.

lambda_t follows the sampler's schedule: the reference runs DDIM-50 (t = 981, 961, ..., lambda 0.909 .. 0.169
over its 15 modulated steps). ComfyUI's ddim_uniform scheduler gives exactly those timesteps; other schedulers
give other t for the same step count. Summed over the first 15 of 50 steps with SD1.x's schedule (measured):
normal 1.09x, simple 1.11x, karras 1.24x, exponential 0.99x, beta 1.46x the reference's modulation.

Drawn regions are fractions of the image, so they are laid onto whatever latent the sampler gets; painted
MASK inputs have their own pixels and must have the latent's aspect ratio (checked at run time).
"""
from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F

from .strokes import rasterise_strokes

MAX_REGIONS = 64            # regions in one layout (all Layout Regions nodes on a model together)
MAX_SIDE = 16384            # the layout's width/height in pixels (ComfyUI's largest image side)
MAX_LAYOUT_CHARS = 4_000_000  # the layout JSON text (a painted layout with ~200k stroke points)
NOMINAL_MAX = 256           # the node-time check grid: the layout's latent size, capped to this side


def time_decay(t: float | torch.Tensor) -> float | torch.Tensor:
    """lambda_t = (t / 1000)^5 for a model timestep t in [0, 1000)."""
    return (t / 1000.0) ** 5


def masks_for_resolution(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H, W) masks -> (N, h, w) binary float: thresholded at 0.5, then nearest resizing."""
    m = (masks.float() > 0.5).float()
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m[:, None], size=(h, w), mode="nearest")[:, 0]
    return m


def with_background(masks: torch.Tensor, token_sets: list[list[int]], background_tokens: list[int] = ()):
    """Add the background segment: (N, h, w) binary masks -> (N + 1, h, w) with the pixels no region covers
    as the last mask, and its token set (the background phrase's positions, or none). Unchanged (N segments)
    when the regions cover every pixel."""
    bg = 1.0 - masks.amax(0) if masks.shape[0] else torch.ones(masks.shape[-2:], dtype=masks.dtype)
    if float(bg.sum()) == 0:
        return masks, list(token_sets)
    return torch.cat([masks, bg[None].to(masks.dtype)]), list(token_sets) + [list(background_tokens)]


def cross_region_matrix(masks: torch.Tensor, token_sets: list[list[int]], n_tokens: int) -> torch.Tensor:
    """(N, h, w) masks and each segment's token positions -> R (h*w, T): 1 where token j belongs to a segment
    whose mask covers pixel i. Tokens in no segment (sot, eot, padding, 'and', commas) have R = 0."""
    n, h, w = masks.shape
    tok = torch.zeros(n, n_tokens, dtype=masks.dtype, device=masks.device)
    for k, ts in enumerate(token_sets):
        tok[k, [p for p in ts if p < n_tokens]] = 1.0
    return (masks.reshape(n, h * w).T @ tok).clamp(max=1.0)


def self_region_matrix(masks: torch.Tensor) -> torch.Tensor:
    """(N, h, w) -> (h*w, h*w): 1 where two pixels share a segment."""
    flat = masks.reshape(masks.shape[0], -1)
    return (flat.T @ flat).clamp(max=1.0)


class SelfRegionRows:
    """The self-attention R (P, P) by rows, never formed whole: ``R[i0:i1]`` is (i1 - i0, P). A 128x128 latent
    layer would need a 1 GiB matrix; the modulation only ever reads one chunk of query rows at a time."""

    def __init__(self, masks: torch.Tensor):
        self.flat = masks.reshape(masks.shape[0], -1).float()
        self.shape = (self.flat.shape[1], self.flat.shape[1])

    def __getitem__(self, rows) -> torch.Tensor:
        return (self.flat[:, rows].T @ self.flat).clamp(max=1.0)


def area_factor(masks: torch.Tensor, w_size: float = 1.0, overlap: str = "sum") -> torch.Tensor:
    """s (h*w,) = max(0, 1 - w_size * |segment(i)| / (h*w)) for (N, h, w) binary segment masks.

    overlap="sum" (default, the reference): |segment(i)| = sum of the areas of the segments containing pixel i
    (the row sum of sum_n m_n m_n^T). overlap="union": the number of pixels sharing a segment with i. A pixel
    in no segment has size 0 and s = 1 (the callers add the background segment first, so none is left)."""
    flat = masks.reshape(masks.shape[0], -1).float()            # (N, P)
    if overlap == "sum":
        sizes = flat.T @ flat.sum(-1)
    elif overlap == "union":
        sizes = torch.cat([(flat[:, i:i + 1024].T @ flat).clamp(max=1.0).sum(-1)
                           for i in range(0, flat.shape[1], 1024)])
    else:
        raise ValueError(f"area_factor: overlap must be 'sum' or 'union', not {overlap!r}")
    return (1.0 - w_size * sizes / flat.shape[1]).clamp(min=0.0)


def modulate_scores(S: torch.Tensor, R, s: torch.Tensor, lam: float, w: float) -> torch.Tensor:
    """S (..., Nq, Nk) -> S' of the same shape and dtype; R (Nq, Nk) in {0, 1} (or SelfRegionRows); s (Nq,).

    Row max/min come from the original S. Computed in float32 and cast back (fp16-safe)."""
    S32 = S.float()
    smax = S32.amax(-1, keepdim=True)
    smin = S32.amin(-1, keepdim=True)
    k = (lam * w) * s.float()[:, None]                      # (Nq, 1)
    Rf = (R if torch.is_tensor(R) else R[:]).float()
    out = S32 + Rf * k * (smax - S32) - (1.0 - Rf) * k * (S32 - smin)
    return out.to(S.dtype)


def check_aspect(shape_hw: tuple[int, int], latent_hw: tuple[int, int], what: str = "the masks") -> None:
    """ValueError unless a painted mask of (H, W) pixels has the latent's aspect ratio (within 5%)."""
    H, W = shape_hw
    h, w = latent_hw
    if abs(H / W - h / w) > 0.05 * (h / w):
        raise ValueError(f"Layout Regions: {what} are {W}x{H} but the image is {w * 8}x{h * 8} (latent {w}x{h}): "
                         "use masks with the image's aspect ratio (drawn boxes and painted strokes fit any size)")


def validate_regions(masks: torch.Tensor, token_sets: list[list[int]], latent_hw: tuple[int, int] | None = None,
                     n_tokens: int | None = None, names: list[str] | None = None) -> None:
    """Clear errors for layouts the method cannot use. Overlapping regions are allowed: a pixel in two segments
    attends to both segments' words (and its area factor sums the two areas). Regions may share words."""
    names = names or [f"region {k + 1}" for k in range(len(token_sets))]
    if masks.dim() != 3 or masks.shape[0] != len(token_sets):
        raise ValueError(f"Layout Regions: {len(token_sets)} phrases but {masks.shape[0] if masks.dim() == 3 else '?'} "
                         "masks; give one phrase per region")
    if not len(token_sets):
        raise ValueError("Layout Regions: no regions; draw at least one box or connect a mask")
    if len(token_sets) > MAX_REGIONS:
        raise ValueError(f"Layout Regions: {len(token_sets)} regions, at most {MAX_REGIONS} are allowed (boxes, "
                         "painted regions and masks of all Layout Regions nodes on the model together); use fewer")
    for k, m in enumerate(masks):
        if float((m > 0.5).float().sum()) == 0:
            raise ValueError(f"Layout Regions: {names[k]} is empty (its mask has no pixel above 0.5); "
                             "draw a larger box or paint the mask")
    for k, ts in enumerate(token_sets):
        if not ts:
            raise ValueError(f"Layout Regions: {names[k]} has no words in the prompt")
    if n_tokens is not None:
        for k, ts in enumerate(token_sets):
            if any(p >= n_tokens for p in ts):
                raise ValueError(f"Layout Regions: the words of {names[k]} lie past the prompt's {n_tokens} tokens")
    if latent_hw is not None:
        check_aspect(tuple(masks.shape[-2:]), latent_hw)


def modulated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, R, s: torch.Tensor,
                        lam: float, w: float, chunk: int = 1024) -> torch.Tensor:
    """Attention with DenseDiffusion-modulated scores: q (B, N, H*D), k, v (B, T, H*D), R (N, T) or
    SelfRegionRows, s (N,) -> (B, N, H*D). Query rows are processed ``chunk`` at a time so a 4096x4096
    self-attention never needs the whole score tensor; scores and softmax in float32."""
    from .attention import attend, attention_scores
    out = []
    for i in range(0, q.shape[1], chunk):
        S = attention_scores(q[:, i:i + chunk].float(), k.float(), heads)       # (B, H, n, T)
        P = modulate_scores(S, R[i:i + chunk], s[i:i + chunk], lam, w).softmax(-1)
        out.append(attend(P, v.float(), heads))
    return torch.cat(out, 1).to(q.dtype)


# -- the layout JSON ---------------------------------------------------------------------------------------

LAYOUT_SHAPE = '{"width": W, "height": H, "regions": [{"x": 0, "y": 0, "w": 0.5, "h": 1, "phrase": "a cat"}]}'


def parse_layout(text: str) -> dict:
    """The ``layout`` input's text -> a checked {"width", "height", "regions": [dict, ...], "background"}.
    Every size is bounded: the text length, width and height (pixels, 1..MAX_SIDE: only the drawing canvas's
    aspect; the image size comes from the latent), the number of regions; deep nesting is refused."""
    if len(text or "") > MAX_LAYOUT_CHARS:
        raise ValueError(f"Layout Regions: the layout is {len(text):,} characters, at most {MAX_LAYOUT_CHARS:,}; "
                         "paint fewer or shorter strokes")
    try:
        layout = json.loads(text) if (text or "").strip() else {"regions": []}
    except json.JSONDecodeError as e:
        raise ValueError(f"Layout Regions: the layout is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                         "redraw it or fix the text") from None
    except RecursionError:
        raise ValueError("Layout Regions: the layout JSON is nested too deeply; it must be " + LAYOUT_SHAPE) from None
    if not isinstance(layout, dict):
        raise ValueError("Layout Regions: the layout must be " + LAYOUT_SHAPE)
    regions = layout.get("regions", [])
    if not isinstance(regions, list):
        raise ValueError(f"Layout Regions: the layout's \"regions\" must be a list of regions, not "
                         f"{type(regions).__name__} {_short(regions)}; write it as " + LAYOUT_SHAPE)
    if len(regions) > MAX_REGIONS:
        raise ValueError(f"Layout Regions: the layout has {len(regions)} regions, at most {MAX_REGIONS} are allowed; "
                         "use fewer")
    out = {"regions": regions, "background": layout.get("background") or ""}
    for key in ("width", "height"):
        v = layout.get(key, 512)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 1 <= v <= MAX_SIDE):
            raise ValueError(f"Layout Regions: the layout's \"{key}\" must be a number of pixels from 1 to {MAX_SIDE} "
                             f"(it only sets the drawing canvas's aspect; the image size comes from the latent), "
                             f"not {_short(v)}")
        out[key] = float(v)
    if not isinstance(out["background"], str):
        raise ValueError(f"Layout Regions: the layout's \"background\" must be a phrase (text), not "
                         f"{_short(out['background'])}")
    return out


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def nominal_size(layout: dict) -> tuple[int, int]:
    """The latent (h, w) of the layout's own canvas (width/8 by height/8), the longer side capped at
    NOMINAL_MAX: the grid the node checks regions on before the sampler's latent is known."""
    W0, H0 = float(layout.get("width", 512)), float(layout.get("height", 512))
    h, w = max(1.0, H0 / 8), max(1.0, W0 / 8)
    f = min(1.0, NOMINAL_MAX / max(h, w))
    return max(1, round(h * f)), max(1, round(w * f))


def region_mask(r, h: int, w: int, n: int = 1) -> torch.Tensor:
    """One drawn region -> its (h, w) mask on a latent grid. A box {"x", "y", "w", "h"} in fractions of the
    image covers the latent pixels from round(x*w) to round((x+w)*w) (likewise in y); painted strokes are
    rasterised by strokes.py; a region with both is their union. ``n`` numbers the region in messages."""
    if not isinstance(r, dict):
        raise ValueError(f"Layout Regions: region {n} must be an object with x, y, w, h (a box) or strokes "
                         f"(painted) and a phrase, not {_short(r)}")
    strokes = r.get("strokes")
    m = torch.zeros(h, w)
    if strokes is None or any(k in r for k in ("x", "y", "w", "h")):
        try:
            x, y, bw, bh = (float(r[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ValueError(f"Layout Regions: region {n} needs numbers x, y, w, h (fractions of the image) "
                             "or strokes painted with the widget's Paint mode") from None
        if not all(math.isfinite(v) for v in (x, y, bw, bh)):
            bad = ", ".join(f"{k} = {'NaN' if math.isnan(v) else ('' if v > 0 else '-') + 'Infinity'}"
                            for k, v in zip("xywh", (x, y, bw, bh)) if not math.isfinite(v))
            raise ValueError(f"Layout Regions: region {n} has {bad}; box coordinates must be finite fractions of "
                             "the image (0..1)")
        x0, y0 = max(0, round(x * w)), max(0, round(y * h))
        x1, y1 = min(w, round((x + bw) * w)), min(h, round((y + bh) * h))
        m[y0:y1, x0:x1] = 1.0
    if strokes is not None:
        m = torch.maximum(m, rasterise_strokes(strokes, h, w, where=f"Layout Regions: region {n}"))
    return m


def region_kind(r) -> str:
    return "painted region" if isinstance(r, dict) and r.get("strokes") and "x" not in r else "box"


def masks_from_layout(layout: dict, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Regions of a drawn layout {"width", "height", "regions": [...]} -> (N, h, w) masks and the phrases, at
    ``size`` (a latent (h, w)) or else the layout's nominal size (height/8 by width/8, long side capped at
    NOMINAL_MAX). A region is a box {"x", "y", "w", "h" in 0..1, "phrase"}, or painted {"strokes": [{"r",
    "points"}], "phrase"} (see strokes.py), or both: then its mask is the union of the box and the strokes."""
    if not isinstance(layout.get("regions", []), list):
        raise ValueError("Layout Regions: the layout's \"regions\" must be a list; write it as " + LAYOUT_SHAPE)
    h, w = size or nominal_size(layout)
    regions = layout.get("regions", [])
    masks = [region_mask(r, h, w, n + 1) for n, r in enumerate(regions)]
    phrases = [str(r.get("phrase", "")).strip() for r in regions]
    if not masks:
        return torch.zeros(0, h, w), []
    return torch.stack(masks), phrases
