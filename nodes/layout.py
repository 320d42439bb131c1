"""Layout Regions: DenseDiffusion (Kim et al., ICCV 2023) as a MODEL patch plus the spliced conditioning.

The formula, the background segment and the area term are described in guidance_core/dense.py. Drawn regions
are kept as fractions and laid onto the sampler's latent at run time; painted MASK inputs keep their pixels
and must match the latent's aspect. Two Layout Regions nodes on one model merge into one modulation (their
regions together, as if drawn on one node); they must share the prompt and the strengths.
"""
from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from comfy_api.latest import io

from ..guidance_core.attention import layer_geometry
from ..guidance_core.dense import (MAX_REGIONS, SelfRegionRows, area_factor, check_aspect, cross_region_matrix, masks_for_resolution,
                                   modulate_scores, modulated_attention, nominal_size, parse_layout, region_kind,
                                   region_mask, time_decay, validate_regions, with_background)
from .runtime import install
from .tokens import PromptTokens

DEFAULT_LAYOUT = json.dumps({"width": 512, "height": 512, "regions": [
    {"x": 0.0, "y": 0.25, "w": 0.5, "h": 0.6, "phrase": "a cat"},
    {"x": 0.5, "y": 0.25, "w": 0.5, "h": 0.6, "phrase": "a dog"}]})

SETTINGS = ("w_cross", "w_self", "w_size", "active_fraction")


def _fit(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A painted (H, W) mask -> binary (h, w): bilinear resize, then above 0.5."""
    m = mask.float()
    if tuple(m.shape) != (h, w):
        m = F.interpolate(m[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    return (m > 0.5).float()


class DenseModulation:
    """Lives in the registry; ``bind(run)`` gives the per-run callable the attention patches call.

    ``masks`` is either an (N, H, W) tensor of painted masks or a list of N sources, each a drawn region dict
    (fractions: rasterised at the latent's size at run time) or an (H, W) painted mask. token_sets: each
    region's context positions; background_tokens: the background phrase's positions (may be empty)."""

    def __init__(self, masks, token_sets, n_tokens, model_sampling, w_cross=1.0, w_self=0.3, w_size=1.0,
                 active_fraction=0.3, names=None, phrases=None, background_tokens=(), background_phrases=(),
                 pieces=None, nominal_hw=None, n_layouts=1):
        self.sources = [m.float().cpu() if torch.is_tensor(m) else m for m in masks]
        self.token_sets = [list(t) for t in token_sets]
        self.n_tokens = n_tokens
        self.model_sampling = model_sampling
        self.w_cross, self.w_self, self.w_size = float(w_cross), float(w_self), float(w_size)
        self.active_fraction = float(active_fraction)
        self.names = list(names or [f"region {k + 1}" for k in range(len(self.sources))])
        self.phrases = list(phrases or [])
        self.background_tokens = sorted(set(background_tokens))
        self.background_phrases = list(background_phrases)
        self.pieces = pieces
        self.n_layouts = n_layouts
        if nominal_hw is None:
            painted = [s for s in self.sources if torch.is_tensor(s)]
            nominal_hw = tuple(painted[0].shape[-2:]) if painted else (64, 64)
        self.nominal_hw = tuple(nominal_hw)
        self._at = {}

    @property
    def masks(self) -> torch.Tensor:
        """(N, h, w) masks on the layout's own canvas grid (for previews and tests; sampling uses masks_at)."""
        h, w = self.nominal_hw
        return torch.stack([_fit(s, h, w) if torch.is_tensor(s) else region_mask(s, h, w, n + 1)
                            for n, s in enumerate(self.sources)])

    def masks_at(self, latent_hw) -> torch.Tensor:
        """(N, h, w) binary masks at the sampler's latent size, checked once per size: drawn regions laid onto
        the latent, painted masks resized after their aspect is checked."""
        latent_hw = tuple(int(v) for v in latent_hw)
        if latent_hw not in self._at:
            h, w = latent_hw
            out = []
            for n, src in enumerate(self.sources):
                if torch.is_tensor(src):
                    check_aspect(tuple(src.shape[-2:]), latent_hw, f"the masks input's masks ({self.names[n]})")
                    out.append(_fit(src, h, w))
                else:
                    out.append(region_mask(src, h, w, n + 1))
            masks = torch.stack(out)
            for n, m in enumerate(masks):
                if float(m.sum()) == 0:
                    raise ValueError(f"Layout Regions: {self.names[n]} covers no pixel of the {w}x{h} latent "
                                     f"({w * 8}x{h * 8} image); draw a larger region or use a larger image")
            if self.background_tokens and float(masks.amax(0).sum()) == h * w:
                raise ValueError(f"Layout Regions: the background phrase {self.background_phrases} has no pixels: "
                                 "the regions cover the whole image; clear the background phrase or leave part of "
                                 "the image uncovered")
            self._at = {latent_hw: masks}  # one size at a time: a run uses one latent
        return self._at[latent_hw]

    def merged_with(self, later: "DenseModulation") -> "DenseModulation":
        """This layout and a later Layout Regions node's on the same model, as one modulation."""
        if self.pieces is not None and later.pieces is not None and self.pieces != later.pieces:
            raise ValueError("Layout Regions: this model already has a Layout Regions node with a different prompt. "
                             "Two Layout Regions nodes on one model merge their regions only when both have the same "
                             "prompt: give them the same prompt, or draw all regions on one node")
        for key in SETTINGS:
            a, b = getattr(self, key), getattr(later, key)
            if abs(a - b) > 1e-9:
                raise ValueError(f"Layout Regions: two Layout Regions nodes on one model have different {key} "
                                 f"({a:g} and {b:g}); their regions are merged into one modulation, so set {key} "
                                 "the same on both, or draw all regions on one node")
        k = self.n_layouts + 1
        return DenseModulation(
            self.sources + later.sources, self.token_sets + later.token_sets, self.n_tokens, self.model_sampling,
            self.w_cross, self.w_self, self.w_size, self.active_fraction,
            self.names + [f"layout {k} {n}" for n in later.names], self.phrases + later.phrases,
            self.background_tokens + later.background_tokens, self.background_phrases + later.background_phrases,
            self.pieces if self.pieces is not None else later.pieces, self.nominal_hw, k)

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

    def regions(self, which, latent_hw, h, w, n_tokens, device):
        """(R, s) of one attention resolution (h, w): R (h*w, T) for cross-attention, SelfRegionRows for self,
        over the regions plus the background segment."""
        key = (which, tuple(latent_hw), h, w, n_tokens, str(device))
        if key not in self.cache:
            m = masks_for_resolution(self.mod.masks_at(latent_hw), h, w)
            m, token_sets = with_background(m, self.mod.token_sets, self.mod.background_tokens)
            m = m.to(device)
            s = area_factor(m, self.mod.w_size)
            R = cross_region_matrix(m, token_sets, n_tokens) if which == "attn2" else SelfRegionRows(m)
            self.cache[key] = (R, s)
        return self.cache[key]

    def _plan(self, which, q, k, extra_options):
        """(cond rows, R, s, lambda, weight) when this call is modulated, else None."""
        sigma = extra_options.get("sigmas")
        shape = extra_options.get("original_shape")
        cou = extra_options.get("cond_or_uncond") or []
        if sigma is None or shape is None or 0 not in cou:
            return None
        latent_hw = tuple(shape[-2:])
        run_hw = tuple(getattr(self.run, "latent_shape", ())[-2:])
        if run_hw and run_hw != latent_hw:
            return None  # an area-conditioned crop: the layout describes the whole image, not this part
        self.mod.masks_at(latent_hw)  # checks the layout against this latent at the first call, active or not
        lam = self.active_lambda(sigma)
        if lam is None:
            return None
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
        R, s = self.regions(which, latent_hw, h, w, k.shape[1], q.device)
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
    """(sources, phrases, names, layout) of the drawn regions and the connected masks."""
    layout = parse_layout(layout_text)
    regions = layout["regions"]
    for n, r in enumerate(regions):  # refuse malformed regions now, not at the first step
        region_mask(r, 1, 1, n + 1)
    phrases = [str(r.get("phrase", "")).strip() for r in regions]
    names = [f"{region_kind(r)} {n + 1} '{p}'" for n, (r, p) in enumerate(zip(regions, phrases))]
    sources = list(regions)
    if masks is not None:
        extra = [p.strip() for p in (mask_phrases or "").splitlines() if p.strip()]
        m = masks if masks.dim() == 3 else masks[None]
        if len(extra) != m.shape[0]:
            raise ValueError(f"Layout Regions: {m.shape[0]} masks but {len(extra)} mask phrases; write one phrase per "
                             "line, one per mask, in the order of the mask batch")
        sources += list(m.float().cpu())
        phrases += extra
        names += [f"mask {n + 1} '{p}'" for n, p in enumerate(extra)]
    return sources, phrases, names, layout


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
                "pixels of a region attend to each other; the uncovered rest is the background segment (DenseDiffusion, "
                "Kim et al. 2023; the paper's value-range adaptive modulation of cross- and self-attention, no "
                "gradients). Use its CONDITIONING output as the sampler's positive input."),
            inputs=[
                io.Model.Input("model", tooltip="The model to steer (SD1.x, SD2.x or SDXL); it is cloned."),
                io.Clip.Input("clip", tooltip="The CLIP that encodes the prompt and each region's phrase."),
                io.String.Input("prompt", multiline=True, default="a cat and a dog in a garden",
                                tooltip="The full caption. Every region phrase must appear in it word for word."),
                io.String.Input("layout", multiline=True, default=DEFAULT_LAYOUT,
                                tooltip="The drawn regions as JSON (edited by the drawing widget): boxes with x, y, "
                                        "w, h as fractions of the image and a phrase each. They fit any image size: "
                                        "width and height only set the drawing canvas's shape."),
                io.Float.Input("w_cross", default=1.0, min=0.0, max=2.0, step=0.05, optional=True,
                               tooltip="Strength on cross-attention (the paper's w_c = 1.0). Larger values push scores "
                                       "far from their range and degrade images."),
                io.Float.Input("w_self", default=0.3, min=0.0, max=2.0, step=0.05, optional=True,
                               tooltip="Strength on self-attention (the paper's w_s = 0.3)."),
                io.Float.Input("w_size", default=1.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="How much more small regions are modulated than large ones (1.0)."),
                io.Float.Input("active_fraction", default=0.3, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Modulate during this first fraction of the steps (the paper: 15 of 50)."),
                io.Mask.Input("masks", optional=True, tooltip="Optional painted masks (a batch), added to the drawn "
                                                              "boxes; they must have the image's aspect ratio."),
                io.String.Input("mask_phrases", multiline=True, default="", optional=True,
                                tooltip="One phrase per line for the connected masks, in batch order."),
                io.String.Input("background", default="", optional=True,
                                tooltip="Optional words of the prompt for the part of the image no region covers "
                                        "(e.g. 'a garden'). Empty: that part is a background segment with no words."),
            ],
            outputs=[
                io.Model.Output(tooltip="The model with layout modulation; chain more Faithful nodes or connect to a sampler."),
                io.Conditioning.Output(tooltip="The caption encoded with each region phrase's own embeddings pasted over "
                                               "its words (as the paper does): use it as the sampler's positive input."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, prompt, layout, w_cross=1.0, w_self=0.3, w_size=1.0, active_fraction=0.3,
                masks=None, mask_phrases="", background="") -> io.NodeOutput:
        m, toks, phrases, token_sets = modulated_model(model, clip, prompt, layout, w_cross, w_self, w_size,
                                                       active_fraction, masks, mask_phrases, background)
        return io.NodeOutput(m, splice_conditioning(clip, prompt, toks, phrases, token_sets))


def _presence(src, n, nominal):
    """The node-time check mask of one source: a drawn region on the layout's own grid; a painted mask is
    checked at its own pixels (it is resized to the latent at run time), so only its emptiness counts."""
    if torch.is_tensor(src):
        return torch.full(nominal, float((src > 0.5).any()))
    return region_mask(src, *nominal, n + 1)


def _locate(toks, prompt, phrase, name):
    pos = toks.locate([phrase])[0]
    if pos is None:
        raise ValueError(f"Layout Regions: the phrase '{phrase}' of {name} is not in the prompt '{prompt}'. "
                         "Each phrase must appear in the prompt word for word.")
    return pos


def modulated_model(model, clip, prompt, layout, w_cross=1.0, w_self=0.3, w_size=1.0, active_fraction=0.3,
                    masks=None, mask_phrases="", background=""):
    """Validate the layout against the prompt and return (patched clone, PromptTokens, phrases, token sets).

    The phrases and token sets are those of every region on the model (a Layout Regions node earlier in the
    chain included) plus the background phrases: the ones the conditioning must splice."""
    if not (prompt or "").strip():
        raise ValueError("Layout Regions: the prompt is empty")
    sources, phrases, names, parsed = _layout_regions(layout, masks, mask_phrases)
    if not phrases:
        raise ValueError("Layout Regions: no regions; draw at least one box on the node or connect masks")
    toks = PromptTokens(clip, prompt)
    token_sets = []
    for name, phrase in zip(names, phrases):
        if not phrase:
            raise ValueError(f"Layout Regions: {name} has no phrase; give each region words from the prompt")
        token_sets.append(_locate(toks, prompt, phrase, name))
    bg_phrases = [p for p in dict.fromkeys([(background or "").strip(), parsed["background"].strip()]) if p]
    bg_tokens = [p for ph in bg_phrases for p in _locate(toks, prompt, ph, "the background")]
    nominal = nominal_size(parsed)
    validate_regions(torch.stack([_presence(s, n, nominal) for n, s in enumerate(sources)]), token_sets,
                     n_tokens=toks.n_tokens, names=names)
    mod = DenseModulation(sources, token_sets, toks.n_tokens, model.get_model_object("model_sampling"),
                          w_cross, w_self, w_size, active_fraction, names, phrases, bg_tokens, bg_phrases,
                          pieces=list(toks.pieces), nominal_hw=nominal)
    m, reg = install(model, self_attention=True)
    earlier = [i for i, x in enumerate(reg.modulations) if isinstance(x, DenseModulation)]
    if earlier:  # one modulation for all layouts: the attention patch lets only the first answering one act
        mod = reg.modulations[earlier[0]].merged_with(mod)
        if len(mod.sources) > MAX_REGIONS:
            raise ValueError(f"Layout Regions: the Layout Regions nodes on this model have {len(mod.sources)} "
                             f"regions together, at most {MAX_REGIONS} are allowed; use fewer")
        reg.modulations[earlier[0]] = mod
    else:
        reg.modulations.append(mod)
    reg.prompts.append(toks.check("Layout Regions", clip))
    all_phrases = mod.phrases + mod.background_phrases
    all_sets = mod.token_sets + [_locate(toks, prompt, p, "the background") for p in mod.background_phrases]
    return m, toks, all_phrases, all_sets


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
