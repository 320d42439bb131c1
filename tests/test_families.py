"""Every method on every supported family (tiny SD1.x, SD2.x v-prediction, SDXL), batch 4 and chained."""
import json

import pytest
import torch

from tools import tiny

PROMPT = "a red cat to the left of a blue frog"


def _apply(method, model, clip):
    from faithful.nodes.bindings import BindAttributes, ParsePromptBindings
    from faithful.nodes.excite import ExciteTokens
    from faithful.nodes.spatial import SpatialAlignmentLoss
    if method == "excite":
        return ExciteTokens.execute(model, clip, PROMPT, "cat, frog", attention_factor=2, max_refinement_steps=2).args[0]
    if method == "syngen":
        return BindAttributes.execute(model, ParsePromptBindings.execute(clip, PROMPT).args[0], attention_factor=2).args[0]
    if method == "spatial":
        return SpatialAlignmentLoss.execute(model, clip, PROMPT, "cat left of frog").args[0]
    if method == "layout":  # the modulation alone (the tiny models have no CLIP to encode the spliced conditioning)
        from faithful.guidance_core.dense import masks_from_layout
        from faithful.nodes.layout import DenseModulation
        from faithful.nodes.runtime import install
        masks, _ = masks_from_layout({"width": 256, "height": 256, "regions": [
            {"x": 0, "y": 0, "w": 0.5, "h": 1, "phrase": "cat"}, {"x": 0.5, "y": 0, "w": 0.5, "h": 1, "phrase": "frog"}]})
        m, reg = install(model, self_attention=True)
        reg.modulations.append(DenseModulation(masks, [[3], [9]], 77, model.get_model_object("model_sampling")))
        return m
    if method == "chained":
        return _apply("spatial", _apply("syngen", _apply("excite", model, clip), clip), clip)
    raise ValueError(method)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("method", ["excite", "syngen", "spatial", "layout", "chained"])
def test_method_runs_on_family(pack, family, method):
    import comfy.sample
    from faithful.nodes.runtime import REGISTRY_KEY
    model = tiny.build_model(family, seed=11)
    clip = tiny.TokenizerClip(family)
    pooled = tiny.SDXL_POOLED if family == "sdxl" else None
    pos, neg = tiny.random_cond(seed=1, pooled=pooled), tiny.random_cond(seed=2, pooled=pooled)
    m = _apply(method, model, clip)
    lat = torch.zeros(4 if method == "chained" else 1, 4, 32, 32)
    noise = comfy.sample.prepare_noise(lat, 3)
    out = comfy.sample.sample(m, noise, 4, 5.0, "euler", "normal", pos, neg, lat, seed=3, disable_pbar=True)
    plain = comfy.sample.sample(model, noise, 4, 5.0, "euler", "normal", pos, neg, lat, seed=3, disable_pbar=True)
    assert torch.isfinite(out).all()
    assert (out - plain).abs().max() > 1e-5, "the method must change the result"
    rep = m.model_options["transformer_options"][REGISTRY_KEY].last_report
    if method != "layout":
        assert rep and all(r["skipped"] is None for r in rep)
        assert all(r["backward_passes"] == 1 for r in rep if not r["refinement_iterations"])
    if method == "chained":
        assert len(rep[0]["losses"]["syngen"]) == 4  # batch 4: one loss per image
