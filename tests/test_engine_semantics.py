"""How the guidance update reaches the sampler: every stock sampler, inpainting masks, model families."""
import pytest
import torch

from tools import tiny


def _excite(model, clip=None, prompt="a cat and a frog", subjects="cat, frog", **kw):
    from faithful.nodes.excite import ExciteTokens
    kw.setdefault("attention_factor", 2)
    return ExciteTokens.execute(model, clip or tiny.TokenizerClip(), prompt, subjects, **kw).args[0]


def _report(m):
    from faithful.nodes.runtime import REGISTRY_KEY
    return m.model_options["transformer_options"][REGISTRY_KEY].last_report


def _sample(model, pos, neg, sampler="euler", scheduler="normal", steps=6, seed=0, mask=None, latent=None,
            callback=None, cfg=5.0):
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32) if latent is None else latent
    noise = comfy.sample.prepare_noise(lat, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, pos, neg, lat, noise_mask=mask,
                               seed=seed, disable_pbar=True, callback=callback)


@pytest.fixture(scope="module")
def sd1(pack):
    return tiny.build_model("sd1", seed=2), tiny.random_cond(seed=1), tiny.random_cond(seed=2)


@pytest.mark.parametrize("sampler,scheduler", [("euler", "normal"), ("euler_ancestral", "normal"),
                                               ("dpmpp_2m", "karras"), ("dpmpp_2m_sde", "karras"),
                                               ("ddim", "ddim_uniform"), ("uni_pc", "normal"), ("heun", "normal"),
                                               ("lcm", "sgm_uniform")])
def test_every_stock_sampler_is_guided(sd1, sampler, scheduler):
    model, pos, neg = sd1
    m = _excite(model, iterative_refinement=False)
    plain = _sample(model, pos, neg, sampler, scheduler, seed=3)
    out = _sample(m, pos, neg, sampler, scheduler, seed=3)
    rep = _report(m)
    # The first half of the steps (6; ddim_uniform adds one), each guided exactly once.
    assert [r["step"] for r in rep] == list(range(len(rep))) and len(rep) in (3, 4), rep
    assert all(r["backward_passes"] == 1 for r in rep)
    assert torch.isfinite(out).all()
    assert (out - plain).abs().max() > 1e-4


def test_cfg_one_runs_without_uncond(sd1):
    model, pos, neg = sd1
    m = _excite(model, iterative_refinement=False)
    out = _sample(m, pos, neg, cfg=1.0, seed=4)
    assert torch.isfinite(out).all() and len(_report(m)) == 3


def test_inpainting_update_stays_inside_the_mask(sd1):
    """With a denoise mask, the sampler's x outside the mask must evolve exactly as without guidance (its
    update is m * delta), and inside it must differ."""
    model, pos, neg = sd1
    g = torch.Generator().manual_seed(5)
    latent = torch.randn(1, 4, 32, 32, generator=g) * 0.5
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    xs = {"plain": [], "guided": []}
    for label, mdl in (("plain", model), ("guided", _excite(model, iterative_refinement=False, scale_factor=200.0))):
        _sample(mdl, pos, neg, seed=6, mask=mask, latent=latent,
                callback=lambda i, d, x, t, label=label: xs[label].append(x.clone()))
    outside = (1 - mask).bool().expand(1, 4, 32, 32)
    inside = mask.bool().expand(1, 4, 32, 32)
    for i, (a, b) in enumerate(zip(xs["plain"], xs["guided"])):
        assert torch.equal(a[outside], b[outside]), f"step {i}: guidance leaked outside the mask"
    assert max((a[inside] - b[inside]).abs().max().item() for a, b in zip(xs["plain"], xs["guided"])) > 1e-3


def test_latent_updater_applies_masked_delta_in_place(pack):
    """The proxy moves the sampler's own tensor by mask * delta after the model call."""
    from faithful.nodes.runtime import RunState, Registry, _LatentUpdater
    run = RunState(Registry(), torch.tensor([1.0, 0.0]), (1, 4, 2, 2))
    delta = torch.full((1, 4, 2, 2), 2.0)

    class Inner:
        sigmas = torch.tensor([1.0, 0.0])
        inner_model = None

        def __call__(self, x, sigma, denoise_mask=None, model_options={}, seed=None):
            run.pending_delta = delta
            return x * 0

    x = torch.ones(1, 4, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    _LatentUpdater(Inner(), run)(x, torch.tensor([1.0]), denoise_mask=mask, model_options={})
    assert torch.equal(x, 1 + 2 * mask.expand_as(x))
    assert run.pending_delta is None


def test_batch_of_four_guides_each_sample(pack):
    model = tiny.build_model("sd1", seed=2)
    pos, neg = tiny.random_cond(batch=1, seed=1), tiny.random_cond(batch=1, seed=2)
    m = _excite(model, iterative_refinement=False)
    out = _sample(m, pos, neg, latent=torch.zeros(4, 4, 32, 32), seed=7)
    rep = _report(m)
    assert len(rep[0]["losses"]["attend_and_excite"]) == 4
    assert torch.isfinite(out).all()


def test_sd2_vprediction_and_inference_weights(pack):
    """SD2.x (v-prediction) with weights made inference tensors, as the server leaves them."""
    model = tiny.build_model("sd2", seed=3, inference=True)
    pos, neg = tiny.random_cond(seed=1), tiny.random_cond(seed=2)
    m = _excite(model, iterative_refinement=False)
    with torch.inference_mode():
        out = _sample(m, pos, neg, seed=8)
    assert torch.isfinite(out).all() and len(_report(m)) == 3


def test_sdxl_two_encoders(pack):
    model = tiny.build_model("sdxl", seed=4)
    clip = tiny.TokenizerClip("sdxl")
    pos = tiny.random_cond(seed=1, pooled=tiny.SDXL_POOLED)
    neg = tiny.random_cond(seed=2, pooled=tiny.SDXL_POOLED)
    m = _excite(model, clip, iterative_refinement=False, attention_factor=4)
    plain = _sample(model, pos, neg, seed=9)
    out = _sample(m, pos, neg, seed=9)
    assert len(_report(m)) == 3 and (out - plain).abs().max() > 1e-4


def test_prompt_mismatch_is_a_clear_error(sd1):
    model, pos, neg = sd1
    long_prompt = "with many many words " * 20 + "and a frog"  # two chunks (154 tokens), frog in the second
    m = _excite(model, prompt=long_prompt, subjects="frog")
    with pytest.raises(ValueError, match="not the prompt of the sampler's positive conditioning"):
        _sample(m, pos, neg, seed=1)


def test_unsupported_family_is_a_clear_error(pack):
    flux = tiny.build_flux()
    with pytest.raises(ValueError, match="supports SD1.x, SD2.x and SDXL") as e:
        _excite(flux)
    assert "Flux" in str(e.value)
