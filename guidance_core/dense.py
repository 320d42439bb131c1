"""DenseDiffusion (Kim et al., ICCV 2023, arXiv 2308.12964): attention modulation by a region layout.

Scores S = Q K^T / sqrt(d) per head, query row i, key j. With R_ij = 1 when i and j belong together (cross:
pixel i lies in the mask of the segment whose phrase contains token j; self: pixels i and j share a segment),
the area factor s_i = 1 - w_size * |segment(i)| / (h*w), and the time factor lambda_t = (t/1000)^5:

    S'_ij = S_ij + R_ij * lambda_t * w * s_i * (max_j S_ij - S_ij) - (1 - R_ij) * lambda_t * w * s_i * (S_ij - min_j S_ij)

then softmax over j, with w = w_c (1.0) for cross- and w_s (0.3) for self-attention, on the conditional rows
only, for the first 30% of the steps. Positive pairs move toward the row maximum and the others toward the row
minimum, so S' stays inside the original row range (the "value-range adaptive" modulation). This is the paper's
formula, not the Omost variant (logit scaling by area and -inf outside the region) other packs ship.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .strokes import rasterise_strokes


def time_decay(t: float | torch.Tensor) -> float | torch.Tensor:
    """lambda_t = (t / 1000)^5 for a model timestep t in [0, 1000)."""
    return (t / 1000.0) ** 5


def masks_for_resolution(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H, W) masks -> (N, h, w) binary float: thresholded at 0.5, then nearest resizing."""
    m = (masks.float() > 0.5).float()
    if m.shape[-2:] != (h, w):
        m = F.interpolate(m[:, None], size=(h, w), mode="nearest")[:, 0]
    return m


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


def area_factor(masks: torch.Tensor, w_size: float = 1.0) -> torch.Tensor:
    """s (h*w,) = 1 - w_size * |segment(i)| / (h*w), with |segment(i)| the row sum of the self-region matrix
    (the number of pixels that share a segment with i; a pixel in two segments counts their union, a pixel in
    none has size 0 and s = 1). Computed without forming the (h*w)^2 matrix."""
    flat = masks.reshape(masks.shape[0], -1)                    # (N, P)
    sizes = (flat.T @ flat).clamp(max=1.0).sum(-1) if flat.shape[1] <= 4096 else _union_rows(flat)
    return 1.0 - w_size * sizes / flat.shape[1]


def _union_rows(flat: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    out = []
    for i in range(0, flat.shape[1], chunk):
        out.append((flat[:, i:i + chunk].T @ flat).clamp(max=1.0).sum(-1))
    return torch.cat(out)


def modulate_scores(S: torch.Tensor, R: torch.Tensor, s: torch.Tensor, lam: float, w: float) -> torch.Tensor:
    """S (..., Nq, Nk) -> S' of the same shape and dtype; R (Nq, Nk) in {0, 1}; s (Nq,).

    Row max/min come from the original S. Computed in float32 and cast back (fp16-safe)."""
    S32 = S.float()
    smax = S32.amax(-1, keepdim=True)
    smin = S32.amin(-1, keepdim=True)
    k = (lam * w) * s.float()[:, None]                      # (Nq, 1)
    Rf = R.float()
    out = S32 + Rf * k * (smax - S32) - (1.0 - Rf) * k * (S32 - smin)
    return out.to(S.dtype)


def validate_regions(masks: torch.Tensor, token_sets: list[list[int]], latent_hw: tuple[int, int] | None = None,
                     n_tokens: int | None = None, names: list[str] | None = None) -> None:
    """Clear errors for layouts the method cannot use. Overlapping regions are allowed: a pixel in two segments
    attends to both segments' words (and its area factor uses the union of the two)."""
    names = names or [f"region {k + 1}" for k in range(len(token_sets))]
    if masks.dim() != 3 or masks.shape[0] != len(token_sets):
        raise ValueError(f"Layout Regions: {len(token_sets)} phrases but {masks.shape[0] if masks.dim() == 3 else '?'} "
                         "masks; give one phrase per region")
    if not len(token_sets):
        raise ValueError("Layout Regions: no regions; draw at least one box or connect a mask")
    for k, m in enumerate(masks):
        if float((m > 0.5).float().sum()) == 0:
            raise ValueError(f"Layout Regions: {names[k]} is empty (its mask has no pixel above 0.5); "
                             "draw a larger box or paint the mask")
    for k, ts in enumerate(token_sets):
        if not ts:
            raise ValueError(f"Layout Regions: {names[k]} has no words in the prompt")
    if n_tokens is not None:
        used = {p for ts in token_sets for p in ts}
        if len(token_sets) > n_tokens or any(p >= n_tokens for p in used):
            raise ValueError(f"Layout Regions: more regions or words ({len(token_sets)} regions) than the prompt's "
                             f"{n_tokens} tokens")
    if latent_hw is not None:
        H, W = masks.shape[-2:]
        h, w = latent_hw
        if abs(H / W - h / w) > 0.05:
            raise ValueError(f"Layout Regions: the masks are {W}x{H} but the image is {w * 8}x{h * 8} (latent {w}x{h}): "
                             "use masks with the image's aspect ratio")


def modulated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, R: torch.Tensor,
                        s: torch.Tensor, lam: float, w: float, chunk: int = 1024) -> torch.Tensor:
    """Attention with DenseDiffusion-modulated scores: q (B, N, H*D), k, v (B, T, H*D), R (N, T), s (N,) ->
    (B, N, H*D). Query rows are processed ``chunk`` at a time so a 4096x4096 self-attention never needs the
    whole score tensor; scores and softmax in float32."""
    from .attention import attend, attention_scores
    out = []
    for i in range(0, q.shape[1], chunk):
        S = attention_scores(q[:, i:i + chunk].float(), k.float(), heads)       # (B, H, n, T)
        P = modulate_scores(S, R[i:i + chunk], s[i:i + chunk], lam, w).softmax(-1)
        out.append(attend(P, v.float(), heads))
    return torch.cat(out, 1).to(q.dtype)


def masks_from_layout(layout: dict, size: tuple[int, int] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Regions of a drawn layout {"width", "height", "regions": [...]} -> (N, H, W) masks at the latent size
    (H = height/8, W = width/8 unless ``size`` is given) and the phrases. A region is a box {"x", "y", "w", "h"
    in 0..1, "phrase"}, or painted {"strokes": [{"r", "points"}], "phrase"} (see strokes.py), or both: then
    its mask is the union of the box and the strokes."""
    W0, H0 = int(layout.get("width", 512)), int(layout.get("height", 512))
    h, w = size or (max(1, round(H0 / 8)), max(1, round(W0 / 8)))
    masks, phrases = [], []
    for n, r in enumerate(layout.get("regions", [])):
        if not isinstance(r, dict):
            raise ValueError(f"Layout Regions: region {n + 1} must be an object with x, y, w, h (a box) or strokes "
                             f"(painted) and a phrase, not {r!r:.60}")
        strokes = r.get("strokes")
        m = torch.zeros(h, w)
        if strokes is None or any(k in r for k in ("x", "y", "w", "h")):
            try:
                x, y, bw, bh = (float(r[k]) for k in ("x", "y", "w", "h"))
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"Layout Regions: region {n + 1} needs numbers x, y, w, h (fractions of the image) "
                                 "or strokes painted with the widget's Paint mode") from None
            x0, y0 = max(0, round(x * w)), max(0, round(y * h))
            x1, y1 = min(w, round((x + bw) * w)), min(h, round((y + bh) * h))
            m[y0:y1, x0:x1] = 1.0
        if strokes is not None:
            m = torch.maximum(m, rasterise_strokes(strokes, h, w, where=f"Layout Regions: region {n + 1}"))
        masks.append(m)
        phrases.append(str(r.get("phrase", "")).strip())
    if not masks:
        return torch.zeros(0, h, w), []
    return torch.stack(masks), phrases
