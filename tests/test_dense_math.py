"""DenseDiffusion modulation on tiny score matrices against hand-computed values."""
import pytest
import torch

from guidance_core.dense import (area_factor, cross_region_matrix, masks_for_resolution, modulate_scores,
                                 self_region_matrix, time_decay, validate_regions)


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
