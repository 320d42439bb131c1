"""A layer choice that reads no attention map is a clear ValueError at run time, for every gradient node.

Excite Tokens and Bind Attributes read the layers at ``attention_factor``; Spatial Alignment Loss reads fixed
decoder layers. Which factors exist is only known once a forward has run (it depends on the architecture and
the image), so the engine checks each term's maps after the first complete forward (``maps.require_maps``).
The message names the node, the input to change and the factors the model offers; the failed run leaves
nothing behind on the model (the next plain run is bit-identical to one before it).
"""
import copy

import pytest
import torch

from tools import tiny


def _sample(m, pos, neg, steps=2, seed=0):
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32)
    return comfy.sample.sample(m, comfy.sample.prepare_noise(lat, seed), steps, 5.0, "euler", "normal", pos, neg,
                               lat, seed=seed, disable_pbar=True)


def _excite(model, clip, factor):
    from faithful.nodes.excite import ExciteTokens
    return ExciteTokens.execute(model, clip, "a cat and a frog", "cat, frog", attention_factor=factor,
                                iterative_refinement=False).args[0]


def _bind(model, clip, factor):
    from faithful.nodes.bindings import BindAttributes, ParsePromptBindings
    b = ParsePromptBindings.execute(clip, "a pink sunflower and a yellow flamingo").args[0]
    return BindAttributes.execute(model, b, attention_factor=factor).args[0]


@pytest.mark.parametrize("node,make", [("Excite Tokens", _excite), ("Bind Attributes", _bind)])
def test_attention_factor_without_maps_names_the_input_and_the_factors(pack, node, make):
    from faithful.nodes.runtime import RUN_KEY
    model, clip = tiny.build_model("sd1", seed=4), tiny.TokenizerClip()
    pos, neg = tiny.random_cond(seed=1), tiny.random_cond(seed=2)
    before = _sample(model, pos, neg)
    m = make(model, clip, 16)  # the tiny SD1 at a 32x32 latent has cross-attention at factors 1, 2 and 4
    with pytest.raises(ValueError) as err:
        _sample(m, pos, neg)
    msg = str(err.value)
    assert msg.startswith(f"{node}: attention_factor 16 matches no cross-attention layer"), msg
    assert "attention_factor 1 (32x32 maps), 2 (16x16 maps), 4 (8x8 maps)." in msg, msg
    assert f"Set attention_factor on {node} to one of 1, 2, 4 " in msg, msg
    # nothing stays behind: no run state on the guided model, and the plain model samples exactly as before
    assert RUN_KEY not in m.model_options["transformer_options"]
    assert torch.equal(_sample(model, pos, neg), before)
    # and the same node with a factor that exists runs
    assert torch.isfinite(_sample(make(model, clip, 4), pos, neg)).all()


def test_spatial_on_a_decoder_without_its_layers_says_what_is_missing(pack):
    """A UNet whose decoder has no cross-attention at latent/4 (the presence layers): before, the loss ran on
    the latent/2 layers alone, silently."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    from faithful.nodes.spatial import SpatialAlignmentLoss
    cfg = copy.deepcopy(tiny.SD1_CONFIG)
    cfg["transformer_depth_output"] = [1, 1, 1, 1, 0, 0]  # listed from the highest resolution: latent/4 has none
    conf = sm.SD15(cfg)
    conf.unet_config.update(num_heads=8, num_head_channels=-1)
    conf.set_inference_dtype(torch.float32, None)
    model = conf.get_model({})
    tiny.init_weights(model.diffusion_model, 0)
    mp = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                          offload_device=mm.unet_offload_device())
    m = SpatialAlignmentLoss.execute(mp, tiny.TokenizerClip(), "a car to the left of a dog", "car left of dog").args[0]
    with pytest.raises(ValueError) as err:
        _sample(m, tiny.random_cond(seed=1), tiny.random_cond(seed=2))
    msg = str(err.value)
    assert msg.startswith("Spatial Alignment Loss reads the decoder's cross-attention at latent/4 (8x8 maps"), msg
    assert "decoder has cross-attention at latent/1, latent/2" in msg and "'model' input" in msg, msg
