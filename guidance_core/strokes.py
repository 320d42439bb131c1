"""Painted regions of a drawn layout: free-hand brush strokes -> a binary mask at the latent size.

A region of the layout widget may carry ``"strokes": [{"r": r, "points": [[x, y], ...]}]`` with x, y fractions
of the image's width and height (0 = left/top, 1 = right/bottom) and r the brush radius as a fraction of the
image WIDTH. Its mask is the union of the discs of radius r centred on every point of each stroke's polyline
(a round brush dragged from point to point; a stroke of one point is one disc).

Rasterised on an (h, w) latent grid: pixel (i, j) is inside when the distance from its centre (j + 0.5, i + 0.5),
in latent pixels, to the nearest point of some segment is at most r * w. The distance to each segment is exact
(projection clamped to the segment), so no gap appears however far apart consecutive points are. Latent pixels
are square, so the brush stays round for any aspect ratio. A brush thinner than about half a latent pixel can
miss every pixel centre; the widget's smallest brush (1% of the width) is 0.64 latent pixels at 512 px.
"""
from __future__ import annotations

import math

import torch

EXAMPLE = '{"r": 0.05, "points": [[0.2, 0.3], [0.4, 0.5]]}'


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_strokes(strokes, where: str = "Layout Regions: region") -> list[tuple[float, list[tuple[float, float]]]]:
    """Check a region's ``strokes`` and return [(r, [(x, y), ...]), ...]; ValueError saying what is wrong and
    how to fix it otherwise. ``where`` names the region in the message."""
    if not isinstance(strokes, (list, tuple)):
        raise ValueError(f"{where}: 'strokes' must be a list of strokes like [{EXAMPLE}], not {_short(strokes)}")
    out = []
    for i, s in enumerate(strokes, 1):
        at = f"{where}, stroke {i}"
        if not isinstance(s, dict):
            raise ValueError(f"{at}: a stroke must be an object like {EXAMPLE}, not {_short(s)}")
        r = s.get("r")
        if not _number(r) or not 0 < r <= 1:
            raise ValueError(f"{at}: 'r' must be the brush radius as a fraction of the image width, a number in "
                             f"(0, 1] such as 0.05; got {_short(r)}")
        pts = s.get("points")
        if not isinstance(pts, (list, tuple)) or not pts:
            raise ValueError(f"{at}: 'points' must be a non-empty list of [x, y] pairs (fractions of the image); "
                             f"got {_short(pts)}. Remove the stroke or add at least one point")
        parsed = []
        for j, p in enumerate(pts, 1):
            if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(_number(v) for v in p)):
                raise ValueError(f"{at}, point {j}: must be [x, y] with two numbers (fractions of the image, 0 = "
                                 f"left/top, 1 = right/bottom); got {_short(p)}")
            if not all(0.0 <= v <= 1.0 for v in p):
                raise ValueError(f"{at}, point {j}: {_short(p)} lies outside the image; x and y are fractions "
                                 "of the image in 0..1, not pixels")
            parsed.append((float(p[0]), float(p[1])))
        out.append((float(r), parsed))
    return out


def segment_distance2(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distance from points c (P, 2) to segments a -> b (S, 2 each): (S, P). A segment with a == b is
    a point."""
    ab = b - a                                              # (S, 2)
    ac = c[None] - a[:, None]                               # (S, P, 2)
    length2 = (ab * ab).sum(-1)                             # (S,)
    t = ((ac * ab[:, None]).sum(-1) / length2.clamp_min(1e-30)[:, None]).clamp(0.0, 1.0)
    d = ac - t[..., None] * ab[:, None]
    return (d * d).sum(-1)


def rasterise_strokes(strokes, h: int, w: int, where: str = "Layout Regions: region", chunk: int = 64) -> torch.Tensor:
    """A region's strokes -> (h, w) float mask, 1 where a pixel centre lies within r of a stroke's polyline."""
    parsed = parse_strokes(strokes, where)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5,
                            torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    centres = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)     # (h*w, 2) as (x, y) in latent pixels
    scale = torch.tensor([float(w), float(h)], dtype=torch.float64)
    hit = torch.zeros(h * w, dtype=torch.bool)
    for r, pts in parsed:
        p = torch.tensor(pts, dtype=torch.float64) * scale
        a, b = (p[:-1], p[1:]) if len(p) > 1 else (p, p)
        limit = (r * w) ** 2 * (1 + 1e-9)  # "at most r", robust to rounding on the boundary
        for i in range(0, len(a), chunk):
            hit |= (segment_distance2(centres, a[i:i + chunk], b[i:i + chunk]) <= limit).any(0)
    return hit.reshape(h, w).float()
