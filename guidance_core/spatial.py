"""InfSplign (arXiv 2512.17851): centroids, spatial variance and the compound spatial loss on attention maps.

Maps are non-negative (B, h, w) per object; coordinates are normalised, x, y in linspace(0, 1) with y growing
downward (image convention). For an object map a:

    centroid  c = (sum a*x / sum a, sum a*y / sum a)
    variance  v = sum a*((x - c_x)^2 + (y - c_y)^2) / sum a

Per decoder layer, for object A (first) and B (second) of a relation with signed gap delta (left of:
x_B - x_A; right of: x_A - x_B; above: y_B - y_A; below: y_A - y_B; next to: |x_A - x_B|):

    L_layer = w_spatial * GELU(alpha * (margin - delta)) + w_group * E_group
    E_top (16x16 decoder layers, presence) = v_A + v_B;   E_mid (32x32 layers, balance) = |v_A - v_B|

and the step loss is the mean over layers (summed over relations). Defaults: the paper's final sweep
(alpha 1.5, margin 0.25, w_spatial 0.5, w_presence = w_balance = 1); the code's get_config defaults were
alpha 0.75, w_spatial 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .relations import ALIASES, RELATIONS, canonical_relation  # noqa: F401  (re-exported)

# The one relation vocabulary (relations.py): RELATION_ALIASES are its phrases plus the relation names.
RELATION_ALIASES = ALIASES

EPS = 1e-8


def coordinate_grids(h: int, w: int, device=None, dtype=torch.float32):
    """x (h, w) and y (h, w) in [0, 1]; y grows downward."""
    ys = torch.linspace(0, 1, h, device=device, dtype=dtype)
    xs = torch.linspace(0, 1, w, device=device, dtype=dtype)
    return xs[None, :].expand(h, w), ys[:, None].expand(h, w)


def centroid(maps: torch.Tensor) -> torch.Tensor:
    """(B, h, w) -> (B, 2) attention-weighted (c_x, c_y), in float32."""
    a = maps.float()
    x, y = coordinate_grids(a.shape[-2], a.shape[-1], a.device)
    s = a.sum((-2, -1)).clamp_min(EPS)
    return torch.stack([(a * x).sum((-2, -1)) / s, (a * y).sum((-2, -1)) / s], -1)


def spatial_variance(maps: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """(B, h, w) -> (B,) sum a((x - c_x)^2 + (y - c_y)^2) / sum a."""
    a = maps.float()
    if c is None:
        c = centroid(a)
    x, y = coordinate_grids(a.shape[-2], a.shape[-1], a.device)
    d2 = (x - c[:, 0, None, None]) ** 2 + (y - c[:, 1, None, None]) ** 2
    return (a * d2).sum((-2, -1)) / a.sum((-2, -1)).clamp_min(EPS)


def object_map(attn: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """(B, h, w, T) -> (B, h, w): the mean of the object's token columns (every piece of every word)."""
    return attn[..., list(positions)].float().mean(-1)


def resize_maps(maps: torch.Tensor, size: int = 64) -> torch.Tensor:
    """(N, h, w) -> (N, size, size), bilinear with antialiasing (the reference resizes every layer to 64x64)."""
    if maps.shape[-2:] == (size, size):
        return maps
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[:, 0]


def relation_delta(ca: torch.Tensor, cb: torch.Tensor, relation: str) -> torch.Tensor:
    """Signed gap (B,) that is positive when the relation holds; ca, cb (B, 2)."""
    r = canonical_relation(relation)
    if r == "left_of":
        return cb[:, 0] - ca[:, 0]
    if r == "right_of":
        return ca[:, 0] - cb[:, 0]
    if r == "above":
        return cb[:, 1] - ca[:, 1]
    if r == "below":
        return ca[:, 1] - cb[:, 1]
    return (ca[:, 0] - cb[:, 0]).abs()


def infsplign_layer_loss(maps_a: torch.Tensor, maps_b: torch.Tensor, relation: str, alpha: float = 1.5,
                         margin: float = 0.25, w_spatial: float = 0.5, w_presence: float = 1.0,
                         w_balance: float = 1.0, group: str = "top"):
    """One layer's loss for one relation: maps (B, h, w) -> (B,), and the terms."""
    ca, cb = centroid(maps_a), centroid(maps_b)
    va, vb = spatial_variance(maps_a, ca), spatial_variance(maps_b, cb)
    delta = relation_delta(ca, cb, relation)
    spatial = F.gelu(alpha * (margin - delta))
    if group == "top":
        energy, w = va + vb, w_presence
    elif group == "mid":
        energy, w = (va - vb).abs(), w_balance
    else:
        raise ValueError(f"unknown layer group '{group}' (top or mid)")
    loss = w_spatial * spatial + w * energy
    return loss, {"spatial": spatial, "energy": energy, "delta": delta, "centroid_a": ca, "centroid_b": cb}


def infsplign_loss(layer_maps, relations, alpha: float = 1.5, margin: float = 0.25, w_spatial: float = 0.5,
                   w_presence: float = 1.0, w_balance: float = 1.0):
    """Mean over layers, summed over relations: layer_maps [(attn (B, h, w, T), group)], relations
    [(positions A, relation, positions B)] -> ((B,), terms of the last layer)."""
    if not layer_maps:
        raise ValueError("no decoder attention maps for the spatial loss")
    total = None
    terms = {}
    for attn, group in layer_maps:
        layer = None
        for pa, rel, pb in relations:
            l, terms = infsplign_layer_loss(object_map(attn, pa), object_map(attn, pb), rel, alpha, margin,
                                            w_spatial, w_presence, w_balance, group)
            layer = l if layer is None else layer + l
        total = layer if total is None else total + layer
    return total / len(layer_maps), terms
