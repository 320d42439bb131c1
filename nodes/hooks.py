"""The host's attention call, seen by Faithful: the attn1/attn2 replace patch on every UNet transformer block, and the
capture that turns one call into maps for the guidance core.

``AttentionPatch`` is installed (on a clone) at every (block kind, block index, transformer index) found by walking
the model; it runs the patch another pack had installed there (chained) or ComfyUI's attention, lets an active
modulation (Layout Regions) replace the call, and feeds the capture of a guidance forward or the run's observers.
"""
from __future__ import annotations

from comfy.ldm.modules.attention import optimized_attention

from ..guidance_core.attention import attention_probs, layer_geometry
from ..guidance_core.maps import MapStore

RUN_KEY = "faithful_run"
CAPTURE_KEY = "faithful_capture"

SUPPORTED = "SD1.x, SD2.x and SDXL (UNet models with cross-attention)"


# -- finding the transformer blocks --------------------------------------------------------------------------

def transformer_positions(model_patcher) -> list[tuple[str, int, int]]:
    """Every (block kind, block index, transformer index) of the UNet, found by walking the model."""
    dm = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    if dm is None or not hasattr(dm, "input_blocks") or not hasattr(dm, "output_blocks"):
        name = type(dm).__name__ if dm is not None else type(getattr(model_patcher, "model", None)).__name__
        raise ValueError(f"Faithful cannot guide this model ({name}): it supports {SUPPORTED}. "
                         "DiT / flow models such as Flux or SD3 have no UNet cross-attention to steer.")
    out = []
    groups = [("input", list(dm.input_blocks)), ("middle", [dm.middle_block]), ("output", list(dm.output_blocks))]
    for kind, blocks in groups:
        for idx, block in enumerate(blocks):
            for mod in block.modules():
                tb = getattr(mod, "transformer_blocks", None)
                if tb is not None and hasattr(mod, "proj_in"):
                    for j in range(len(tb)):
                        out.append((kind, idx, j))
    if not out:
        raise ValueError(f"Faithful found no cross-attention in this model; it supports {SUPPORTED}.")
    return out


def check_supported(model_patcher) -> None:
    transformer_positions(model_patcher)
    ms = model_patcher.get_model_object("model_sampling")
    import comfy.model_sampling as msm
    if isinstance(ms, getattr(msm, "CONST", ())) or not isinstance(ms, msm.ModelSamplingDiscrete):
        raise ValueError(f"Faithful cannot guide this model's sampling ({type(ms).__name__}); it supports {SUPPORTED}.")


# -- attention patches ---------------------------------------------------------------------------------------

class AttentionPatch:
    """attn1/attn2 replace: runs the chained patch (or ComfyUI's attention), and lets Faithful read or modulate.

    Called as ``patch(q, k, v, extra_options)`` with q (B, N, H*D), k and v (B, T, H*D).
    """

    def __init__(self, which: str, prev=None):
        self.which = which
        self.prev = prev

    def default(self, q, k, v, extra_options):
        if self.prev is not None:
            return self.prev(q, k, v, extra_options)
        return optimized_attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                                   transformer_options=extra_options)

    def __call__(self, q, k, v, extra_options):
        run = extra_options.get(RUN_KEY)
        out = None
        if run is not None and run.modulations:
            for mod in run.modulations:
                out = mod(self.which, q, k, v, extra_options, self.default)
                if out is not None:
                    break
        if out is None:
            out = self.default(q, k, v, extra_options)
        if self.which == "attn2":
            cap = extra_options.get(CAPTURE_KEY)
            readers = [cap] if cap is not None else (run.observers if run is not None else [])
            # the sampler's own forwards feed the observers, never guidance passes
            if readers:
                score_fn = _score_fn(run, q, k, extra_options)
                for r in readers:
                    (r.record if r is cap else r)(q, k, extra_options, score_fn=score_fn)
        return out


def _score_fn(run, q, k, extra_options):
    """The first modulation's score map for this cross-attention call (None when none is active), so losses and
    recorders read the probabilities the model actually used."""
    for mod in getattr(run, "modulations", None) or []:
        get = getattr(mod, "score_fn", None)
        fn = get("attn2", q, k, extra_options) if get is not None else None
        if fn is not None:
            return fn
    return None


def _install_attention(m, which: str) -> None:
    to = m.model_options.setdefault("transformer_options", {})
    existing = to.get("patches_replace", {}).get(which, {})
    for kind, idx, j in transformer_positions(m):
        key3 = (kind, idx, j)
        prev = existing.get(key3, existing.get((kind, idx)))
        if isinstance(prev, AttentionPatch):
            continue
        m.set_model_patch_replace(AttentionPatch(which, prev), which, kind, idx, j)


# -- capture -------------------------------------------------------------------------------------------------

class Capture:
    """Feeds a MapStore from the attn2 calls of one conditional forward."""

    def __init__(self, store: MapStore, latent_hw: tuple[int, int], batch: int):
        self.store = store
        self.latent_hw = latent_hw
        self.batch = batch

    def record(self, q, k, extra_options, score_fn=None):
        shape = extra_options.get("original_shape")
        if shape is not None and tuple(shape[-2:]) != tuple(self.latent_hw):
            return  # an area-conditioned crop: not a full-image map
        geo = layer_geometry(q.shape[1], self.latent_hw)
        block = extra_options.get("block")
        if geo is None or block is None:
            return
        f, h, w = geo
        info = self.store.classify(block[0], int(block[1]), int(extra_options.get("block_index", 0)), f)
        if not info.wanted:
            return
        heads = extra_options["n_heads"]
        probs = attention_probs(q, k, heads, score_fn=score_fn)  # (Bt, N, T)
        bt = probs.shape[0]
        probs = probs.reshape(bt, h, w, probs.shape[-1])
        if bt != self.batch and bt % self.batch == 0:  # several positive conds batched: average them
            probs = probs.reshape(bt // self.batch, self.batch, h, w, -1).mean(0)
        self.store.add(info, probs, heads)
