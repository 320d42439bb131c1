"""Sample the shapes model in-process through ComfyUI's stock sampler, with the pack's nodes called exactly as
the server calls them, and score every picture with the exact evaluator.

Used by the tests (tests/test_shapes*.py), the benchmark (tools/shapes_bench.py) and the gallery.
Host imports stay inside functions (tools/host.bootstrap_host() first).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from faithful_eval.shapes import evaluate as E
from faithful_eval.shapes import world

STEPS, CFG, SAMPLER, SCHEDULER = 20, 4.0, "euler", "normal"
FACTOR = 2  # attention maps at latent/2 = 8x8 (the 16x16 latent's latent/4 is only 4x4)
METHODS = ("plain", "excite", "bind", "spatial", "layout", "chained")
TARGET = {"excite": "presence", "bind": "binding", "spatial": "relation", "layout": "layout_iou",
          "chained": "relation", "plain": "binding"}
# the prompts on which each method's failure shows on this model: v2 draws one or two objects right; it drops
# or mixes up objects only among three, and puts them on the named side about half the time
KIND = {"excite": "three", "bind": "three", "layout": "and", "spatial": "relation", "chained": "relation"}
# each method's main strength on this model (the sweep in docs/shapes.md); the papers' are tuned for SD's 64x64
# latents: A&E scale 20, SynGen step 20, InfSplign weight 1000, DenseDiffusion w_cross 1
DEFAULT_STRENGTH = {"excite": 5.0, "bind": 2.0, "spatial": 300.0, "layout": 4.0}
REL_WORDS = {"left": "left of", "right": "right of", "above": "above", "below": "below"}


def prompt_set(kind: str, n: int, seed: int = 0):
    """n fixed ground-truth scenes of one kind (single | and | relation | three), sizes unnamed."""
    rng = np.random.default_rng([seed, {"single": 1, "and": 2, "relation": 3, "three": 4}[kind]])
    return [world.sample_scene(rng, kind=kind, with_size=False) for _ in range(n)]


def single_prompts():
    """Every colour x shape single-object prompt (18), each as a scene."""
    out = []
    for c in world.COLOURS:
        for s in world.SHAPES:
            objs = [world.Obj(c, s, "big", 8.5, 8.5)]
            out.append(world.Scene(objs, world.make_caption(objs, "single", None, False), None, False, "single"))
    return out


def encode(clip, text: str):
    """What the stock CLIPTextEncode node returns."""
    import nodes
    return nodes.CLIPTextEncode().encode(clip, text)[0]


def _args(out):
    return out.args if hasattr(out, "args") else out


def guided(method: str, model, clip, scene, strength: float | None = None):
    """(model, positive conditioning) for one method applied to a scene's caption; "chained" applies every
    method that fits the caption (relation prompts: all four)."""
    from faithful.nodes.bindings import BindAttributes, ParsePromptBindings
    from faithful.nodes.excite import ExciteTokens
    from faithful.nodes.layout import LayoutRegions
    from faithful.nodes.spatial import SpatialAlignmentLoss
    prompt = scene.caption
    pos = None
    steps = [method] if method != "chained" else (["excite", "bind", "layout"] + (["spatial"] if scene.relation else []))
    for m in steps:
        s = DEFAULT_STRENGTH.get(m, 0.0) if (strength is None or method == "chained") else strength
        if m == "excite":
            subjects = ", ".join(o.shape for o in scene.objects)
            model = _args(ExciteTokens.execute(model, clip, prompt, subjects, scale_factor=s, attention_factor=FACTOR))[0]
        elif m == "bind":
            b = _args(ParsePromptBindings.execute(clip, prompt))[0]
            model = _args(BindAttributes.execute(model, b, step_size=s, attention_factor=FACTOR))[0]
        elif m == "spatial":
            a, b = scene.objects[0].shape, scene.objects[1].shape
            rel = f"{a} {REL_WORDS[scene.relation]} {b}"
            model = _args(SpatialAlignmentLoss.execute(model, clip, prompt, rel, guidance_scale=s))[0]
        elif m == "layout":
            model, pos = _args(LayoutRegions.execute(model, clip, prompt, json.dumps(scene.layout()),
                                                     w_cross=s, w_self=0.3 * s))
        elif m != "plain":
            raise ValueError(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    return model, (pos if pos is not None else encode(clip, prompt))


def sample(model, positive, negative, seed: int, batch: int = 1, steps: int = STEPS, cfg: float = CFG,
           sampler: str = SAMPLER, scheduler: str = SCHEDULER) -> torch.Tensor:
    """(batch, 4, 16, 16) images from the stock sampler (comfy.sample.sample, as KSampler calls it)."""
    import comfy.sample
    lat = torch.zeros(batch, 4, world.SIZE, world.SIZE)
    noise = comfy.sample.prepare_noise(lat, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, lat,
                               denoise=1.0, seed=seed, disable_pbar=True)


def run(model, clip, scenes, method: str = "plain", seeds=(0,), batch: int = 1, strength=None, steps: int = STEPS,
        cfg: float = CFG, keep_images: bool = False):
    """Score method x scenes x seeds. Returns a list of per-picture score dicts (with caption, seed, index)."""
    neg = encode(clip, "")
    rows = []
    for scene in scenes:
        m, pos = guided(method, model, clip, scene, strength)
        for seed in seeds:
            out = sample(m, pos, neg, seed, batch, steps, cfg)
            for i in range(out.shape[0]):
                sc = E.score_scene(out[i].float().numpy(), scene, use_regions=True)
                sc.update(caption=scene.caption, seed=seed, index=i, method=method)
                if keep_images:
                    sc["image"] = out[i].float().numpy()
                rows.append(sc)
    return rows


def single_correct(rows) -> float:
    return float(np.mean([r["binding"] for r in rows]))


def rate(rows, key: str):
    v = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(v)) if v else float("nan"), len(v)


def wilson(p: float, n: int, z: float = 1.96):
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(c - h), float(c + h))


def upscale(img, factor: int = 16) -> np.ndarray:
    """(4, H, W) model image -> (H*f, W*f, 3) uint8 RGB, nearest neighbour."""
    rgb = (world.to_rgb(img) * 255 + 0.5).astype(np.uint8)
    return rgb.repeat(factor, 0).repeat(factor, 1)
