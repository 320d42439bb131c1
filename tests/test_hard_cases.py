"""Hard cases through ComfyUI's own nodes in-process: advanced samplers, other packs' patches, NaN, fp16/bf16."""
import logging

import pytest
import torch

from tools import tiny


def _excite(model, **kw):
    from faithful.nodes.excite import ExciteTokens
    kw.setdefault("attention_factor", 2)
    kw.setdefault("iterative_refinement", False)
    return ExciteTokens.execute(model, tiny.TokenizerClip(), "a cat and a frog", "cat, frog", **kw).args[0]


def _registry(m):
    from faithful.nodes.runtime import REGISTRY_KEY
    return m.model_options["transformer_options"][REGISTRY_KEY]


@pytest.fixture(scope="module")
def sd1(pack):
    return tiny.build_model("sd1", seed=5), tiny.random_cond(seed=1), tiny.random_cond(seed=2)


def _latent(b=1):
    return {"samples": torch.zeros(b, 4, 32, 32)}


def test_ksampler_advanced_with_start_and_end_steps(sd1):
    import nodes as comfy_nodes
    model, pos, neg = sd1
    m = _excite(model)
    ks = comfy_nodes.KSamplerAdvanced()
    first = ks.sample(m, "enable", 3, 8, 5.0, "euler", "normal", pos, neg, _latent(), 0, 4, "enable")[0]
    rep1 = _registry(m).last_report
    second = ks.sample(m, "disable", 3, 8, 5.0, "euler", "normal", pos, neg, first, 4, 8, "disable")[0]
    assert torch.isfinite(second["samples"]).all()
    # Each call has its own run: the schedule covers the first half of the steps that call samples.
    assert [r["step"] for r in rep1] == [0, 1]


def test_sampler_custom_advanced(sd1):
    from comfy_extras import nodes_custom_sampler as cs
    model, pos, neg = sd1
    m = _excite(model)
    guider = cs.CFGGuider.execute(m, pos, neg, 5.0).args[0]
    sampler = cs.KSamplerSelect.execute("dpmpp_2m").args[0]
    sigmas = cs.BasicScheduler.execute(m, "karras", 6, 1.0).args[0]
    noise = cs.RandomNoise.execute(4).args[0]
    out = cs.SamplerCustomAdvanced.execute(noise, guider, sampler, sigmas, _latent()).args[0]
    assert torch.isfinite(out["samples"]).all()
    assert len(_registry(m).last_report) == 3


def test_chains_another_packs_attn2_replace_and_attention_override(sd1):
    """A stand-in for another pack: an attn2 replace on every block and an optimized_attention_override.
    Installed before ours, both must still run (ours chains, never clobbers)."""
    from comfy.ldm.modules.attention import optimized_attention
    from faithful.nodes.runtime import transformer_positions
    model, pos, neg = sd1
    calls = {"replace": 0, "override": 0}

    def other_replace(q, k, v, extra_options):
        calls["replace"] += 1
        return optimized_attention(q, k, v, extra_options["n_heads"])

    def other_override(func, *args, **kwargs):
        calls["override"] += 1
        return func(*args, **kwargs)

    other = model.clone()
    for kind, idx, j in transformer_positions(other):
        other.set_model_attn2_replace(other_replace, kind, idx, j)
    other.model_options["transformer_options"]["optimized_attention_override"] = other_override
    m = _excite(other)
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32)
    comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 1), 4, 5.0, "euler", "normal", pos, neg, lat,
                        seed=1, disable_pbar=True)
    assert calls["replace"] > 0 and calls["override"] > 0
    assert len(_registry(m).last_report) == 2


def test_nan_loss_skips_the_update_and_keeps_sampling(sd1, caplog):
    model, pos, neg = sd1
    m = _excite(model)
    term = _registry(m).terms[0]

    class NaNTerm(type(term)):
        def loss(self, maps, step):
            return super().loss(maps, step) * float("nan")
    term.__class__ = NaNTerm
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32)
    with caplog.at_level(logging.WARNING, logger="faithful"):
        out = comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 2), 4, 5.0, "euler", "normal", pos, neg, lat,
                                  seed=2, disable_pbar=True)
    assert torch.isfinite(out).all()
    rep = _registry(m).last_report
    assert all(r["skipped"] for r in rep)
    assert "non-finite" in caplog.text


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models(pack, dtype):
    model = tiny.build_model("sd1", seed=6, dtype=dtype)
    pos, neg = tiny.random_cond(seed=1), tiny.random_cond(seed=2)
    m = _excite(model)
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32)
    out = comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 3), 4, 5.0, "euler", "normal", pos, neg, lat,
                              seed=3, disable_pbar=True)
    assert torch.isfinite(out).all()
    rep = _registry(m).last_report
    assert len(rep) == 2 and all(r["skipped"] is None for r in rep)


def test_area_conditioning_and_combine_upstream(sd1):
    import nodes as comfy_nodes
    model, pos, neg = sd1
    area = comfy_nodes.ConditioningSetArea().append(tiny.random_cond(seed=9), 128, 128, 0, 0, 1.0)[0]
    both = comfy_nodes.ConditioningCombine().combine(pos, area)[0]
    m = _excite(model)
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32)
    out = comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 4), 4, 5.0, "euler", "normal", both, neg, lat,
                              seed=4, disable_pbar=True)
    assert torch.isfinite(out).all() and len(_registry(m).last_report) == 2


def test_two_guided_runs_back_to_back_do_not_share_state(sd1):
    model, pos, neg = sd1
    a = _excite(model)
    from faithful.nodes.excite import ExciteTokens
    b = ExciteTokens.execute(model, tiny.TokenizerClip(), "a cat and a frog", "cat", attention_factor=2,
                             iterative_refinement=False).args[0]
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32)
    run = lambda m: comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 5), 4, 5.0, "euler", "normal", pos, neg,
                                        lat, seed=5, disable_pbar=True)
    ra1 = run(a)
    rb = run(b)
    ra2 = run(a)
    assert torch.equal(ra1, ra2)
    assert not torch.equal(ra1, rb)
    assert _registry(a) is not _registry(b)
    assert "faithful_run" not in model.model_options["transformer_options"]


def test_chained_methods_share_one_forward_and_one_backward(sd1):
    """Excite Tokens (latent channel) + Spatial Alignment (noise channel) on one model: one backward per step
    for both losses, and each term active exactly on its own steps."""
    from faithful.nodes.excite import ExciteTokens
    from faithful.nodes.spatial import SpatialAlignmentLoss
    model, pos, neg = sd1
    clip = tiny.TokenizerClip()
    prompt = "a car to the left of a dog"
    m = ExciteTokens.execute(model, clip, prompt, "car, dog", attention_factor=2, iterative_refinement=False).args[0]
    m = SpatialAlignmentLoss.execute(m, clip, prompt, "car left of dog").args[0]
    reg = _registry(m)
    assert [t.name for t in reg.terms] == ["attend_and_excite", "infsplign"]
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32)
    comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 6), 6, 5.0, "euler", "normal", pos, neg, lat, seed=6,
                        disable_pbar=True)
    rep = reg.last_report
    assert [r["step"] for r in rep] == list(range(6))
    assert all(r["backward_passes"] == 1 for r in rep)
    assert all(set(r["losses"]) == {"attend_and_excite", "infsplign"} for r in rep[:3])
    assert all(set(r["losses"]) == {"infsplign"} for r in rep[3:])
