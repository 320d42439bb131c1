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
