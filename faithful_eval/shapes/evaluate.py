"""Exact evaluator of shapes-world pictures: find each object from the pixels and score a caption against them.

Detection (``detect``), on an (H, W, 3) RGB image in [0, 1] (or the model's (4, H, W) image, see world.py):
  1. every pixel takes the nearest of the palette colours and the background grey (Euclidean RGB); a pixel
     farther than ``OFF_PALETTE`` (0.35) from all of them is "off-palette";
  2. the pixels of each colour split into 4-connected components; one smaller than ``MIN_AREA`` is a speck;
  3. each component gives area, box (x0, y0, x1, y1; x1/y1 exclusive), centroid (mean pixel centre), fill
     = area / box area, top-bottom asymmetry a = (area of lower half - area of upper half) / area, and
       shape = triangle if a > 0.2 (apex up: the base carries the area), else square if fill >= 0.9,
       else circle (a disc fills pi/4 of its box);
       size = big if the longer box side >= (small + big) / 2 pixels, else small.

Scores (``score``), per image, for a caption's objects (colour, shape, size-or-None) and relation:
  presence  every named shape is drawn (any colour): Attend-and-Excite's target (no missing object);
  binding   every named object is drawn with its own colour and shape (so no object took another's colour);
  relation  both objects of "A REL B" are drawn (colour + shape) and A's centroid is on the named side of B's
            (VISOR, Gokhale et al. 2022: left means x_A < x_B, above means y_A < y_B);
            relation_cond is the same given both are drawn (VISOR_cond);
  layout    mean IoU of each named object's box with its region (0 for a missing object), and ``inside``:
            every named object has >= 80% of its pixels in its region;
  guard     "bad" when the picture has a stray object (a drawn object that matches no named one), a speck, or
            more than 5% off-palette pixels: a method that wins by drawing garbage shows it here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import world

OFF_PALETTE = 0.35
MIN_AREA = 6
SPECK_AREA = 2
_NAMES = ("background",) + world.COLOURS
_TABLE = np.array([world.BACKGROUND] + [world.PALETTE[c] for c in world.COLOURS], np.float32)


@dataclass
class Detected:
    colour: str
    shape: str
    size: str
    area: int
    box: tuple  # (x0, y0, x1, y1), x1/y1 exclusive
    centroid: tuple  # (x, y) in pixels
    fill: float
    mask: np.ndarray


def as_rgb(image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        return world.to_rgb(a)
    if a.ndim == 3 and a.shape[0] == 4 and a.shape[-1] == 4:  # ambiguous 4x4x4: model space
        return world.to_rgb(a)
    return np.clip(a[..., :3], 0, 1)


def classify(mask: np.ndarray):
    """(shape, size, fill, box) of one component mask."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    area = len(xs)
    fill = area / float((x1 - x0) * (y1 - y0))
    mid = (y0 + y1) / 2.0
    pc = ys + 0.5
    asym = (np.sum(pc > mid) - np.sum(pc < mid)) / float(area)
    shape = "triangle" if asym > 0.2 else ("square" if fill >= 0.9 else "circle")
    small, big = world.SIZES["small"], world.SIZES["big"]
    size = "big" if max(x1 - x0, y1 - y0) >= (small + big) / 2.0 else "small"
    return shape, size, fill, (int(x0), int(y0), int(x1), int(y1))


def detect(image):
    """(objects, info): the objects found (components >= MIN_AREA pixels) and {"specks", "off_palette"}."""
    rgb = as_rgb(image)
    d = np.linalg.norm(rgb[:, :, None, :] - _TABLE[None, None], axis=-1)  # (H, W, 7)
    lab = d.argmin(-1)
    off = float((d.min(-1) > OFF_PALETTE).mean())
    objs, specks = [], 0
    for ci in range(1, len(_NAMES)):
        comp, n = ndimage.label(lab == ci)
        for k in range(1, n + 1):
            m = comp == k
            area = int(m.sum())
            if area < MIN_AREA:
                specks += area >= SPECK_AREA
                continue
            shape, size, fill, box = classify(m)
            ys, xs = np.nonzero(m)
            objs.append(Detected(_NAMES[ci], shape, size, area, box, (float(xs.mean() + 0.5), float(ys.mean() + 0.5)), fill, m))
    return objs, {"specks": specks, "off_palette": off}


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _find(objs, colour, shape):
    c = [o for o in objs if o.colour == colour and o.shape == shape]
    return max(c, key=lambda o: o.area) if c else None


def side_ok(a: Detected, b: Detected, relation: str) -> bool:
    (ax, ay), (bx, by) = a.centroid, b.centroid
    return {"left": ax < bx, "right": ax > bx, "above": ay < by, "below": ay > by}[relation]


def score(image, named, relation: str | None = None, regions=None) -> dict:
    """Scores of one picture. ``named``: [(colour, shape, size or None), ...]; ``relation``: named[0] REL
    named[1]; ``regions``: [(x0, y0, x1, y1) pixel boxes] per named object (layout)."""
    objs, info = detect(image)
    shapes_drawn = {o.shape for o in objs}
    found = [_find(objs, c, s) for c, s, _z in named]
    out = {"n_detected": len(objs),
           "presence": all(s in shapes_drawn for _c, s, _z in named),
           "binding": all(f is not None for f in found),
           "size_ok": all(f is not None and (z is None or f.size == z) for f, (_c, _s, z) in zip(found, named))}
    if relation is not None:
        both = found[0] is not None and found[1] is not None
        ok = both and side_ok(found[0], found[1], relation)
        out.update(relation=bool(ok), relation_both=bool(both), relation_cond=(bool(ok) if both else None))
    if regions is not None:
        ious, inside = [], []
        for f, r in zip(found, regions):
            if f is None:
                ious.append(0.0)
                inside.append(False)
                continue
            ious.append(_iou(f.box, r))
            ys, xs = np.nonzero(f.mask)
            pc_in = ((xs + 0.5 >= r[0]) & (xs + 0.5 <= r[2]) & (ys + 0.5 >= r[1]) & (ys + 0.5 <= r[3])).mean()
            inside.append(bool(pc_in >= 0.8))
        out.update(layout_iou=float(np.mean(ious)), layout_inside=all(inside))
    matched = {id(f) for f in found if f is not None}
    stray = sum(1 for o in objs if id(o) not in matched)
    out.update(stray=stray, specks=info["specks"], off_palette=info["off_palette"],
               guard_bad=bool(stray > 0 or info["specks"] > 0 or info["off_palette"] > 0.05))
    return out


def score_scene(image, scene: "world.Scene", use_regions: bool = False) -> dict:
    """``score`` against a world Scene's caption (sizes counted only when the caption names them)."""
    named = [(o.colour, o.shape, o.size if scene.with_size else None) for o in scene.objects]
    regions = [o.box for o in scene.objects] if use_regions else None
    return score(image, named, scene.relation, regions)
