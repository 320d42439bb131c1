"""Layout Regions (DenseDiffusion): attention mass moves into the regions; the node end to end; bad input."""
import json

import pytest
import torch

from tools import tiny

LAYOUT = {"width": 256, "height": 256, "regions": [
    {"x": 0.0, "y": 0.0, "w": 0.5, "h": 1.0, "phrase": "a cat"},
    {"x": 0.5, "y": 0.0, "w": 0.5, "h": 1.0, "phrase": "a dog"}]}
PROMPT = "a cat and a dog in a garden"


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint, pack):
    import comfy.sd
    out = comfy.sd.load_checkpoint_guess_config(tiny_checkpoint, output_vae=False, output_clip=True)
    return out[0], out[1]


def _capture_qk(model, pos, neg, latent=32):
    """Real queries and keys of one 16x16 cross-attention layer (cond and uncond rows) from a tiny model."""
    from faithful.nodes.runtime import install
    m, reg = install(model)
    got = {}

    def observer(q, k, extra_options, score_fn=None):
        if "q" not in got and q.shape[1] == (latent // 2) ** 2:
            got.update(q=q.detach().clone(), k=k.detach().clone(), eo=dict(extra_options))
    reg.observers.append(observer)
    import comfy.sample
    lat = torch.zeros(1, 4, latent, latent)
    comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 0), 1, 5.0, "euler", "normal", pos, neg, lat, seed=0,
                        disable_pbar=True)
    return got


def _mass_inside(probs, mask_flat, cols):
    """Fraction of the attention to ``cols`` that lies inside the mask: probs (N, T)."""
    p = probs[:, cols].sum(-1)
    return float((p * mask_flat).sum() / p.sum())


def test_region_mass_rises_in_cross_and_self_attention(pack):
    from faithful.guidance_core.dense import masks_from_layout, masks_for_resolution
    from faithful.nodes.layout import DenseModulation
    from faithful.nodes.runtime import RunState, Registry
    model = tiny.build_model("sd1", seed=7)
    got = _capture_qk(model, tiny.random_cond(seed=1), tiny.random_cond(seed=2))
    q, k, eo = got["q"], got["k"], got["eo"]
    assert eo["cond_or_uncond"] and 0 in eo["cond_or_uncond"]
    masks, phrases = masks_from_layout(LAYOUT)
    token_sets = [[1, 2], [4, 5]]  # "a cat", "a dog" in "a cat and a dog ..."
    ms = model.get_model_object("model_sampling")
    mod = DenseModulation(masks, token_sets, k.shape[1], ms)
    sigma = float(eo["sigmas"].flatten()[0])
    run = RunState(Registry(), torch.tensor([sigma, sigma / 2, sigma / 4, sigma / 8, 0.0]), (1, 4, 32, 32))  # step 0 of 4
    bound = mod.bind(run)
    heads = 1  # with one head and v = identity, the attention output IS the probability matrix
    n, t = q.shape[1], k.shape[1]
    eye = torch.eye(t)[None].expand(q.shape[0], t, t)
    default = lambda q_, k_, v_, e_: (q_.float() @ k_.float().transpose(1, 2) / q_.shape[-1] ** 0.5).softmax(-1) @ v_.float()
    opts = dict(eo, n_heads=heads)
    # cross-attention: project queries to the key width so the toy single head is well defined
    qc = q[..., :t] if q.shape[-1] >= t else torch.nn.functional.pad(q, (0, t - q.shape[-1]))
    kc = k[..., :t] if k.shape[-1] >= t else torch.nn.functional.pad(k, (0, t - k.shape[-1]))
    before = default(qc, kc, eye, opts)
    after = bound("attn2", qc, kc, eye, opts, default)
    rows = [c for c, u in enumerate(eo["cond_or_uncond"]) if u == 0]
    per = q.shape[0] // len(eo["cond_or_uncond"])
    m16 = masks_for_resolution(masks, 16, 16).reshape(2, -1)
    report = {}
    for r, (mask, cols) in enumerate(zip(m16, token_sets)):
        b = _mass_inside(before[rows[0] * per], mask, cols)
        a = _mass_inside(after[rows[0] * per], mask, cols)
        report[phrases[r]] = (round(b, 3), round(a, 3))
        assert a > b + 0.1, report
    # uncond rows are untouched
    un = [c for c, u in enumerate(eo["cond_or_uncond"]) if u != 0]
    for c in un:
        assert torch.equal(after[c * per:(c + 1) * per], before[c * per:(c + 1) * per])
    # self-attention: pixels attend more to their own segment
    eye_n = torch.eye(n)[None].expand(q.shape[0], n, n)
    sb = default(q, q, eye_n, opts)
    sa = bound("attn1", q, q, eye_n, opts, default)
    c0 = rows[0] * per
    same = (m16.T @ m16).clamp(max=1)  # (N, N) 1 where two pixels share a segment
    within_b = float((sb[c0] * same).sum() / n)
    within_a = float((sa[c0] * same).sum() / n)
    report["self-attention within segment"] = (round(within_b, 3), round(within_a, 3))
    print(report)
    assert within_a > within_b + 0.05


def test_node_end_to_end_and_conditioning_splice(ckpt):
    import comfy.sample
    from faithful.nodes.layout import LayoutRegions
    model, clip = ckpt
    out = LayoutRegions.execute(model, clip, PROMPT, json.dumps(LAYOUT))
    m, cond = out.args[0], out.args[1]
    plain_cond, _ = clip.encode_from_tokens(clip.tokenize(PROMPT), return_pooled=True)
    cat = clip.encode_from_tokens(clip.tokenize("a cat"))
    assert torch.allclose(cond[0][0][:, 1:3], cat[:, 1:3])  # the phrase's own embeddings over "a cat"
    assert torch.equal(cond[0][0][:, 3], plain_cond[:, 3])  # "and" untouched
    neg = [[clip.encode_from_tokens(clip.tokenize("")), {}]]
    lat = torch.zeros(1, 4, 32, 32)
    noise = comfy.sample.prepare_noise(lat, 3)
    a = comfy.sample.sample(m, noise, 4, 5.0, "euler", "normal", cond, neg, lat, seed=3, disable_pbar=True)
    b = comfy.sample.sample(model, noise, 4, 5.0, "euler", "normal", cond, neg, lat, seed=3, disable_pbar=True)
    assert torch.isfinite(a).all() and (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("layout,phrases,message", [
    ({"width": 256, "height": 256, "regions": [{"x": 0, "y": 0, "w": 0.5, "h": 1, "phrase": "a horse"}]}, "",
     "'a horse' of box 1 'a horse' is not in the prompt"),
    ({"width": 256, "height": 256, "regions": [{"x": 0.5, "y": 0.5, "w": 0, "h": 0, "phrase": "a cat"}]}, "",
     "is empty"),
    ({"width": 256, "height": 256, "regions": []}, "", "no regions"),
    ({"width": 256, "height": 256, "regions": [{"x": 0, "y": 0, "w": 1, "h": 1, "phrase": ""}]}, "", "has no phrase"),
    ("{broken", "", "not valid JSON"),
    ({"width": 256, "height": 256, "regions": {"x": 0, "phrase": "a cat"}}, "", '"regions" must be a list'),
    ('{"regions": [{"x": NaN, "y": 0, "w": 0.5, "h": 1, "phrase": "a cat"}]}', "", "x = NaN"),
    ('{"regions": [{"x": 0, "y": 0, "w": Infinity, "h": 1, "phrase": "a cat"}]}', "", "w = Infinity"),
    ({"width": 1e9, "height": 1e9, "regions": [{"x": 0, "y": 0, "w": 0.5, "h": 1, "phrase": "a cat"}]}, "",
     '"width" must be a number of pixels from 1 to 16384'),
    ("[" * 100000, "", "nested too deeply"),
    ({"width": 256, "height": 256, "regions": [{"x": 0, "y": 0, "w": 0.5, "h": 1, "phrase": "a cat"}] * 100}, "",
     "100 regions, at most 64"),
])
def test_bad_layouts_are_clear_errors(ckpt, layout, phrases, message):
    from faithful.nodes.layout import LayoutRegions
    model, clip = ckpt
    text = layout if isinstance(layout, str) else json.dumps(layout)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        LayoutRegions.execute(model, clip, PROMPT, text)


def test_masks_input_and_wrong_aspect(ckpt):
    import comfy.sample
    from faithful.nodes.layout import LayoutRegions
    model, clip = ckpt
    masks = torch.zeros(2, 64, 64)
    masks[0, :, :32] = 1
    masks[1, :, 32:] = 1
    with pytest.raises(ValueError, match="2 masks but 1 mask phrases"):
        LayoutRegions.execute(model, clip, PROMPT, "", masks=masks, mask_phrases="a cat")
    m, cond = LayoutRegions.execute(model, clip, PROMPT, "", masks=masks, mask_phrases="a cat\na dog").args
    lat = torch.zeros(1, 4, 32, 64)  # 2:1 image for 1:1 masks
    with pytest.raises(ValueError, match="aspect ratio"):
        comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 1), 2, 5.0, "euler", "normal", cond,
                            [[torch.zeros_like(cond[0][0]), {}]], lat, seed=1, disable_pbar=True)


def test_recorded_maps_show_the_modulated_attention(ckpt):
    """Record Attention on a Layout Regions model reads the probabilities the model used (modulated), so the
    preview shows each phrase's attention moving into its box; the plain model's recording is the control."""
    import comfy.sample
    from faithful.guidance_core.dense import masks_for_resolution, masks_from_layout
    from faithful.nodes.layout import LayoutRegions
    from faithful.nodes.preview import RecordAttention, _recorder
    model, clip = ckpt
    guided, cond = LayoutRegions.execute(model, clip, PROMPT, json.dumps(LAYOUT)).args
    neg = [[clip.encode_from_tokens(clip.tokenize("")), {}]]
    lat = torch.zeros(1, 4, 32, 32)
    inside = {}
    for name, m in (("plain", model), ("layout", guided)):
        rec_model = RecordAttention.execute(m, clip, PROMPT, "cat, dog", 0.0, 0.3, 2).args[0]
        comfy.sample.sample(rec_model, comfy.sample.prepare_noise(lat, 5), 4, 5.0, "euler", "normal", cond, neg, lat,
                            seed=5, disable_pbar=True)
        maps = _recorder(rec_model).result["maps"][0]  # (2, 16, 16): cat, dog
        masks = masks_for_resolution(masks_from_layout(LAYOUT)[0], 16, 16)
        inside[name] = [float((mp * mk).sum() / mp.sum()) for mp, mk in zip(maps, masks)]
    print(inside)
    for r in range(2):
        assert inside["layout"][r] > inside["plain"][r] + 0.1, inside


def _probs(mod, which, q, k, latent_hw, sigma_index=0, n_steps=10):
    """One modulated attention call through the registry's modulation, one head, v = identity: the output IS
    the (B, N, T) probability matrix. The schedule is the tiny model's 'normal' one; returns (probs, lambda)."""
    import comfy.samplers
    from faithful.guidance_core.dense import time_decay
    from faithful.nodes.runtime import Registry, RunState
    ms = mod.model_sampling
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", n_steps)
    run = RunState(Registry(), sigmas, (1, 4, *latent_hw))
    sigma = sigmas[sigma_index:sigma_index + 1]
    eo = {"sigmas": sigma, "original_shape": [1, 4, *latent_hw], "cond_or_uncond": [0], "n_heads": 1}
    t = k.shape[1]
    default = lambda q_, k_, v_, e_: (q_ @ k_.transpose(1, 2) / q_.shape[-1] ** 0.5).softmax(-1) @ v_
    out = mod.bind(run)(which, q, k, torch.eye(t)[None], eo, default)
    return out, time_decay(float(ms.timestep(sigma)[0]))


def _scores(q, k):
    return q[0] @ k[0].T / q.shape[-1] ** 0.5


def test_background_segment_in_the_node(ckpt):
    """The default layout leaves 40% of the image uncovered. Those pixels are one more segment: in cross-
    attention their row is lowered toward its minimum only by s = 1 - |background| / P (weak for a large
    background, not the full strength), and in self-attention they attend to each other."""
    from faithful.nodes.layout import DEFAULT_LAYOUT, LayoutRegions
    from faithful.nodes.runtime import REGISTRY_KEY
    model, clip = ckpt
    mod = LayoutRegions.execute(model, clip, PROMPT, DEFAULT_LAYOUT).args[0].model_options[
        "transformer_options"][REGISTRY_KEY].modulations[0]
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 64, 77, generator=g), torch.randn(1, 77, 77, generator=g)
    # 8x8 latent: the cat box covers rows 2..6, columns 0..3; background = rows 0, 1 and 7 (24 of 64 pixels)
    probs, lam = _probs(mod, "attn2", q, k, (8, 8))
    S = _scores(q, k)
    s_bg = 1 - 24 / 64
    want = S - lam * 1.0 * s_bg * (S - S.amin(-1, keepdim=True))
    assert torch.allclose(probs[0, 0], want[0].softmax(-1), atol=1e-5)            # pixel (0, 0): background
    s_cat = 1 - 20 / 64
    Rc = torch.zeros(77)
    Rc[[1, 2]] = 1                                                                 # "a cat"
    want_cat = S[16] + lam * s_cat * (Rc * (S[16].max() - S[16]) - (1 - Rc) * (S[16] - S[16].min()))
    assert torch.allclose(probs[0, 16], want_cat.softmax(-1), atol=1e-5)          # pixel (2, 0): in the cat box
    # self-attention: background pixel (0, 0) is pulled toward the other background pixels
    qs = torch.randn(1, 64, 64, generator=g)
    sp, lam = _probs(mod, "attn1", qs, qs, (8, 8))
    Ss = _scores(qs, qs)[0]
    R = torch.zeros(64)
    R[:16] = 1
    R[56:] = 1
    want_self = Ss + lam * 0.3 * s_bg * (R * (Ss.max() - Ss) - (1 - R) * (Ss - Ss.min()))
    assert torch.allclose(sp[0, 0], want_self.softmax(-1), atol=1e-5)


def test_background_phrase(ckpt):
    """An explicit background phrase: its words attend to the uncovered pixels, and it is spliced like the
    region phrases; from the node input or the layout's "background" key; refused when not in the prompt or
    when the regions leave no background."""
    from faithful.nodes.layout import DEFAULT_LAYOUT, LayoutRegions
    from faithful.nodes.runtime import REGISTRY_KEY
    model, clip = ckpt
    m, cond = LayoutRegions.execute(model, clip, PROMPT, DEFAULT_LAYOUT, background="a garden").args
    mod = m.model_options["transformer_options"][REGISTRY_KEY].modulations[0]
    assert mod.background_tokens == [7, 8]  # "a garden" in "a cat and a dog in a garden"
    own = clip.encode_from_tokens(clip.tokenize("a garden"))
    assert torch.allclose(cond[0][0][:, 7:9], own[:, 1:3])
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(1, 64, 77, generator=g), torch.randn(1, 77, 77, generator=g)
    probs, lam = _probs(mod, "attn2", q, k, (8, 8))
    S = _scores(q, k)[0]
    R = torch.zeros(77)
    R[[7, 8]] = 1
    want = S + lam * (1 - 24 / 64) * (R * (S.max() - S) - (1 - R) * (S - S.min()))
    assert torch.allclose(probs[0, 0], want.softmax(-1), atol=1e-5)
    via_json = json.dumps(dict(json.loads(DEFAULT_LAYOUT), background="a garden"))
    mod2 = LayoutRegions.execute(model, clip, PROMPT, via_json).args[0].model_options[
        "transformer_options"][REGISTRY_KEY].modulations[0]
    assert mod2.background_tokens == [7, 8]
    with pytest.raises(ValueError, match="'a horse' of the background is not in the prompt"):
        LayoutRegions.execute(model, clip, PROMPT, DEFAULT_LAYOUT, background="a horse")
    full = LayoutRegions.execute(model, clip, PROMPT, json.dumps(LAYOUT), background="a garden").args[0]
    with pytest.raises(ValueError, match="background phrase .* has no pixels"):
        _probs(full.model_options["transformer_options"][REGISTRY_KEY].modulations[0], "attn2", q, k, (8, 8))


def test_two_layout_nodes_merge_into_one_modulation(ckpt):
    """Layout Regions -> Layout Regions on one model acts as one node with both nodes' regions: one modulation
    in the registry, the same attention through the real attention patch, and the later node's CONDITIONING
    splices every phrase. Different prompts or strengths are refused with a clear error."""
    from faithful.nodes.layout import LayoutRegions
    from faithful.nodes.runtime import REGISTRY_KEY, RUN_KEY, AttentionPatch, RunState
    import comfy.samplers
    model, clip = ckpt
    cat, dog = LAYOUT["regions"]
    one = dict(LAYOUT, regions=[dict(cat, y=0.2, h=0.5), dog])
    single, cond_single = LayoutRegions.execute(model, clip, PROMPT, json.dumps(one)).args
    first = LayoutRegions.execute(model, clip, PROMPT, json.dumps(dict(one, regions=one["regions"][:1]))).args[0]
    chained, cond_chained = LayoutRegions.execute(first, clip, PROMPT, json.dumps(dict(one, regions=[dog]))).args
    reg = chained.model_options["transformer_options"][REGISTRY_KEY]
    assert len(reg.modulations) == 1 and reg.modulations[0].token_sets == [[1, 2], [4, 5]]
    assert torch.equal(cond_chained[0][0], cond_single[0][0])
    g = torch.Generator().manual_seed(6)
    for which, dk in (("attn2", 77), ("attn1", 64)):
        q = torch.randn(1, 64, dk, generator=g)
        k = torch.randn(1, 77 if which == "attn2" else 64, dk, generator=g)
        v = torch.eye(k.shape[1])[None]
        outs = []
        for m in (single, chained, first):
            r = m.model_options["transformer_options"][REGISTRY_KEY]
            sig = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 10)
            eo = {"sigmas": sig[:1], "original_shape": [1, 4, 8, 8], "cond_or_uncond": [0], "n_heads": 1,
                  RUN_KEY: RunState(r, sig, (1, 4, 8, 8))}
            outs.append(AttentionPatch(which)(q, k, v, eo))
        assert torch.allclose(outs[0], outs[1], atol=1e-6), which
        assert not torch.allclose(outs[0], outs[2], atol=1e-3), which  # the dog region really acts
    with pytest.raises(ValueError, match="different prompt"):
        LayoutRegions.execute(first, clip, "a dog and a cat", json.dumps(dict(one, regions=[dog])))
    with pytest.raises(ValueError, match=r"different w_cross \(1 and 0.5\)"):
        LayoutRegions.execute(first, clip, PROMPT, json.dumps(dict(one, regions=[dog])), w_cross=0.5)


def test_boxes_follow_a_non_square_latent(ckpt):
    """Boxes drawn on the default square canvas are fractions laid onto whatever latent the sampler gets:
    a 192x128 image (latent 24x16) samples, the modulation changes the result, and the cat box covers the
    left half of that latent."""
    import comfy.sample
    from faithful.nodes.layout import DEFAULT_LAYOUT, LayoutRegions
    from faithful.nodes.runtime import REGISTRY_KEY
    model, clip = ckpt
    m, cond = LayoutRegions.execute(model, clip, PROMPT, DEFAULT_LAYOUT).args
    neg = [[clip.encode_from_tokens(clip.tokenize("")), {}]]
    lat = torch.zeros(1, 4, 16, 24)
    noise = comfy.sample.prepare_noise(lat, 2)
    a = comfy.sample.sample(m, noise, 2, 5.0, "euler", "normal", cond, neg, lat, seed=2, disable_pbar=True)
    b = comfy.sample.sample(model, noise, 2, 5.0, "euler", "normal", cond, neg, lat, seed=2, disable_pbar=True)
    assert torch.isfinite(a).all() and (a - b).abs().max() > 1e-4
    masks = m.model_options["transformer_options"][REGISTRY_KEY].modulations[0].masks_at((16, 24))
    want = torch.zeros(16, 24)
    want[4:14, :12] = 1  # y 0.25..0.85 of 16 rows, x 0..0.5 of 24 columns
    assert torch.equal(masks[0], want)


def test_wrong_aspect_mask_with_a_drawn_box(ckpt):
    """A 2:1 painted MASK next to a drawn box on a square image is refused at the first step, naming the
    masks input (it used to be stretched silently to the box layout's canvas)."""
    import comfy.sample
    from faithful.nodes.layout import LayoutRegions
    model, clip = ckpt
    box = {"width": 256, "height": 256, "regions": [LAYOUT["regions"][0]]}
    mask = torch.zeros(1, 32, 64)
    mask[0, :, 32:] = 1
    m, cond = LayoutRegions.execute(model, clip, PROMPT, json.dumps(box), masks=mask, mask_phrases="a dog").args
    lat = torch.zeros(1, 4, 32, 32)
    with pytest.raises(ValueError, match=r"masks input's masks \(mask 1 'a dog'\) are 64x32 but the image is 256x256"):
        comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 1), 1, 5.0, "euler", "normal", cond,
                            [[torch.zeros_like(cond[0][0]), {}]], lat, seed=1, disable_pbar=True)


def test_lambda_follows_the_schedulers_timesteps(ckpt):
    """lambda(t) = (t/1000)^5 at the model timestep of each step's sigma: with ddim_uniform exactly the
    reference's DDIM-50 values for its 15 modulated steps; karras modulates about 24% more in total."""
    import comfy.samplers
    from faithful.nodes.layout import DenseModulation
    from faithful.nodes.runtime import Registry, RunState
    ms = ckpt[0].get_model_object("model_sampling")
    mod = DenseModulation(torch.ones(1, 8, 8), [[1]], 77, ms)
    total = {}
    for sched in ("ddim_uniform", "karras"):
        sig = comfy.samplers.calculate_sigmas(ms, sched, 50)
        bound = mod.bind(RunState(Registry(), sig, (1, 4, 8, 8)))
        lams = [bound.active_lambda(sig[i:i + 1]) for i in range(50)]
        assert all(x is None for x in lams[15:]) and all(x is not None for x in lams[:15])
        total[sched] = sum(lams[:15])
        if sched == "ddim_uniform":
            assert lams[:15] == pytest.approx([((981 - 20 * i) / 1000) ** 5 for i in range(15)], abs=1e-9)
    print(total)
    assert total["karras"] / total["ddim_uniform"] == pytest.approx(1.242, abs=0.01)
