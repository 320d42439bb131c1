"""Seeing what the model attends to: record cross-attention maps of chosen words during sampling, and render
them over the decoded image (Attend-and-Excite's explainability figure, inside the graph).

Recording keeps running sums only (no autograd graph, float32, only the chosen words' token columns), for the
conditional rows of the sampler's own forwards, at the layers of one resolution (latent size / factor), during
a step range given as fractions of the sampler steps. It reads attention; it never changes it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .attention import attention_probs, layer_geometry


class AttentionRecorder:
    """What to record; ``bind(run)`` starts a fresh recording for that sampling run and ``result`` holds it:
    {"maps": (B, K, h, w) mean map per word, "words": [...], "steps": n recorded steps}."""

    def __init__(self, words: list[str], token_groups: list[list[int]], factor: int = 4, start: float = 0.0,
                 end: float = 1.0):
        if not words:
            raise ValueError("Record Attention: no words to record")
        self.words = list(words)
        self.token_groups = [list(g) for g in token_groups]
        self.factor = int(factor)
        self.start, self.end = float(start), float(end)
        self.result = None

    def bind(self, run):
        self.result = None
        return _Recording(self, run)


class _Recording:
    def __init__(self, rec: AttentionRecorder, run):
        self.rec, self.run = rec, run
        self.sum = None
        self.layers = 0
        self.steps: set[int] = set()

    def __call__(self, q, k, extra_options):
        cou = extra_options.get("cond_or_uncond") or []
        shape = extra_options.get("original_shape")
        sigma = extra_options.get("sigmas")
        if 0 not in cou or shape is None or sigma is None:
            return
        i = self.run.step_index(sigma)
        n = max(1, self.run.n_steps)
        if i is None or not (self.rec.start <= i / n < self.rec.end or (i == n - 1 and self.rec.end >= 1.0)):
            return
        geo = layer_geometry(q.shape[1], tuple(shape[-2:]))
        if geo is None or geo[0] != self.rec.factor:
            return
        _, h, w = geo
        per = q.shape[0] // len(cou)
        rows = torch.cat([torch.arange(c * per, (c + 1) * per) for c, u in enumerate(cou) if u == 0]).to(q.device)
        with torch.no_grad():
            probs = attention_probs(q[rows].detach(), k[rows].detach(), extra_options["n_heads"])  # (B', N, T)
            cols = torch.stack([probs[..., g].mean(-1) for g in self.rec.token_groups], 1)  # (B', K, N)
            maps = cols.reshape(cols.shape[0], cols.shape[1], h, w).float().cpu()
        if len(rows) != per:  # several positive conds batched: average them per sample
            maps = maps.reshape(-1, per, *maps.shape[1:]).mean(0)
        self.sum = maps if self.sum is None else self.sum + maps
        self.layers += 1
        self.steps.add(i)
        self.rec.result = {"maps": self.sum / self.layers, "words": self.rec.words, "steps": len(self.steps)}


# -- rendering ------------------------------------------------------------------------------------------------

def colormap(x: np.ndarray) -> np.ndarray:
    """A jet-like colour ramp: values in [0, 1] (H, W) -> RGB (H, W, 3) in [0, 1]."""
    x = np.clip(x, 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.concatenate([r, g, b], -1)


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """image (H, W, 3) in [0, 1], map (h, w) -> the map normalised to [0, 1], upsampled, blended over the image."""
    H, W = image.shape[:2]
    m = torch.from_numpy(np.ascontiguousarray(amap, dtype=np.float32))[None, None]
    m = F.interpolate(m, size=(H, W), mode="bilinear", align_corners=False)[0, 0].numpy()
    m = (m - m.min()) / max(1e-8, float(m.max() - m.min()))
    return (1 - alpha) * image + alpha * colormap(m)


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    im = Image.fromarray((np.clip(tile, 0, 1) * 255).astype(np.uint8))
    bar = 18
    out = Image.new("RGB", (im.width, im.height + bar), (20, 20, 20))
    out.paste(im, (0, bar))
    ImageDraw.Draw(out).text((4, 3), text, fill=(240, 240, 240), font=ImageFont.load_default())
    return np.asarray(out).astype(np.float32) / 255.0


def render_grid(images: np.ndarray, maps: np.ndarray, words: list[str], label: str = "") -> np.ndarray:
    """images (B, H, W, 3), maps (B, K, h, w) -> one grid (B*(H+18), (K+1)*W, 3): per row the image, then one
    overlay per word, each captioned."""
    rows = []
    for b in range(images.shape[0]):
        m = maps[min(b, maps.shape[0] - 1)]
        tiles = [_caption(images[b], label or "image")]
        tiles += [_caption(overlay(images[b], m[j]), words[j]) for j in range(len(words))]
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def render_comparison(grids: list[np.ndarray]) -> np.ndarray:
    """Stack grids of equal width (e.g. guided over unguided); narrower ones are padded."""
    w = max(g.shape[1] for g in grids)
    padded = [np.pad(g, ((0, 0), (0, w - g.shape[1]), (0, 0))) for g in grids]
    sep = np.full((6, w, 3), 0.5, dtype=np.float32)
    out = []
    for i, g in enumerate(padded):
        if i:
            out.append(sep)
        out.append(g)
    return np.concatenate(out, 0)
