"""InfSplign (arXiv 2512.17851) as a guidance-engine term: noise-space guidance every step.

eps <- eps_cfg + w * dL/dz with w = 1000 (the reference's sg_grad_wt), L the compound loss of
``guidance_core.spatial.infsplign_loss`` averaged over the decoder cross-attention layers the reference reads
(its ``attn_greenlist`` in pipeline_batch.py), each head-averaged map (B, h, w, T) resized to 64x64.

Which layer feeds which energy follows the reference's rule (self_guide_batch.py, ``InfSplign.centroid``): a
layer whose diffusers module name contains ``"blocks.1"`` is a presence layer ("top": v_A + v_B, weight
w_presence), every other layer a balance layer ("mid": |v_A - v_B|, weight w_balance).

SD1.x / SD2.x (the first 6 of the greenlist, at 512 px):
    up_blocks.1.attentions.{0,1,2}.transformer_blocks.0  (16x16, latent/4)  -> presence
    up_blocks.2.attentions.{0,1,2}.transformer_blocks.0  (32x32, latent/2)  -> balance
  In ComfyUI these are output_blocks.{3,4,5}.1 and output_blocks.{6,7,8}.1, patch keys ("output", 3..5, 0) and
  ("output", 6..8, 0): selected here as the decoder layers at factor 4 and at factor 2.
SDXL (1024 px, 32x32 = latent/4):
    up_blocks.0.attentions.1.transformer_blocks.1        -> presence ("blocks.1" is in the name)
    up_blocks.0.attentions.1.transformer_blocks.{2,3}    -> balance
  diffusers' up_blocks.0 is the decoder's lowest level, ComfyUI's output_blocks 0-2 (all at latent/4, ten
  transformer sub-blocks each); attentions.1 is the second of them, output_blocks.1.1, and transformer_blocks.k
  is ComfyUI's transformer index k. So the patch keys are ("output", 1, 1) for presence and ("output", 1, 2),
  ("output", 1, 3) for balance, selected here as the second decoder block at factor 4 (block ordinal 1) with
  transformer indices (1,) and (2, 3). (comfy.utils.unet_to_diffusers gives the same correspondence;
  tests/test_spatial_inprocess.py checks it on a model whose block has four sub-blocks.) The step loss is the
  mean over the three layers (one presence, two balance), as in the reference.
"""
from __future__ import annotations

from .engine import GuidanceTerm
from .maps import LayerSelector

SD_TOP = LayerSelector(kinds=("output",), factors=(4,))
SD_MID = LayerSelector(kinds=("output",), factors=(2,))
SDXL_TOP = LayerSelector(kinds=("output",), factors=(4,), block_ordinals=(1,), transformer_indices=(1,))
SDXL_MID = LayerSelector(kinds=("output",), factors=(4,), block_ordinals=(1,), transformer_indices=(2, 3))


class SpatialTerm(GuidanceTerm):
    """Relations are (positions of A, canonical relation, positions of B). Guided at steps with
    start <= i/N < end (every step by default)."""
    name = "infsplign"
    label = "Spatial Alignment Loss"
    channel = "noise"
    max_refinement_steps = 0

    def __init__(self, relations, guidance_scale: float = 1000.0, alpha: float = 1.5, margin: float = 0.25,
                 w_spatial: float = 0.5, w_presence: float = 1.0, w_balance: float = 1.0, start: float = 0.0,
                 end: float = 1.0, deep_decoder: bool = False, map_size: int = 64):
        from .spatial import canonical_relation
        if not relations:
            raise ValueError("Spatial Alignment Loss needs at least one relation such as 'car left of dog'")
        self.relations = [(list(a), canonical_relation(r), list(b)) for a, r, b in relations]
        self.guidance_scale = float(guidance_scale)
        self.kw = dict(alpha=alpha, margin=margin, w_spatial=w_spatial, w_presence=w_presence, w_balance=w_balance)
        self.start, self.end = float(start), float(end)
        self.map_size = int(map_size)
        self.selectors = (SDXL_TOP, SDXL_MID) if deep_decoder else (SD_TOP, SD_MID)
        self.expected_tokens = None

    def active(self, step) -> bool:
        f = step.i / max(1, step.n)
        return self.start <= f < self.end

    def weight(self, step) -> float:
        return self.guidance_scale

    def refinement_threshold(self, step):
        return None

    def missing_maps_message(self, selector, store) -> str:
        """The error when the model's decoder lacks one of the layer groups the reference reads (the node has
        no input that chooses layers: they are fixed per architecture)."""
        seen = store.factors_seen(("output",))
        where = ("the second decoder block at latent/4 with transformer sub-blocks 1-3 (SDXL's "
                 "up_blocks.0.attentions.1)" if selector.transformer_indices else
                 f"the decoder's cross-attention at latent/{selector.factors[0]} ({store.map_size(selector.factors[0])} maps "
                 f"with this {store.latent_hw[0]}x{store.latent_hw[1]} latent)")
        have = ", ".join(f"latent/{f}" for f in seen) if seen else "no resolution"
        return (f"Spatial Alignment Loss reads {where}, and this model's decoder has cross-attention at {have}. "
                "Its layers are fixed by the architecture (no input chooses them): connect an SD1.x, SD2.x or SDXL "
                "model to its 'model' input.")

    def loss(self, maps, step):
        from .spatial import infsplign_loss, resize_maps
        groups = ("top", "mid")
        layer_maps = []
        for g, captured in zip(groups, maps):
            for m in captured:
                t = m.probs.shape[-1]
                if self.expected_tokens is not None and self.expected_tokens != t:
                    raise ValueError(f"Spatial Alignment Loss: the positive conditioning has {t} tokens but the "
                                     f"node's prompt has {self.expected_tokens}: use the sampler's positive prompt.")
                # (B, h, w, T) -> resize each token map to map_size x map_size
                p = m.probs.permute(0, 3, 1, 2)
                p = resize_maps(p.flatten(0, 1), self.map_size).reshape(p.shape[0], p.shape[1], self.map_size, self.map_size)
                layer_maps.append((p.permute(0, 2, 3, 1), g))
        if not layer_maps:
            raise ValueError("Spatial Alignment Loss found no decoder cross-attention at the layers it reads "
                             "(latent/4 and latent/2): connect an SD1.x, SD2.x or SDXL model.")
        loss, terms = infsplign_loss(layer_maps, self.relations, **self.kw)
        # What the last layer measured for the last relation (the highest-resolution decoder layer): reported
        # per step for previews and tests, never fed back.
        self.last_diagnostics = {k: v.detach().float().cpu().tolist() for k, v in terms.items()}
        return loss


def parse_relation_line(line: str) -> tuple[str, str, str]:
    """``"red car to the left of blue dog"`` -> ("red car", "to the left of", "blue dog"); also "A | rel | B".

    The relation phrase is the longest known alias found between two non-empty sides. A line that names a
    relation but lacks an object ("left of", "car left of") is an error saying which object is missing.
    """
    from .spatial import RELATION_ALIASES
    text = " ".join(line.strip().split())
    if "|" in text:
        parts = [p.strip() for p in text.split("|")]
        if len(parts) == 3 and parts[1] and not (parts[0] and parts[2]):
            raise ValueError(_missing_objects(line, parts[1], parts[0], parts[2]))
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"relation '{line}': write 'object A | relation | object B', e.g. 'car | left of | dog'")
        return parts[0], parts[1], parts[2]
    low = f" {text.lower()} "
    lacking, spans = None, []
    for alias in sorted(RELATION_ALIASES, key=len, reverse=True):
        k = low.find(f" {alias} ")
        end = k + len(alias) + 1
        if k < 0 or any(s0 <= k and end <= s1 for s0, s1 in spans):
            continue  # absent, or a part of a longer relation already found ("left of" in "to the left of")
        a, b = text[:k].strip(), text[end:].strip()
        if a and b:
            return a, alias, b
        spans.append((k, end))
        lacking = lacking or (alias, a, b)
    if lacking is not None:
        raise ValueError(_missing_objects(line, *lacking))
    names = ", ".join(sorted(RELATION_ALIASES))
    raise ValueError(f"relation '{line}' names no known relation; use one of: {names} (e.g. 'car left of dog')")


def _missing_objects(line: str, alias: str, a: str, b: str) -> str:
    which = ("both objects are missing" if not (a or b) else
             f"the first object (before '{alias}') is missing" if not a else
             f"the second object (after '{alias}') is missing")
    return (f"relation '{line.strip()}': {which}. Write 'object A {alias} object B' with both objects as they "
            f"appear in the prompt, e.g. 'car {alias} dog'.")
