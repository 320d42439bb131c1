"""Seeing what the model attends to: record cross-attention maps of chosen words during sampling, and render
them over the decoded image (Attend-and-Excite's explainability figure, inside the graph).

Recording keeps running sums only (no autograd graph, float32, only the chosen words' token columns), for the
conditional rows of the sampler's own forwards, at the layers of one resolution (latent size / factor) or at
every layer resized to the latent size (factor "all"), during a step range given as fractions of the sampler
steps. It reads attention; it never changes it.

Pure torch / numpy / PIL: no ComfyUI import. The sampling run is seen through ``bind(run)``, where ``run`` has
``sample_sigmas``, ``n_steps``, ``latent_shape`` and ``step_index(sigma)``.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .attention import attention_probs, layer_geometry

ALL = "all"
CAPTION = 18  # pixel height of the caption bar above every tile


def step_in_range(i: int, n: int, start: float, end: float) -> bool:
    """Whether step ``i`` (0-based) of ``n`` lies in [start, end) as fractions of the steps: step i sits at i / n,
    so (0, 0.5) of 50 steps is steps 0..24 and (0, 1) is every step."""
    return start <= i / max(1, n) < end


class AttentionRecorder:
    """What to record, and the last run's recording.

    ``bind(run)`` starts a fresh recording for that sampling run (the RunState calls it) and returns the
    observer the attention patch calls as ``ob(q, k, extra_options, score_fn)`` (score_fn: an active
    modulation of the scores, e.g. Layout Regions, so the recording shows what the model attended to); when the
    run ends, ``finish(key)`` files its result under the run's key. ``result_for(key)`` is then None (nothing
    seen) or {"maps": (B, K, h, w) float32 CPU mean map per word, "words": [...], "steps": recorded steps,
    "layers": recorded attention calls, "factor": factor}; ``result`` is the newest run's.

    ``factor`` is latent size / map size (an int, 4 = the 16x16 maps at 512 px) or "all": every cross-attention
    layer, each map resized (bilinear) to the latent size before averaging.
    """

    def __init__(self, words: list[str], token_groups: list[list[int]], factor: int | str = 4, start: float = 0.0,
                 end: float = 1.0):
        if not words:
            raise ValueError("Record Attention: no words to record")
        if len(words) != len(token_groups) or any(not g for g in token_groups):
            raise ValueError("Record Attention: every word needs at least one context position")
        if factor != ALL:
            factor = int(factor)
            if factor < 1:
                raise ValueError(f"Record Attention: the attention factor must be 1 or more, or 'all' (got {factor})")
        start, end = float(start), float(end)
        if not (0.0 <= start < end <= 1.0):
            raise ValueError(f"Record Attention: need 0 <= start < end <= 1 (got start {start}, end {end})")
        self.words = list(words)
        self.token_groups = [[int(p) for p in g] for g in token_groups]
        self.factor = factor
        self.start, self.end = start, end
        # Finished runs' recordings, keyed by the run (its output latent's key), newest last. A model shared by
        # two samplers records each run apart, so a preview shows the run it is given.
        self.runs: "OrderedDict[str, dict]" = OrderedDict()

    MAX_RUNS = 16

    def bind(self, run) -> "_Recording":
        return _Recording(self, run)

    def store(self, key: str, result: dict | None) -> None:
        if result is None:
            return
        self.runs.pop(key, None)
        self.runs[key] = result
        while len(self.runs) > self.MAX_RUNS:
            self.runs.popitem(last=False)

    def result_for(self, key: str | None = None) -> dict | None:
        """The recording of the run whose output has ``key``, or the newest one when ``key`` is None."""
        if key is None:
            return next(reversed(self.runs.values())) if self.runs else None
        return self.runs.get(key)

    @property
    def result(self) -> dict | None:
        return self.result_for(None)


class _Recording:
    """The observer of one sampling run: its own running sums, filed with the recorder when the run ends."""

    def __init__(self, rec: AttentionRecorder, run):
        self.rec, self.run = rec, run
        shape = getattr(run, "latent_shape", None)
        self.latent_hw = tuple(shape[-2:]) if shape else None
        self._sum: torch.Tensor | None = None
        self._layers = 0
        self._steps: set[int] = set()

    def _add(self, maps: torch.Tensor, step: int):
        if self._sum is None or self._sum.shape != maps.shape:
            self._sum, self._layers, self._steps = torch.zeros_like(maps), 0, set()
        self._sum += maps
        self._layers += 1
        self._steps.add(step)

    @property
    def result(self) -> dict | None:
        """None (nothing seen) or {"maps": (B, K, h, w) float32 CPU mean map per word, "words", "steps",
        "layers", "factor"}."""
        if self._sum is None or self._layers == 0:
            return None
        rec = self.rec
        return {"maps": (self._sum / self._layers).float().cpu(), "words": list(rec.words),
                "steps": len(self._steps), "layers": self._layers, "factor": rec.factor}

    def finish(self, key: str) -> None:
        self.rec.store(key, self.result)

    def __call__(self, q, k, extra_options, score_fn=None):
        rec = self.rec
        cou = list(extra_options.get("cond_or_uncond") or [])
        shape = extra_options.get("original_shape")
        sigma = extra_options.get("sigmas")
        if 0 not in cou or shape is None or sigma is None or q.shape[0] % len(cou):
            return
        hw = tuple(int(s) for s in shape[-2:])
        if self.latent_hw is not None and hw != self.latent_hw:
            return  # an area-conditioned crop: not a full-image map
        i = self.run.step_index(sigma)
        if i is None or not step_in_range(i, self.run.n_steps, rec.start, rec.end):
            return
        geo = layer_geometry(q.shape[1], hw)
        if geo is None or (rec.factor != ALL and geo[0] != rec.factor):
            return
        _, h, w = geo
        t = k.shape[1]
        top = max(p for g in rec.token_groups for p in g)
        if top >= t:
            raise ValueError(f"Record Attention: a recorded word sits at context position {top}, but the sampler's "
                             f"conditioning has only {t} tokens; Record Attention's prompt must be the sampler's "
                             "positive prompt")
        per = q.shape[0] // len(cou)
        rows = torch.cat([torch.arange(c * per, (c + 1) * per) for c, u in enumerate(cou) if u == 0]).to(q.device)
        with torch.no_grad():
            probs = attention_probs(q.detach(), k.detach(), int(extra_options["n_heads"]), rows=rows,
                                    score_fn=score_fn)  # (B', N, T)
            cols = torch.stack([probs[..., g].mean(-1) for g in rec.token_groups], 1)  # (B', K, N)
            del probs
            maps = cols.reshape(cols.shape[0], cols.shape[1], h, w).float()
            if rec.factor == ALL and (h, w) != hw:
                maps = F.interpolate(maps, size=hw, mode="bilinear", align_corners=False)
            if maps.shape[0] != per:  # several positive conds batched: average them per sample
                maps = maps.reshape(-1, per, *maps.shape[1:]).mean(0)
            self._add(maps, i)


# -- rendering ------------------------------------------------------------------------------------------------

def colormap(x: np.ndarray) -> np.ndarray:
    """A jet-like colour ramp: values in [0, 1] (H, W) -> RGB (H, W, 3) in [0, 1] (blue, cyan, yellow, red)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0, 1)[..., None]
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.concatenate([r, g, b], -1)


def normalize(amap: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] on its own (min -> 0, max -> 1); a flat map becomes all zeros."""
    m = np.asarray(amap, dtype=np.float32)
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(m)


def upsample(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) -> (H, W), bilinear."""
    m = torch.from_numpy(np.ascontiguousarray(amap, dtype=np.float32))[None, None]
    return F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """image (H, W, 3) in [0, 1], map (h, w) -> the map normalised on its own, upsampled to the image, coloured
    and alpha-blended over the image."""
    H, W = image.shape[:2]
    m = normalize(upsample(amap, (H, W)))
    return ((1 - alpha) * image + alpha * colormap(m)).astype(np.float32)


def caption(tile: np.ndarray, text: str) -> np.ndarray:
    """A tile (H, W, 3) in [0, 1] with a dark bar of CAPTION pixels on top holding ``text``."""
    im = Image.fromarray((np.clip(tile, 0, 1) * 255).round().astype(np.uint8))
    out = Image.new("RGB", (im.width, im.height + CAPTION), (20, 20, 20))
    out.paste(im, (0, CAPTION))
    ImageDraw.Draw(out).text((4, 3), text, fill=(240, 240, 240), font=ImageFont.load_default())
    return np.asarray(out).astype(np.float32) / 255.0


def render_grid(images: np.ndarray, maps: np.ndarray, words: list[str], label: str = "") -> np.ndarray:
    """images (B, H, W, 3) in [0, 1], maps (B or 1, K, h, w) -> one grid (B*(H+CAPTION), (K+1)*W, 3).

    One row per image: the plain image (captioned with ``label``, or "image", and the row number when B > 1),
    then one overlay per word, captioned with the word.
    """
    images = np.asarray(images, dtype=np.float32)
    maps = np.asarray(maps, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images (B, H, W, 3), got {tuple(images.shape)}")
    if maps.ndim != 4 or maps.shape[1] != len(words):
        raise ValueError(f"expected maps (B, {len(words)}, h, w), got {tuple(maps.shape)}")
    if maps.shape[0] not in (1, images.shape[0]):
        raise ValueError(f"{images.shape[0]} images but maps for {maps.shape[0]}: the images must come from the "
                         "sampler run that was recorded")
    B = images.shape[0]
    rows = []
    for b in range(B):
        m = maps[b if maps.shape[0] > 1 else 0]
        name = label or "image"
        if B > 1:
            name = f"{name} #{b + 1}"
        tiles = [caption(images[b], name)]
        tiles += [caption(overlay(images[b], m[j]), words[j]) for j in range(len(words))]
        rows.append(np.concatenate(tiles, 1))
    return np.concatenate(rows, 0)


def render_comparison(grids: list[np.ndarray], gap: int = 6) -> np.ndarray:
    """Stack grids (e.g. guided above unguided) with a grey separator; narrower ones are padded on the right."""
    w = max(g.shape[1] for g in grids)
    out = []
    for i, g in enumerate(grids):
        if i:
            out.append(np.full((gap, w, 3), 0.5, dtype=np.float32))
        out.append(np.pad(g, ((0, 0), (0, w - g.shape[1]), (0, 0))).astype(np.float32))
    return np.concatenate(out, 0)


def render_runs(runs: list[tuple[str, np.ndarray, np.ndarray, list[str]]]) -> np.ndarray:
    """Two (or more) runs in one picture: each (label, images, maps, words) becomes a grid whose rows are
    captioned with its label ("guided", "unguided"), stacked one above the other."""
    return render_comparison([render_grid(images, maps, words, label) for label, images, maps, words in runs])
