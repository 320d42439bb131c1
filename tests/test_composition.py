"""Composition and isolation: nodes of one kind chained on one model, upstream models and cached outputs never
changed by a downstream node (on every host: ComfyUI 0.33+ shares non-dict objects between clones), and run
reports kept per run."""
import pytest
import torch

from tools import tiny


def _registry(m):
    from faithful.nodes.runtime import REGISTRY_KEY
    return m.model_options["transformer_options"][REGISTRY_KEY]


def _excite(model, subjects, prompt="a cat and a frog", **kw):
    from faithful.nodes.excite import ExciteTokens
    kw.setdefault("attention_factor", 2)
    kw.setdefault("iterative_refinement", False)
    return ExciteTokens.execute(model, tiny.TokenizerClip(), prompt, subjects, **kw).args[0]


def _spatial(model, relations, prompt="a car to the left of a dog above a cat", **kw):
    from faithful.nodes.spatial import SpatialAlignmentLoss
    return SpatialAlignmentLoss.execute(model, tiny.TokenizerClip(), prompt, relations, **kw).args[0]


def _sample(model, pos, neg, seed=0, steps=4, sampler="euler"):
    import comfy.sample
    lat = torch.zeros(1, 4, 32, 32)
    return comfy.sample.sample(model, comfy.sample.prepare_noise(lat, seed), steps, 5.0, sampler, "normal", pos, neg,
                               lat, seed=seed, disable_pbar=True)


@pytest.fixture(scope="module")
def sd1(pack):
    return tiny.build_model("sd1", seed=2), tiny.random_cond(seed=1), tiny.random_cond(seed=2)


# -- two nodes of one kind --------------------------------------------------------------------------------------

def test_two_excite_tokens_nodes_keep_both_terms(sd1):
    """Excite("cat") -> Excite("frog"): both losses are reported apart, and each equals that term's loss alone at
    the first guided step (same latent): the second term no longer replaces the first."""
    model, pos, neg = sd1
    cat = _excite(model, "cat")
    both = _excite(cat, "frog")
    frog = _excite(model, "frog")
    runs = {}
    for name, m in (("cat", cat), ("frog", frog), ("both", both)):
        _sample(m, pos, neg, seed=7)
        runs[name] = _registry(m).last_report
    first = runs["both"][0]["losses"]
    assert set(first) == {"attend_and_excite", "attend_and_excite#2"}, first
    assert first["attend_and_excite"] == pytest.approx(runs["cat"][0]["losses"]["attend_and_excite"], abs=1e-6)
    assert first["attend_and_excite#2"] == pytest.approx(runs["frog"][0]["losses"]["attend_and_excite"], abs=1e-6)
    assert all(r["backward_passes"] == 1 for r in runs["both"])


def test_two_excite_nodes_give_the_sum_of_both_gradients(sd1):
    """The engine's update for two chained terms is the update of the summed loss: the same as one engine given
    both terms, and different from either term alone."""
    from faithful.guidance_core.engine import GuidanceEngine, StepInfo
    from faithful.guidance_core.maps import MapStore
    model, pos, neg = sd1
    both = _excite(_excite(model, "cat"), "frog")
    t_cat, t_frog = _registry(both).terms
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    w = torch.randn(4, 16, generator=g)

    def forward(leaf, selectors, stop_after):
        # A differentiable stand-in for the UNet's cross-attention at 4x4 (factor 2 of an 8x8 latent).
        store = MapStore(selectors, (8, 8), None)
        pooled = torch.nn.functional.avg_pool2d(leaf, 2)  # (1, 4, 4, 4)
        logits = torch.einsum("bchw,ct->bhwt", pooled, w) * 3.0
        probs = torch.cat([logits, torch.zeros(1, 4, 4, 61)], -1).softmax(-1)
        info = store.classify("output", 1, 0, 2)
        if info.wanted:
            store.add(info, probs, 8)
        return store

    step = StepInfo(i=0, n=4, sigma=torch.tensor([1.0]), sigma_next=0.5, c_in=torch.ones(1, 1, 1, 1))
    d_both = GuidanceEngine([t_cat, t_frog]).step(forward, x, step).delta_x
    d_cat = GuidanceEngine([t_cat]).step(forward, x, step).delta_x
    d_frog = GuidanceEngine([t_frog]).step(forward, x, step).delta_x
    assert torch.allclose(d_both, d_cat + d_frog, atol=1e-6)
    assert not torch.allclose(d_both, 2 * d_frog, atol=1e-6)


def test_two_spatial_nodes_guide_two_relations(sd1):
    model, pos, neg = sd1
    m = _spatial(_spatial(model, "car left of dog"), "dog above cat")
    _sample(m, pos, neg, seed=3)
    rep = _registry(m).last_report
    assert rep and set(rep[0]["losses"]) == {"infsplign", "infsplign#2"}
    assert rep[0]["losses"]["infsplign"] != rep[0]["losses"]["infsplign#2"]


# -- isolation between clones (ComfyUI 0.33 shares non-dict objects in model_options) ---------------------------

def test_upstream_model_is_unchanged_by_a_downstream_node(sd1):
    model, pos, neg = sd1
    up = _excite(model, "cat")
    before = list(_registry(up).terms)
    down = _spatial(up, "car left of dog")
    again = _spatial(up, "car left of dog")  # the cached upstream output reused with a new downstream node
    assert _registry(up).terms == before
    assert len(_registry(down).terms) == 2 and len(_registry(again).terms) == 2
    assert _registry(down) is not _registry(up) and _registry(again) is not _registry(down)


def test_two_branches_from_one_guided_model_stay_independent(sd1):
    model, pos, neg = sd1
    up = _excite(model, "cat")
    a = _excite(up, "frog")
    b = _spatial(up, "car left of dog")
    assert [t.name for t in _registry(a).terms] == ["attend_and_excite", "attend_and_excite"]
    assert [t.name for t in _registry(b).terms] == ["attend_and_excite", "infsplign"]
    # Sampling a branch leaves the upstream model's own run unchanged, bit for bit.
    ref = _sample(up, pos, neg, seed=11)
    _sample(a, pos, neg, seed=11)
    _sample(b, pos, neg, seed=11)
    assert torch.equal(_sample(up, pos, neg, seed=11), ref)
    assert len(_registry(up).last_report[0]["losses"]) == 1


def test_install_copies_the_registry_whatever_the_host_clone_copies(sd1):
    """Even if a host's clone passed model_options' objects by reference (0.33's deepcopy_list_dict passes every
    non-dict, non-list object), the node's registry is its own."""
    from faithful.nodes.runtime import REGISTRY_KEY, Registry, install
    model, _, _ = sd1
    up, reg_up = install(model)
    shared = up.clone()
    shared.model_options["transformer_options"][REGISTRY_KEY] = reg_up  # what 0.33's clone leaves
    down, reg_down = install(shared)
    reg_down.terms.append(object())
    assert isinstance(reg_down, Registry) and reg_down is not reg_up and reg_up.terms == []


# -- per-run reports --------------------------------------------------------------------------------------------

def test_two_samplers_sharing_one_guided_model_keep_their_own_reports(sd1):
    model, pos, neg = sd1
    m = _excite(model, "cat, frog")
    out1 = _sample(m, pos, neg, seed=21)
    rep1 = _registry(m).report_for(out1)
    out2 = _sample(m, pos, neg, seed=22)
    reg = _registry(m)
    assert reg.report_for(out1) == rep1 and reg.report_for(out2) == reg.last_report
    assert reg.report_for(out1) != reg.report_for(out2)


def test_preview_shows_the_run_of_its_latent(sd1):
    from faithful.nodes.preview import AttentionMapPreview, RecordAttention, _recorder
    model, pos, neg = sd1
    rec = RecordAttention.execute(model, tiny.TokenizerClip(), "a cat and a frog", "cat, frog",
                                  attention_factor=2).args[0]
    out1 = _sample(rec, pos, neg, seed=31)
    maps1 = _recorder(rec).result["maps"].clone()
    out2 = _sample(rec, pos, neg, seed=32)
    assert not torch.equal(_recorder(rec).result["maps"], maps1)
    images = torch.zeros(1, 32, 32, 3)
    grid1 = AttentionMapPreview.execute(rec, images, latent={"samples": out1}).args[0]
    grid2 = AttentionMapPreview.execute(rec, images, latent={"samples": out2}).args[0]
    newest = AttentionMapPreview.execute(rec, images).args[0]
    assert torch.equal(newest, grid2) and not torch.equal(grid1, grid2)
    with pytest.raises(ValueError, match="no recorded run"):
        AttentionMapPreview.execute(rec, images, latent={"samples": out1 + 1})


def test_guidance_pass_keeps_its_gradient_under_an_upstream_attention_override(sd1):
    """An upstream attention backend (ModelAttentionBackend, a quantised kernel) with no backward must not cut the
    guidance gradient: the with-grad pass uses exact fused attention; the sampler's own passes keep the override."""
    model, pos, neg = sd1
    calls = {"n": 0}

    def no_backward(func, *args, **kwargs):
        calls["n"] += 1
        return func(*args, **kwargs).detach()

    other = model.clone()
    other.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = no_backward
    m = _excite(other, "cat, frog")
    plain = _sample(other, pos, neg, seed=51)
    out = _sample(m, pos, neg, seed=51)
    rep = _registry(m).last_report
    assert calls["n"] > 0 and rep and all(r["skipped"] is None for r in rep)
    assert (out - plain).abs().max() > 1e-4
