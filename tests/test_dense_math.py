"""DenseDiffusion modulation on tiny score matrices against hand-computed values."""
import pytest
import torch

from guidance_core.dense import (SelfRegionRows, area_factor, cross_region_matrix, masks_for_resolution,
                                 masks_from_layout, modulate_scores, nominal_size, parse_layout, self_region_matrix,
                                 time_decay, validate_regions, with_background)

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once



def test_modulation_by_hand():
    S = torch.tensor([[1.0, 3.0, 2.0],
                      [0.0, -1.0, 4.0]])
    R = torch.tensor([[1.0, 0.0, 0.0],
                      [0.0, 1.0, 0.0]])
    s = torch.tensor([0.5, 1.0])
    out = modulate_scores(S, R, s, lam=0.8, w=1.0)
    # row 0: k = 0.4, max 3, min 1: [1 + 0.4*(3-1), 3 - 0.4*(3-1), 2 - 0.4*(2-1)] = [1.8, 2.2, 1.6]
    # row 1: k = 0.8, max 4, min -1: [0 - 0.8*(0+1), -1 + 0.8*(4+1), 4 - 0.8*(4+1)] = [-0.8, 3.0, 0.0]
    expected = torch.tensor([[1.8, 2.2, 1.6], [-0.8, 3.0, 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_range_identity_and_all_ones():
    g = torch.Generator().manual_seed(0)
    S = torch.randn(2, 3, 5, 7, generator=g)
    R = (torch.rand(5, 7, generator=g) > 0.5).float()
    s = torch.rand(5, generator=g)
    out = modulate_scores(S, R, s, 0.9, 1.0)
    assert (out <= S.amax(-1, keepdim=True) + 1e-6).all() and (out >= S.amin(-1, keepdim=True) - 1e-6).all()
    assert torch.equal(modulate_scores(S, R, s, 0.0, 1.0), S)
    full = modulate_scores(S, torch.ones(5, 7), torch.ones(5), 1.0, 1.0)
    assert torch.allclose(full, S.amax(-1, keepdim=True).expand_as(S))


def test_area_factor_and_region_matrices():
    m = torch.zeros(2, 4, 4)
    m[0, :, :2] = 1  # left half: 8 pixels
    m[1, 0, 3] = 1   # one pixel
    s = area_factor(m)
    assert s[0].item() == pytest.approx(1 - 8 / 16)
    assert s[3].item() == pytest.approx(1 - 1 / 16)
    assert s[2].item() == pytest.approx(1.0)  # in no segment
    S = self_region_matrix(m)
    assert S.shape == (16, 16) and S[0, 1] == 1 and S[0, 2] == 0 and S[3, 3] == 1
    R = cross_region_matrix(m, [[2, 3], [5]], 8)
    assert R.shape == (16, 8)
    assert R[0, 2] == 1 and R[0, 5] == 0 and R[3, 5] == 1 and R[3, 2] == 0 and R[:, 0].sum() == 0


def test_time_decay_values():
    assert time_decay(981) == pytest.approx(0.909, abs=1e-3)
    assert time_decay(0) == 0


def test_attention_mass_inside_the_region_rises():
    g = torch.Generator().manual_seed(1)
    m = torch.zeros(1, 4, 4)
    m[0, :, :2] = 1
    S = torch.randn(16, 6, generator=g)
    R = cross_region_matrix(m, [[2]], 6)
    before = S.softmax(-1)[:, 2].reshape(4, 4)
    after = modulate_scores(S, R, area_factor(m), 0.9, 1.0).softmax(-1)[:, 2].reshape(4, 4)
    frac = lambda p: (p[:, :2].sum() / p.sum()).item()
    assert frac(after) > frac(before) + 0.1


def test_fp16_and_resizing():
    S = torch.randn(4, 6).half()
    out = modulate_scores(S, torch.zeros(4, 6), torch.ones(4), 0.5, 1.0)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    big = torch.zeros(1, 64, 64)
    big[0, 10:30, 10:30] = 0.9
    small = masks_for_resolution(big, 8, 8)
    assert small.shape == (1, 8, 8) and set(small.unique().tolist()) <= {0.0, 1.0} and small.sum() > 0


def test_validation_messages():
    m = torch.zeros(2, 8, 8)
    m[0, :4] = 1
    with pytest.raises(ValueError, match="region 2 is empty"):
        validate_regions(m, [[1], [2]])
    m[1, 4:] = 1
    with pytest.raises(ValueError, match="has no words"):
        validate_regions(m, [[1], []])
    with pytest.raises(ValueError, match="aspect ratio"):
        validate_regions(m, [[1], [2]], latent_hw=(8, 16))
    with pytest.raises(ValueError, match="one phrase per region"):
        validate_regions(m, [[1]])
    validate_regions(m, [[1], [2]], latent_hw=(16, 16), n_tokens=77)


def _reference_prep(segments: torch.Tensor, token_sets, n_tokens: int, w_size: float = 1.0):
    """The reference's per-resolution preparation, written from its description (METHODS.md 5.3): the self
    map is the sum over segments of m m^T, R = (map > 0), the size term 1 - w_size * rowsum(map) / P (no
    clamp); the cross map gives each segment's tokens its mask (distinct tokens here, so no overwriting)."""
    n = segments.shape[0]
    flat = segments.reshape(n, -1)
    smap = sum(flat[k][:, None] * flat[k][None, :] for k in range(n))
    sizes = 1 - w_size * smap.sum(-1) / flat.shape[1]
    cmap = torch.zeros(flat.shape[1], n_tokens)
    for k, ts in enumerate(token_sets):
        for t in ts:
            cmap[:, t] = flat[k]
    return (smap > 0).float(), (cmap > 0).float(), sizes


def test_background_segment_by_hand():
    """Pixels no region covers are one more segment: their own area term and they attend to each other."""
    m = torch.zeros(2, 4, 4)
    m[0, :, :2] = 1   # left half: 8 pixels
    m[1, 0, 3] = 1    # one pixel; the background is the other 7
    seg, toks = with_background(m, [[2, 3], [5]], background_tokens=[7])
    assert seg.shape == (3, 4, 4) and toks == [[2, 3], [5], [7]]
    bg = seg[2].reshape(-1)
    assert bg.sum() == 7 and bg[2] == 1 and bg[0] == 0 and bg[3] == 0
    s = area_factor(seg)
    assert s[2].item() == pytest.approx(1 - 7 / 16)  # a background pixel: weak modulation for a large background
    assert s[0].item() == pytest.approx(1 - 8 / 16) and s[3].item() == pytest.approx(1 - 1 / 16)
    R = self_region_matrix(seg)
    assert R[2, 6] == 1 and R[2, 15] == 1 and R[2, 0] == 0 and R[2, 3] == 0  # background attends to background
    C = cross_region_matrix(seg, toks, 8)
    assert C[2, 7] == 1 and C[0, 7] == 0 and C[2, 2] == 0 and C[:, 0].sum() == 0
    # no background phrase: background pixels have R = 0 for every token, but keep their own s
    seg0, toks0 = with_background(m, [[2, 3], [5]])
    assert toks0[-1] == [] and cross_region_matrix(seg0, toks0, 8)[2].sum() == 0
    # regions covering everything: no background segment is added
    full = torch.ones(1, 4, 4)
    assert with_background(full, [[1]])[0].shape == (1, 4, 4)


def test_background_and_overlap_match_the_reference_formula():
    """Random layouts (with a background and with overlapping regions) against the reference's preparation:
    self R, cross R and the area term agree; where the reference's area term goes negative we clamp it at 0."""
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        h, w = 6, 8
        n = 1 + trial % 4
        m = torch.zeros(n, h, w)
        for k in range(n):
            y0, x0 = torch.randint(0, h - 1, (2,), generator=g).tolist()[0], torch.randint(0, w - 1, (1,), generator=g).item()
            m[k, y0:y0 + 1 + torch.randint(1, h, (1,), generator=g).item(), x0:x0 + 1 + torch.randint(1, w, (1,), generator=g).item()] = 1
        token_sets = [[1 + 2 * k, 2 + 2 * k] for k in range(n)]
        seg, toks = with_background(m, token_sets)
        covered = m.amax(0)
        ref_segments = torch.cat([m, (1 - covered)[None]]) if covered.sum() < h * w else m  # the reference's bg
        Rs, Rc, sizes = _reference_prep(ref_segments, token_sets + [[]], 20)
        assert torch.equal(self_region_matrix(seg), Rs)
        assert torch.equal(cross_region_matrix(seg, toks, 20), Rc)
        assert torch.allclose(area_factor(seg), sizes.clamp(min=0), atol=1e-6)


def test_overlap_area_is_the_sum_of_areas_and_never_negative():
    m = torch.zeros(2, 4, 4)
    m[0, :, :3] = 1   # 12 pixels
    m[1, :2] = 1      # 8 pixels; overlap (rows 0-1, cols 0-2)
    s = area_factor(m)
    assert s[0].item() == pytest.approx(0.0)               # 1 - (12 + 8)/16 < 0: clamped, not -0.25
    assert s[3].item() == pytest.approx(1 - 8 / 16)         # only in the second box
    assert s[8].item() == pytest.approx(1 - 12 / 16)        # only in the first
    assert area_factor(m, overlap="union")[0].item() == pytest.approx(1 - 14 / 16)
    assert area_factor(m, w_size=0.5)[0].item() == pytest.approx(1 - 0.5 * 20 / 16)


def test_self_region_rows_equal_the_whole_matrix():
    g = torch.Generator().manual_seed(0)
    m = (torch.rand(3, 5, 7, generator=g) > 0.6).float()
    rows = SelfRegionRows(m)
    full = self_region_matrix(m)
    assert rows.shape == full.shape and torch.equal(rows[3:20], full[3:20]) and torch.equal(rows[:], full)
    S = torch.randn(2, 35, 35, generator=g)
    s = area_factor(m)
    assert torch.equal(modulate_scores(S, rows, s, 0.7, 0.3), modulate_scores(S, full, s, 0.7, 0.3))


@pytest.mark.parametrize("text,message", [
    ('{"regions": {"x": 0}}', '"regions" must be a list'),
    ('{"regions": "a cat"}', '"regions" must be a list'),
    ('{"regions": [{"x": NaN, "y": 0, "w": 1, "h": 1, "phrase": "a cat"}]}', "x = NaN"),
    ('{"regions": [{"x": 0, "y": 0, "w": Infinity, "h": 1e999, "phrase": "a cat"}]}', "w = Infinity, h = Infinity"),
    ('{"width": 1e9, "height": 512, "regions": []}', '"width" must be a number of pixels from 1 to 16384'),
    ('{"width": 512, "height": NaN, "regions": []}', '"height" must be'),
    ("[" * 100000, "nested too deeply"),
    ('{"regions": [' + ", ".join(['{"x": 0, "y": 0, "w": 1, "h": 1, "phrase": "a cat"}'] * 100) + "]}", "at most 64"),
    ('{"background": 3, "regions": []}', '"background" must be a phrase'),
])
def test_bad_layout_json_is_a_clear_error(text, message):
    import re
    with pytest.raises(ValueError, match=re.escape(message)):
        layout = parse_layout(text)
        masks_from_layout(layout)


def test_layout_bounds_and_nominal_size():
    assert nominal_size(parse_layout('{"width": 256, "height": 128, "regions": []}')) == (16, 32)
    assert nominal_size(parse_layout('{"width": 16384, "height": 8192, "regions": []}')) == (128, 256)
    with pytest.raises(ValueError, match="characters"):
        parse_layout(" " * 4_000_001)
