"""Attend-and-Excite through the stock sampler on a tiny random SD1-architecture model (in-process)."""
import pytest
import torch

from tools import tiny


def _sample(model, positive, negative, seed=0, steps=10, sampler="euler", scheduler="normal", cfg=5.0, size=32,
            denoise_mask=None, latent=None):
    import comfy.sample
    lat = torch.zeros(1, 4, size, size) if latent is None else latent
    noise = comfy.sample.prepare_noise(lat, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, lat,
                               denoise=1.0, noise_mask=denoise_mask, seed=seed, disable_pbar=True)


def _excite(pack, model, clip, scale=20.0, **kw):
    from faithful.nodes.excite import ExciteTokens
    out = ExciteTokens.execute(model, clip, "a cat and a frog", "cat, frog", scale_factor=scale,
                               attention_factor=2, **kw)
    return out.args[0] if hasattr(out, "args") else out[0]


@pytest.fixture(scope="module")
def setup(pack):
    model = tiny.build_model("sd1", seed=1)
    clip = tiny.TokenizerClip()
    pos = tiny.random_cond(seed=3)
    neg = tiny.random_cond(seed=4)
    return model, clip, pos, neg


def _registry(m):
    from faithful.nodes.runtime import REGISTRY_KEY
    return m.model_options["transformer_options"][REGISTRY_KEY]


def test_loss_falls_and_peak_attention_rises(setup, pack):
    model, clip, pos, neg = setup
    guided = _excite(pack, model, clip, scale=20.0, iterative_refinement=False)
    probe = _excite(pack, model, clip, scale=0.0, iterative_refinement=False)  # measures, never moves
    _sample(guided, pos, neg, seed=7)
    _sample(probe, pos, neg, seed=7)
    g = [r["losses"]["attend_and_excite"][0] for r in _registry(guided).last_report]
    u = [r["losses"]["attend_and_excite"][0] for r in _registry(probe).last_report]
    assert len(g) == len(u) == 5  # first half of 10 steps
    print("guided", g, "\nunguided", u)
    assert g[0] == pytest.approx(u[0], abs=1e-6)  # same start: the first loss is measured before any update
    assert g[-1] < g[0] - 1e-3  # the loss falls over the guided steps
    assert sum(g[1:]) < sum(u[1:])  # peak attention higher (loss lower) than the same seed unguided
    assert all(r["backward_passes"] == 1 for r in _registry(guided).last_report)


def test_guidance_changes_image_and_input_model_untouched(setup, pack):
    model, clip, pos, neg = setup
    plain1 = _sample(model, pos, neg, seed=11)
    guided = _excite(pack, model, clip)
    out = _sample(guided, pos, neg, seed=11)
    plain2 = _sample(model, pos, neg, seed=11)
    assert torch.equal(plain1, plain2)
    assert (out - plain1).abs().max() > 1e-3


def test_refinement_runs_and_reports(setup, pack):
    model, clip, pos, neg = setup
    m = _excite(pack, model, clip, scale=5.0, refinement_thresholds="0:0.99", max_refinement_steps=3)
    _sample(m, pos, neg, seed=5)
    rep = _registry(m).last_report
    assert rep[0]["refinement_iterations"] == 3  # a 0.99 threshold is never met on random weights: capped at 3
    assert rep[0]["backward_passes"] == 4
    assert all(r["refinement_iterations"] == 0 for r in rep[1:])
