"""Spatial Alignment Loss on tiny random SD1- and SDXL-architecture models: the relation gets satisfied more often.

"A left of B": at the end of sampling, the x-centroid of A's decoder attention is left of B's (delta > 0) in
more seeds guided than unguided (guidance_scale 0, same seeds), and the loss falls. The tiny random models
attend weakly, so the test uses a guidance scale of 5000 (the paper's 1000 is for real SD weights).
Counts measured when written (6 seeds, 8 steps): SD1 guided 6/6 vs unguided 4/6; SDXL 6/6 vs 3/6; the loss
ended below the unguided run in 6/6 seeds for both.
"""
import pytest
import torch

from tools import tiny

SEEDS = range(6)


def _run(model, clip, pos, neg, seed, scale):
    import comfy.sample
    from faithful.nodes.runtime import REGISTRY_KEY
    from faithful.nodes.spatial import SpatialAlignmentLoss
    m = SpatialAlignmentLoss.execute(model, clip, "a car to the left of a dog", "car left of dog",
                                     guidance_scale=scale).args[0]
    lat = torch.zeros(1, 4, 32, 32)
    comfy.sample.sample(m, comfy.sample.prepare_noise(lat, seed), 8, 5.0, "euler", "normal", pos, neg, lat,
                        seed=seed, disable_pbar=True)
    rep = m.model_options["transformer_options"][REGISTRY_KEY].last_report
    assert len(rep) == 8 and all(r["backward_passes"] == 1 for r in rep)  # every step, one backward
    losses = [r["losses"]["infsplign"][0] for r in rep]
    return rep[-1]["diagnostics"]["infsplign"]["delta"][0], losses


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_left_of_holds_in_more_seeds_and_loss_falls(pack, family):
    model = tiny.build_model(family, seed=1)
    clip = tiny.TokenizerClip(family)
    pooled = tiny.SDXL_POOLED if family == "sdxl" else None
    ok = {"guided": 0, "unguided": 0}
    falls = 0
    for seed in SEEDS:
        pos = tiny.random_cond(seed=100 + seed, pooled=pooled)
        neg = tiny.random_cond(seed=200 + seed, pooled=pooled)
        dg, lg = _run(model, clip, pos, neg, seed, 5000.0)
        du, lu = _run(model, clip, pos, neg, seed, 0.0)
        ok["guided"] += dg > 0
        ok["unguided"] += du > 0
        falls += lg[-1] < lg[0] and lg[-1] < lu[-1]
    print(family, "relation holds:", ok, "loss fell below unguided in", falls, "of", len(SEEDS))
    assert ok["guided"] > ok["unguided"]
    assert falls >= len(SEEDS) - 1


def test_bad_relations_are_clear_errors(pack):
    from faithful.nodes.spatial import SpatialAlignmentLoss
    model, clip = tiny.build_model("sd1"), tiny.TokenizerClip()
    run = lambda rel: SpatialAlignmentLoss.execute(model, clip, "a car to the left of a dog", rel)
    with pytest.raises(ValueError, match="'giraffe' is not in the prompt"):
        run("giraffe left of dog")
    with pytest.raises(ValueError, match="no known relation"):
        run("car behind dog")
    with pytest.raises(ValueError, match="same object on both sides"):
        run("car left of car")
    with pytest.raises(ValueError, match="no relation given"):
        run("")
    with pytest.raises(ValueError, match=r"^Spatial Alignment Loss: relation 'left of': both objects are missing"):
        run("left of")
    with pytest.raises(ValueError, match=r"relation 'car left of': the second object \(after 'left of'\) is missing"):
        run("car left of")


def test_bindings_relations_that_are_not_a_list_or_lack_objects(pack):
    from faithful.nodes.spatial import SpatialAlignmentLoss
    model, clip = tiny.build_model("sd1"), tiny.TokenizerClip()
    run = lambda b: SpatialAlignmentLoss.execute(model, clip, "a car to the left of a dog", "", bindings=b)
    with pytest.raises(ValueError, match="'relations' must be a list"):
        run({"relations": "car left of dog"})
    with pytest.raises(ValueError, match="lacks its objects"):
        run({"relations": [{"relation": "left_of"}]})
    with pytest.raises(ValueError, match="'left_of' is missing an object"):
        run({"relations": [{"subject_positions": [2], "relation": "left_of", "object_positions": []}]})


# -- SDXL layer grouping against the reference ---------------------------------------------------------------

# The reference's SDXL layers (InfSplign pipeline_batch.py, attn_greenlist) and its grouping rule
# (self_guide_batch.py: a module whose name contains "blocks.1" is a presence layer, the others balance layers).
SDXL_GREENLIST = {f"up_blocks.0.attentions.1.transformer_blocks.{k}.attn2" for k in (1, 2, 3)}


def _reference_group(diffusers_name: str) -> str:
    return "top" if "blocks.1" in diffusers_name else "mid"


def _deep_sdxl(seed=3):
    """The tiny SDXL architecture with four transformer sub-blocks in each lowest-level decoder block (the real
    SDXL has ten; the stock tiny model has two, too few to hold the reference's transformer_blocks.{1,2,3})."""
    import copy
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    cfg = copy.deepcopy(tiny.SDXL_CONFIG)
    cfg.update(transformer_depth=[0, 1, 4], transformer_depth_output=[0, 0, 1, 1, 4, 4], transformer_depth_middle=1)
    conf = sm.SDXL(cfg)
    conf.unet_config.update(num_heads=-1, num_head_channels=8)
    conf.set_inference_dtype(torch.float32, None)
    model = conf.get_model({})
    tiny.init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def _diffusers_attn2_names(unet_config) -> dict:
    """ComfyUI (kind, block index, transformer index) -> diffusers module name, from the host's own key map."""
    import re
    import comfy.utils
    out = {}
    for dkey, ckey in comfy.utils.unet_to_diffusers(unet_config).items():
        m = re.fullmatch(r"output_blocks\.(\d+)\.1\.transformer_blocks\.(\d+)\.attn2\.to_q\.weight", ckey)
        if m:
            out[("output", int(m.group(1)), int(m.group(2)))] = dkey[: -len(".to_q.weight")]
    return out


def test_sdxl_layers_and_groups_match_the_reference(pack):
    """On an SDXL-architecture model deep enough to hold the reference's layers: the loss reads exactly the
    greenlisted layers, puts each in the group the reference's name rule gives (transformer_blocks.1 presence,
    .2 and .3 balance), and its value is the reference's mean over those three layer losses."""
    import comfy.sample
    from faithful.nodes.runtime import REGISTRY_KEY
    from faithful.nodes.spatial import SpatialAlignmentLoss
    from guidance_core.spatial import infsplign_layer_loss, object_map, resize_maps

    model = _deep_sdxl()
    names = _diffusers_attn2_names(model.model.model_config.unet_config)
    m = SpatialAlignmentLoss.execute(model, tiny.TokenizerClip("sdxl"), "a car to the left of a dog",
                                     "car left of dog").args[0]
    term = m.model_options["transformer_options"][REGISTRY_KEY].terms[0]
    seen, checked = [], []
    loss_fn = term.loss

    def recording_loss(maps, step):
        got = loss_fn(maps, step)
        layers = [(g, c) for g, captured in zip(("top", "mid"), maps) for c in captured]
        seen.append([(g, (c.kind, c.index, c.tindex)) for g, c in layers])
        expected = []
        for _, c in layers:  # the reference's computation, group from the diffusers name
            p = resize_maps(c.probs.permute(0, 3, 1, 2).flatten(0, 1), 64).reshape(
                c.probs.shape[0], c.probs.shape[-1], 64, 64).permute(0, 2, 3, 1)
            (pa, rel, pb), = term.relations
            lyr, _ = infsplign_layer_loss(object_map(p, pa), object_map(p, pb), rel,
                                          group=_reference_group(names[(c.kind, c.index, c.tindex)]), **term.kw)
            expected.append(lyr)
        checked.append((got.detach(), torch.stack(expected).mean(0).detach()))
        return got

    term.loss = recording_loss
    pooled = tiny.SDXL_POOLED
    lat = torch.zeros(1, 4, 32, 32)
    comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 0), 2, 5.0, "euler", "normal",
                        tiny.random_cond(seed=5, pooled=pooled), tiny.random_cond(seed=6, pooled=pooled), lat,
                        seed=0, disable_pbar=True)
    assert len(seen) == 2
    for layers in seen:
        assert {names[key] for _, key in layers} == SDXL_GREENLIST
        assert sorted((names[key], g) for g, key in layers) == sorted(
            (names[key], _reference_group(names[key])) for _, key in layers)
        assert sorted(key for _, key in layers) == [("output", 1, 1), ("output", 1, 2), ("output", 1, 3)]
    for got, want in checked:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
