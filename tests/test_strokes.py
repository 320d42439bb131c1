"""Painted regions (strokes) of a layout: rasterised masks against hand-computed pixels, clear errors for malformed
strokes, and a painted region through Layout Regions on the tiny model moving attention into its mask."""
import json

import pytest
import torch

from guidance_core.dense import masks_from_layout
from guidance_core.strokes import rasterise_strokes


def _grid(rows):
    return torch.tensor([[float(c == "#") for c in row] for row in rows])


def test_horizontal_stroke_covers_the_pixels_within_r():
    # 8x8 latent; the stroke runs along y = 4 (latent px) from x = 2 to x = 6. r = 0.075 * 8 = 0.6 px: pixel
    # centres at y = 3.5 and 4.5 are 0.5 away (in), 2.5 and 5.5 are 1.5 away (out); along x, centres 2.5..5.5
    # project inside the segment, 1.5 and 6.5 are sqrt(0.5) = 0.71 from the end points (out).
    m = rasterise_strokes([{"r": 0.075, "points": [[0.25, 0.5], [0.75, 0.5]]}], 8, 8)
    assert torch.equal(m, _grid(["........",
                                 "........",
                                 "........",
                                 "..####..",
                                 "..####..",
                                 "........",
                                 "........",
                                 "........"]))
    # r = 1 px: the round caps now take the pixels 0.71 px beyond each end point, still two rows (1.5 > 1)
    m = rasterise_strokes([{"r": 0.125, "points": [[0.25, 0.5], [0.75, 0.5]]}], 8, 8)
    assert torch.equal(m, _grid(["........", "........", "........", ".######.", ".######.",
                                 "........", "........", "........"]))


def test_single_point_is_a_disc_and_r_is_a_fraction_of_the_width():
    # centre (4, 4), r = 0.25 * 8 = 2 px: offsets (+-0.5, +-0.5) and (+-0.5, +-1.5) are within 2 (d^2 = 0.5, 2.5),
    # (+-1.5, +-1.5) is not (4.5 > 4), nor is anything 2.5 away: a 4x4 square without its corners, 12 pixels.
    disc = _grid(["........",
                  "........",
                  "...##...",
                  "..####..",
                  "..####..",
                  "...##...",
                  "........",
                  "........"])
    m = rasterise_strokes([{"r": 0.25, "points": [[0.5, 0.5]]}], 8, 8)
    assert torch.equal(m, disc) and m.sum() == 12
    # a 2:1 image (16 wide, 8 high): r = 0.125 of the WIDTH is again 2 px, so the disc stays round
    wide = rasterise_strokes([{"r": 0.125, "points": [[0.5, 0.5]]}], 8, 16)
    assert torch.equal(wide[:, 4:12], disc) and wide.sum() == 12


def test_polyline_equals_dense_discs_along_it():
    """An L-shaped diagonal polyline: exact segment distances agree with discs stamped every 1/2000 of each
    segment (up to pixels within 0.01 px of the brush edge)."""
    pts = [[0.1, 0.15], [0.7, 0.4], [0.35, 0.9]]
    r, h, w = 0.07, 24, 32
    got = rasterise_strokes([{"r": r, "points": pts}], h, w)
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    d2 = torch.full((h, w), float("inf"), dtype=torch.float64)
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
        for t in torch.linspace(0, 1, 2001, dtype=torch.float64):
            cx, cy = (ax + t * (bx - ax)) * w, (ay + t * (by - ay)) * h
            d2 = torch.minimum(d2, (xs - cx) ** 2 + (ys - cy) ** 2)
    rad = r * w
    assert (got[d2 <= (rad - 0.01) ** 2] == 1).all() and (got[d2 > (rad + 0.01) ** 2] == 0).all()
    assert 0 < got.sum() < h * w / 2


def test_layout_regions_boxes_strokes_and_both():
    layout = {"width": 64, "height": 64, "regions": [
        {"x": 0.0, "y": 0.0, "w": 0.25, "h": 0.25, "phrase": "a box"},
        {"strokes": [{"r": 0.125, "points": [[0.75, 0.75]]}], "phrase": " painted "},
        {"x": 0.0, "y": 0.0, "w": 0.25, "h": 0.25, "strokes": [{"r": 0.125, "points": [[0.75, 0.75]]}],
         "phrase": "both"},
        {"strokes": [], "phrase": "nothing painted"}]}
    masks, phrases = masks_from_layout(layout)
    assert masks.shape == (4, 8, 8) and phrases == ["a box", "painted", "both", "nothing painted"]
    box = torch.zeros(8, 8)
    box[0:2, 0:2] = 1
    dot = torch.zeros(8, 8)
    dot[5:7, 5:7] = 1  # r = 1 px around (6, 6): the four centres 0.71 away
    assert torch.equal(masks[0], box)
    assert torch.equal(masks[1], dot)  # no bounding box: the mask comes from the strokes only
    assert torch.equal(masks[2], box + dot)  # the union
    assert masks[3].sum() == 0  # empty: the node then says the region is empty
    # the size argument rasterises the same strokes at another latent size
    assert masks_from_layout(layout, size=(16, 16))[0][1].sum() == 12  # r = 2 px: the 12-pixel disc


@pytest.mark.parametrize("region,message", [
    ({"strokes": {"r": 0.1}}, "region 1: 'strokes' must be a list of strokes like"),
    ({"strokes": [[0.1, 0.2]]}, r"region 1, stroke 1: a stroke must be an object like \{\"r\""),
    ({"strokes": [{"points": [[0.5, 0.5]]}]}, "stroke 1: 'r' must be the brush radius as a fraction of the image "
                                              r"width, a number in \(0, 1\] such as 0.05; got None"),
    ({"strokes": [{"r": 0.1, "points": [[0.5, 0.5]]}, {"r": 0, "points": [[0.5, 0.5]]}]}, "stroke 2: 'r' must be"),
    ({"strokes": [{"r": True, "points": [[0.5, 0.5]]}]}, "'r' must be"),
    ({"strokes": [{"r": 0.1, "points": []}]}, "'points' must be a non-empty list of \\[x, y\\] pairs .* Remove the "
                                              "stroke or add at least one point"),
    ({"strokes": [{"r": 0.1, "points": [[0.5, 0.5], [0.5]]}]}, r"stroke 1, point 2: must be \[x, y\] with two numbers"),
    ({"strokes": [{"r": 0.1, "points": [[0.5, "a"]]}]}, r"point 1: must be \[x, y\]"),
    ({"strokes": [{"r": 0.1, "points": [[120, 40]]}]}, "lies outside the image; x and y are fractions of the image "
                                                       "in 0..1, not pixels"),
    ({"x": 0.1, "strokes": [{"r": 0.1, "points": [[0.5, 0.5]]}]}, "region 1 needs numbers x, y, w, h"),
    ({"phrase": "a cat"}, "region 1 needs numbers x, y, w, h .*or strokes painted with the widget's Paint mode"),
    ("a cat", "region 1 must be an object"),
])
def test_malformed_strokes_are_clear_errors(region, message):
    with pytest.raises(ValueError, match=message) as e:
        masks_from_layout({"width": 64, "height": 64, "regions": [region]})
    assert str(e.value).startswith("Layout Regions: region 1"), e.value


# -- through the node on the tiny model -------------------------------------------------------------------------

PROMPT = "a cat and a dog in a garden"
PAINTED = {"width": 256, "height": 256, "regions": [
    {"phrase": "a cat", "strokes": [{"r": 0.09, "points": [[0.15, 0.15], [0.15, 0.8], [0.45, 0.8]]},
                                    {"r": 0.06, "points": [[0.35, 0.3]]}]},
    {"x": 0.6, "y": 0.1, "w": 0.35, "h": 0.45, "phrase": "a dog"}]}


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint, pack):
    import comfy.sd
    out = comfy.sd.load_checkpoint_guess_config(tiny_checkpoint, output_vae=False, output_clip=True)
    return out[0], out[1]


def test_painted_region_through_layout_regions(ckpt):
    """Layout Regions with a painted region: the node's modulation uses the stroke mask (not its bounding box),
    sampling runs and changes the result, and on the queries and keys of a real 16x16 cross-attention layer the
    share of each phrase's attention inside its region rises."""
    import comfy.sample
    from faithful.guidance_core.attention import attend, attention_scores
    from faithful.guidance_core.dense import masks_for_resolution
    from faithful.guidance_core.dense import masks_from_layout as node_masks
    from faithful.nodes.layout import LayoutRegions
    from faithful.nodes.runtime import REGISTRY_KEY, Registry, RunState, install
    model, clip = ckpt
    guided, cond = LayoutRegions.execute(model, clip, PROMPT, json.dumps(PAINTED)).args
    mod = guided.model_options["transformer_options"][REGISTRY_KEY].modulations[-1]
    expected, _ = node_masks(PAINTED)
    assert torch.equal(mod.masks, expected) and mod.masks.shape == (2, 32, 32)
    cat = mod.masks[0]
    assert cat[4:26, 4:6].all() and cat[24:27, 5:14].all() and cat[9, 11] == 1  # along the L, and the dab
    ys, xs = cat.nonzero(as_tuple=True)
    assert cat.sum() < 0.7 * (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # far less than its bounding box
    neg = [[clip.encode_from_tokens(clip.tokenize("")), {}]]
    lat = torch.zeros(1, 4, 32, 32)
    noise = comfy.sample.prepare_noise(lat, 3)
    a = comfy.sample.sample(guided, noise, 4, 5.0, "euler", "normal", cond, neg, lat, seed=3, disable_pbar=True)
    b = comfy.sample.sample(model, noise, 4, 5.0, "euler", "normal", cond, neg, lat, seed=3, disable_pbar=True)
    assert torch.isfinite(a).all() and (a - b).abs().max() > 1e-4

    # real queries and keys of the first 16x16 cross-attention call of a guided run
    m, reg = install(guided)
    got = {}

    def observer(q, k, extra_options, **_):
        if "q" not in got and q.shape[1] == 16 * 16:
            got.update(q=q.detach().clone(), k=k.detach().clone(), eo=dict(extra_options))
    reg.observers.append(observer)
    comfy.sample.sample(m, comfy.sample.prepare_noise(lat, 0), 1, 5.0, "euler", "normal", cond, neg, lat, seed=0,
                        disable_pbar=True)
    q, k, eo = got["q"], got["k"], got["eo"]
    heads, t = eo["n_heads"], k.shape[1]
    sigma = float(eo["sigmas"].flatten()[0])
    bound = mod.bind(RunState(Registry(), torch.tensor([sigma, sigma / 2, sigma / 4, sigma / 8, 0.0]), (1, 4, 32, 32)))
    # v = one identity per head: the attention output is then every head's probability matrix side by side
    v = torch.eye(t).repeat(1, heads)[None].expand(q.shape[0], t, heads * t)
    default = lambda q_, k_, v_, e_: attend(attention_scores(q_.float(), k_.float(), heads).softmax(-1), v_.float(), heads)
    before = default(q, k, v, eo).reshape(q.shape[0], -1, heads, t).mean(2)
    after = bound("attn2", q, k, v, eo, default)
    assert after is not None, "the modulation was not active at the first step"
    after = after.reshape(q.shape[0], -1, heads, t).mean(2)
    c0 = eo["cond_or_uncond"].index(0) * (q.shape[0] // len(eo["cond_or_uncond"]))
    m16 = masks_for_resolution(mod.masks, 16, 16).reshape(2, -1)
    report = {}
    for r, cols in enumerate(mod.token_sets):
        inside = lambda P: float((P[c0][:, cols].sum(-1) * m16[r]).sum() / P[c0][:, cols].sum())
        report[PAINTED["regions"][r]["phrase"]] = (round(inside(before), 3), round(inside(after), 3))
    print(report)
    for phrase, (b_, a_) in report.items():
        assert a_ > b_ + 0.1, report
