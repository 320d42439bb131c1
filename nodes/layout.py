"""Layout Regions: DenseDiffusion (Kim et al., ICCV 2023) as a MODEL patch plus the spliced conditioning."""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..guidance_core.attention import layer_geometry
from ..guidance_core.dense import (area_factor, cross_region_matrix, masks_for_resolution, masks_from_layout,
                                   modulate_scores, modulated_attention, self_region_matrix, time_decay, validate_regions)
from .runtime import install
from .tokens import PromptTokens

DEFAULT_LAYOUT = json.dumps({"width": 512, "height": 512, "regions": [
    {"x": 0.0, "y": 0.25, "w": 0.5, "h": 0.6, "phrase": "a cat"},
    {"x": 0.5, "y": 0.25, "w": 0.5, "h": 0.6, "phrase": "a dog"}]})


class DenseModulation:
    """Lives in the registry; ``bind(run)`` gives the per-run callable the attention patches call.

    masks (N, H, W) at the layout's latent size; token_sets: each region's context positions."""

    def __init__(self, masks, token_sets, n_tokens, model_sampling, w_cross=1.0, w_self=0.3, w_size=1.0,
                 active_fraction=0.3, names=None):
        self.masks = masks.float().cpu()
        self.token_sets = token_sets
        self.n_tokens = n_tokens
        self.model_sampling = model_sampling
        self.w_cross, self.w_self, self.w_size = float(w_cross), float(w_self), float(w_size)
        self.active_fraction = float(active_fraction)
        self.names = names or []
        self._checked = None

    def bind(self, run):
        return _Bound(self, run)


class _Bound:
    def __init__(self, mod: DenseModulation, run):
        self.mod, self.run = mod, run
        self.cache = {}

    def active_lambda(self, sigma):
        i = self.run.step_index(sigma)
        if i is None:  # an intermediate evaluation (e.g. Heun's second call): use the sigma's place in the schedule
            ss = self.run.sample_sigmas
            i = int((ss[:-1] > float(sigma.flatten()[0])).sum())
        if i >= round(self.mod.active_fraction * self.run.n_steps):
            return None
        t = float(self.mod.model_sampling.timestep(sigma.flatten()[:1].float().cpu())[0])
        return time_decay(t)

    def regions(self, which, h, w, n_tokens, device):
        key = (which, h, w, n_tokens, str(device))
        if key not in self.cache:
            m = masks_for_resolution(self.mod.masks, h, w).to(device)
            s = area_factor(m, self.mod.w_size)
            R = cross_region_matrix(m, self.mod.token_sets, n_tokens) if which == "attn2" else self_region_matrix(m)
            self.cache[key] = (R, s)
        return self.cache[key]

    def _plan(self, which, q, k, extra_options):
        """(cond rows, R, s, lambda, weight) when this call is modulated, else None."""
        sigma = extra_options.get("sigmas")
        shape = extra_options.get("original_shape")
        cou = extra_options.get("cond_or_uncond") or []
        if sigma is None or shape is None or 0 not in cou:
            return None
        lam = self.active_lambda(sigma)
        if lam is None:
            return None
        latent_hw = tuple(shape[-2:])
        if self.mod._checked != latent_hw:
            validate_regions(self.mod.masks, self.mod.token_sets, latent_hw, names=self.mod.names)
            self.mod._checked = latent_hw
        geo = layer_geometry(q.shape[1], latent_hw)
        if geo is None:
            return None
        _, h, w = geo
        if which == "attn2" and k.shape[1] != self.mod.n_tokens:
            raise ValueError(f"Layout Regions: the positive conditioning has {k.shape[1]} tokens but the node's "
                             f"prompt has {self.mod.n_tokens}; use the CONDITIONING output of Layout Regions as the "
                             "sampler's positive input")
        per = q.shape[0] // len(cou)
        rows = torch.cat([torch.arange(c * per, (c + 1) * per) for c, u in enumerate(cou) if u == 0]).to(q.device)
        R, s = self.regions(which, h, w, k.shape[1], q.device)
        return rows, R, s, lam, (self.mod.w_cross if which == "attn2" else self.mod.w_self)

    def score_fn(self, which, q, k, extra_options):
        """S (B', H, N, T) -> modulated S, for readers of this layer's cond rows (None when inactive)."""
        plan = self._plan(which, q, k, extra_options)
        if plan is None:
            return None
        _, R, s, lam, weight = plan
        return lambda S: modulate_scores(S, R, s, lam, weight)

    def __call__(self, which, q, k, v, extra_options, default):
        plan = self._plan(which, q, k, extra_options)
        if plan is None:
            return None
        rows, R, s, lam, weight = plan
        out = default(q, k, v, extra_options)
        mod = modulated_attention(q[rows], k[rows], v[rows], extra_options["n_heads"], R, s, lam, weight)
        out = out.clone()
        out[rows] = mod.to(out.dtype)
        return out


def _layout_regions(layout_text: str, masks, mask_phrases: str):
    try:
        layout = json.loads(layout_text) if (layout_text or "").strip() else {"regions": []}
    except json.JSONDecodeError as e:
        raise ValueError(f"Layout Regions: the layout is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                         "redraw it or fix the text") from None
    if not isinstance(layout, dict):
        raise ValueError('Layout Regions: the layout must be {"width": W, "height": H, "regions": [...]}')
    drawn, phrases = masks_from_layout(layout)
    kinds = ["painted region" if isinstance(r, dict) and r.get("strokes") and "x" not in r else "box"
             for r in layout.get("regions", [])]
    names = [f"{k} {n + 1} '{p}'" for n, (k, p) in enumerate(zip(kinds, phrases))]
    if masks is not None:
        extra = [p.strip() for p in (mask_phrases or "").splitlines() if p.strip()]
        m = masks if masks.dim() == 3 else masks[None]
        if len(extra) != m.shape[0]:
            raise ValueError(f"Layout Regions: {m.shape[0]} masks but {len(extra)} mask phrases; write one phrase per "
                             "line, one per mask, in the order of the mask batch")
        size = drawn.shape[-2:] if drawn.shape[0] else m.shape[-2:]
        m = F.interpolate(m[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        drawn = torch.cat([drawn.reshape(-1, *size), (m > 0.5).float()]) if drawn.shape[0] else (m > 0.5).float()
        phrases += extra
        names += [f"mask {n + 1} '{p}'" for n, p in enumerate(extra)]
    return drawn, phrases, names


class LayoutRegions(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulLayoutRegions",
            display_name="Layout Regions (DenseDiffusion)",
            category="faithful",
            description=(
                "Makes the image follow a layout: draw boxes on the node (or connect masks), give each a phrase from "
                "the prompt, and during the first 30% of sampling each phrase's words attend inside its region and "
                "pixels of a region attend to each other (DenseDiffusion, Kim et al. 2023; the paper's value-range "
                "adaptive modulation of cross- and self-attention, no gradients). Use its CONDITIONING output as the "
                "sampler's positive input."),
            inputs=[
                io.Model.Input("model", tooltip="The model to steer (SD1.x, SD2.x or SDXL); it is cloned."),
                io.Clip.Input("clip", tooltip="The CLIP that encodes the prompt and each region's phrase."),
                io.String.Input("prompt", multiline=True, default="a cat and a dog in a garden",
                                tooltip="The full caption. Every region phrase must appear in it word for word."),
                io.String.Input("layout", multiline=True, default=DEFAULT_LAYOUT,
                                tooltip="The drawn regions as JSON (edited by the drawing widget): width, height and "
                                        "boxes with x, y, w, h as fractions of the image and a phrase each."),
                io.Float.Input("w_cross", default=1.0, min=0.0, max=2.0, step=0.05, optional=True,
                               tooltip="Strength on cross-attention (the paper's w_c = 1.0). Larger values push scores "
                                       "far from their range and degrade images."),
                io.Float.Input("w_self", default=0.3, min=0.0, max=2.0, step=0.05, optional=True,
                               tooltip="Strength on self-attention (the paper's w_s = 0.3)."),
                io.Float.Input("w_size", default=1.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="How much more small regions are modulated than large ones (1.0)."),
                io.Float.Input("active_fraction", default=0.3, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Modulate during this first fraction of the steps (the paper: 15 of 50)."),
                io.Mask.Input("masks", optional=True, tooltip="Optional painted masks (a batch), added to the drawn boxes."),
                io.String.Input("mask_phrases", multiline=True, default="", optional=True,
                                tooltip="One phrase per line for the connected masks, in batch order."),
            ],
            outputs=[
                io.Model.Output(tooltip="The model with layout modulation; chain more Faithful nodes or connect to a sampler."),
                io.Conditioning.Output(tooltip="The caption encoded with each region phrase's own embeddings pasted over "
                                               "its words (as the paper does): use it as the sampler's positive input."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, prompt, layout, w_cross=1.0, w_self=0.3, w_size=1.0, active_fraction=0.3,
                masks=None, mask_phrases="") -> io.NodeOutput:
        m, toks, phrases, token_sets = modulated_model(model, clip, prompt, layout, w_cross, w_self, w_size,
                                                       active_fraction, masks, mask_phrases)
        return io.NodeOutput(m, splice_conditioning(clip, prompt, toks, phrases, token_sets))


def modulated_model(model, clip, prompt, layout, w_cross=1.0, w_self=0.3, w_size=1.0, active_fraction=0.3,
                    masks=None, mask_phrases=""):
    """Validate the layout against the prompt and return (patched clone, PromptTokens, phrases, token sets)."""
    if not (prompt or "").strip():
        raise ValueError("Layout Regions: the prompt is empty")
    region_masks, phrases, names = _layout_regions(layout, masks, mask_phrases)
    if not phrases:
        raise ValueError("Layout Regions: no regions; draw at least one box on the node or connect masks")
    toks = PromptTokens(clip, prompt)
    token_sets = []
    for name, phrase in zip(names, phrases):
        if not phrase:
            raise ValueError(f"Layout Regions: {name} has no phrase; give each region words from the prompt")
        pos = toks.locate([phrase])[0]
        if pos is None:
            raise ValueError(f"Layout Regions: the phrase '{phrase}' of {name} is not in the prompt '{prompt}'. "
                             "Each phrase must appear in the prompt word for word.")
        token_sets.append(pos)
    validate_regions(region_masks, token_sets, n_tokens=toks.n_tokens, names=names)
    mod = DenseModulation(region_masks, token_sets, toks.n_tokens, model.get_model_object("model_sampling"),
                          w_cross, w_self, w_size, active_fraction, names)
    m, reg = install(model, self_attention=True)
    reg.modulations.append(mod)
    return m, toks, phrases, token_sets


def splice_conditioning(clip, prompt, toks, phrases, token_sets):
    """The caption's embedding with each phrase's own per-token embedding pasted over its positions."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
    cond = cond.clone()
    for phrase, pos in zip(phrases, token_sets):
        own = clip.encode_from_tokens(clip.tokenize(phrase))
        n = len(pos)
        cond[:, pos] = own[:, 1:1 + n].to(cond.dtype)
    return [[cond, {"pooled_output": pooled}]]


NODES = [LayoutRegions]
