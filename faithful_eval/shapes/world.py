"""The shapes world: procedurally drawn scenes whose truth is known exactly.

A scene holds 1-3 objects; each object is a (colour, shape, size) drawn filled at a known centre on a plain grey
background. Every scene has a caption from natural templates and a layout (each object's box and phrase), so an
evaluator can check from the pixels alone whether a picture says what its caption says.

Image format (what the shapes model's latent *is*, no VAE): a float32 array (4, S, S), S = ``SIZE`` = 32:
  channels 0-2  RGB scaled to [-1, 1]  (background grey 0.5 -> 0.0),
  channel 3     object occupancy: +1 inside any object, -1 on the background.
``to_rgb`` maps channels 0-2 back to [0, 1].

Everything is seeded: ``sample_scene(rng)`` with ``rng = numpy.random.default_rng(seed)`` gives the same scene,
caption and image on every machine.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIZE = 16
BACKGROUND = (0.5, 0.5, 0.5)
PALETTE = {  # well separated: every pair is at least 1.0 apart in RGB [0, 1], every colour 0.87 from the background
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0), "purple": (1.0, 0.0, 1.0), "cyan": (0.0, 1.0, 1.0),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 5, "big": 7}  # side of the object's bounding box in pixels
RELATIONS = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    size: str
    cx: float  # centre in pixels (x to the right, y down)
    cy: float

    @property
    def box(self):
        """(x0, y0, x1, y1) pixel box, x1/y1 exclusive."""
        h = SIZES[self.size] / 2.0
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    def phrase(self, with_size: bool) -> str:
        return f"{self.size} {self.colour} {self.shape}" if with_size else f"{self.colour} {self.shape}"


@dataclass
class Scene:
    objects: list
    caption: str
    relation: str | None = None  # "left"/"right"/"above"/"below": objects[0] REL objects[1]
    with_size: bool = False
    kind: str = "single"  # single | and | relation | three
    meta: dict = field(default_factory=dict)

    @property
    def phrases(self):
        return [o.phrase(self.with_size) for o in self.objects]

    def layout(self, width: int = 8 * SIZE, height: int = 8 * SIZE) -> dict:
        """The Layout Regions JSON: each object's box (fractions of the image) and its phrase. width/height are
        the nominal pixel size Layout Regions divides by 8 to get the latent (here the 16x16 image itself)."""
        regs = []
        for o, p in zip(self.objects, self.phrases):
            x0, y0, x1, y1 = o.box
            regs.append({"x": x0 / SIZE, "y": y0 / SIZE, "w": (x1 - x0) / SIZE, "h": (y1 - y0) / SIZE, "phrase": p})
        return {"width": width, "height": height, "regions": regs}


def shape_mask(shape: str, cx: float, cy: float, side: float, size: int = SIZE) -> np.ndarray:
    """Boolean (size, size) mask of a filled shape in a side x side box centred at (cx, cy), pixel centres at
    i + 0.5. Fill ratio of the box: square 1.0, circle pi/4, triangle (apex up) 1/2."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    h = side / 2.0
    u, v = (xs - cx) / h, (ys - cy) / h  # box -> [-1, 1]^2
    if shape == "square":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "triangle":  # apex (0, -1), base v = 1
        return (v <= 1) & (np.abs(u) <= (v + 1) / 2)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render(objects, size: int = SIZE) -> np.ndarray:
    """(4, size, size) float32 image of the objects, later objects drawn over earlier ones."""
    rgb = np.empty((3, size, size), np.float32)
    rgb[:] = np.asarray(BACKGROUND, np.float32)[:, None, None]
    occ = np.zeros((size, size), bool)
    for o in objects:
        m = shape_mask(o.shape, o.cx, o.cy, SIZES[o.size], size)
        rgb[:, m] = np.asarray(PALETTE[o.colour], np.float32)[:, None]
        occ |= m
    out = np.empty((4, size, size), np.float32)
    out[:3] = rgb * 2 - 1
    out[3] = np.where(occ, 1.0, -1.0)
    return out


def to_rgb(image) -> np.ndarray:
    """(4|3, H, W) model-space image (any float array or tensor) -> (H, W, 3) RGB in [0, 1]."""
    a = np.asarray(image, dtype=np.float32)[:3]
    return np.clip((a.transpose(1, 2, 0) + 1) / 2, 0, 1)


def _disjoint(a: Obj, b: Obj, gap: float = 1.0) -> bool:
    ax0, ay0, ax1, ay1 = a.box
    bx0, by0, bx1, by1 = b.box
    return ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


def _place(rng, size_name: str, lo=None, hi=None):
    """A centre for an object of ``size_name`` wholly inside the image, on the half-pixel grid so that the
    (odd) box edges fall on pixel edges."""
    h = SIZES[size_name] / 2.0
    lo = lo or (h, h)
    hi = hi or (SIZE - h, SIZE - h)
    return float(rng.integers(int(np.ceil(lo[0] - 0.5)), int(np.floor(hi[0] - 0.5)) + 1)) + 0.5, \
        float(rng.integers(int(np.ceil(lo[1] - 0.5)), int(np.floor(hi[1] - 0.5)) + 1)) + 0.5


def _attributes(rng, n: int):
    """n (colour, shape) pairs with all colours distinct and all shapes distinct when n <= 3."""
    cols = rng.choice(len(COLOURS), size=n, replace=False)
    shps = rng.choice(len(SHAPES), size=n, replace=False)
    sizes = rng.integers(0, 2, size=n)
    if n == 3:  # three big objects rarely fit in the image: at most one is big
        sizes = np.zeros(n, int)
        sizes[rng.integers(0, 3)] = rng.integers(0, 2)
    names = tuple(SIZES)
    return [(COLOURS[c], SHAPES[s], names[z]) for c, s, z in zip(cols, shps, sizes)]


def _article(p: str) -> str:
    return "a " + p


def make_caption(objects, kind: str, relation: str | None, with_size: bool) -> str:
    ps = [_article(o.phrase(with_size)) for o in objects]
    if kind == "single":
        return ps[0]
    if kind == "and":
        return f"{ps[0]} and {ps[1]}"
    if kind == "relation":
        return f"{ps[0]} {RELATIONS[relation]} {ps[1]}"
    return f"{ps[0]}, {ps[1]} and {ps[2]}"


def _relation_pair(rng, attrs, relation: str):
    """Two disjoint objects, object 0 on the ``relation`` side of object 1: centroid gap along the axis >= the
    larger half-size + 2, and at least twice the gap across it."""
    for _ in range(1000):
        (c0, s0, z0), (c1, s1, z1) = attrs
        a = Obj(c0, s0, z0, *_place(rng, z0))
        b = Obj(c1, s1, z1, *_place(rng, z1))
        dx, dy = b.cx - a.cx, b.cy - a.cy  # a REL b
        need = max(SIZES[z0], SIZES[z1]) / 2 + 2
        ok = {"left": dx >= need and abs(dy) <= abs(dx) * 0.5,
              "right": -dx >= need and abs(dy) <= abs(dx) * 0.5,
              "above": dy >= need and abs(dx) <= abs(dy) * 0.5,
              "below": -dy >= need and abs(dx) <= abs(dy) * 0.5}[relation]
        if ok and _disjoint(a, b):
            return [a, b]
    raise RuntimeError("could not place a relation pair")  # pragma: no cover - placement always succeeds


def _free_objects(rng, attrs):
    for _ in range(2000):
        objs = [Obj(c, s, z, *_place(rng, z)) for c, s, z in attrs]
        if all(_disjoint(objs[i], objs[j]) for i in range(len(objs)) for j in range(i + 1, len(objs))):
            return objs
    raise RuntimeError("could not place the objects")  # pragma: no cover


KIND_WEIGHTS = {"single": 0.35, "and": 0.25, "relation": 0.3, "three": 0.1}


def sample_scene(rng, kind: str | None = None, relation: str | None = None, with_size: bool | None = None) -> Scene:
    """One random scene. ``kind`` in single/and/relation/three (random by KIND_WEIGHTS if None)."""
    if kind is None:
        kinds = list(KIND_WEIGHTS)
        kind = kinds[int(rng.choice(len(kinds), p=list(KIND_WEIGHTS.values())))]
    if with_size is None:
        with_size = bool(rng.random() < 0.3)
    n = {"single": 1, "and": 2, "relation": 2, "three": 3}[kind]
    attrs = _attributes(rng, n)
    if kind == "relation":
        relation = relation or list(RELATIONS)[int(rng.integers(0, 4))]
        objs = _relation_pair(rng, attrs, relation)
    else:
        relation = None
        objs = _free_objects(rng, attrs)
    return Scene(objs, make_caption(objs, kind, relation, with_size), relation, with_size, kind)


def scene_from_caption_parts(parts, kind: str, relation: str | None = None, with_size: bool = False, seed: int = 0):
    """A ground-truth scene for given (colour, shape, size) parts (used to build fixed prompt sets)."""
    rng = np.random.default_rng(seed)
    objs = _relation_pair(rng, parts, relation) if kind == "relation" else _free_objects(rng, parts)
    return Scene(objs, make_caption(objs, kind, relation, with_size), relation, with_size, kind)


def all_captions() -> list:
    """Every caption ``sample_scene`` can write (the world's whole language: 8,154 captions), sorted; used to
    tokenize once ahead of training (tools/train_shapes.py --token-table)."""
    from itertools import permutations, product
    out = set()
    for n, kinds in ((1, ("single",)), (2, ("and", "relation")), (3, ("three",))):
        # _attributes: at most one big object among three
        sizes = [z for z in product(SIZES, repeat=n) if n < 3 or z.count("big") <= 1]
        for cols in permutations(COLOURS, n):
            for shps in permutations(SHAPES, n):
                for z in sizes:
                    objs = [Obj(c, s, zz, 0.0, 0.0) for c, s, zz in zip(cols, shps, z)]
                    for kind in kinds:
                        for rel in (RELATIONS if kind == "relation" else (None,)):
                            for with_size in (False, True):
                                out.add(make_caption(objs, kind, rel, with_size))
    return sorted(out)


def batch(rng, n: int, p_empty: float = 0.1):
    """n scenes -> (images (n, 4, S, S) float32, captions list); a caption is "" with probability p_empty
    (classifier-free guidance is trained in)."""
    scenes = [sample_scene(rng) for _ in range(n)]
    imgs = np.stack([render(s.objects) for s in scenes])
    caps = ["" if rng.random() < p_empty else s.caption for s in scenes]
    return imgs, caps, scenes
