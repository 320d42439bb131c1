"""Attend-and-Excite math, attention geometry and word alignment on tiny tensors, against hand values."""
import math

import pytest
import torch

from guidance_core.align import find_sequence, locate_words, strip_weight_syntax
from guidance_core.attention import attention_probs, layer_geometry
from guidance_core.excite import (ExciteSchedule, excite_loss, gaussian_kernel, max_attention_per_token,
                                  reference_keep, smooth, text_softmax)
from guidance_core.maps import CapturedMap, LayerSelector, MapStore, mean_map

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once



def test_gaussian_kernel_weights():
    k = gaussian_kernel(3, 0.5)
    # per axis exp(-((d - 1) / 1)^2) = [e^-1, 1, e^-1]; normalised product
    a = math.exp(-1)
    s = (1 + 2 * a) ** 2
    assert k[1, 1].item() == pytest.approx(1 / s, abs=1e-6)       # 0.332
    assert k[0, 1].item() == pytest.approx(a / s, abs=1e-6)       # 0.122
    assert k[0, 0].item() == pytest.approx(a * a / s, abs=1e-6)   # 0.045
    assert k[1, 1].item() == pytest.approx(0.332, abs=1e-3)


def test_smoothing_of_a_delta_is_the_kernel():
    m = torch.zeros(1, 1, 5, 5)
    m[0, 0, 2, 2] = 1.0
    out = smooth(m)
    assert torch.allclose(out[0, 0, 1:4, 1:4], gaussian_kernel(3, 0.5), atol=1e-6)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_text_softmax_drops_sot_and_last_and_uses_temperature_100():
    attn = torch.tensor([0.5, 0.01, 0.02, 0.47]).view(1, 1, 1, 4)
    a = text_softmax(attn)
    e1, e2 = math.exp(1.0), math.exp(2.0)
    assert a[0, 0, 0, 0].item() == 0 and a[0, 0, 0, 3].item() == 0
    assert a[0, 0, 0, 1].item() == pytest.approx(e1 / (e1 + e2), abs=1e-6)
    assert a[0, 0, 0, 2].item() == pytest.approx(e2 / (e1 + e2), abs=1e-6)


def test_max_attention_and_loss_by_hand():
    # 3x3 map, 4 tokens: token 1 owns the centre pixel strongly, token 2 is weak everywhere.
    attn = torch.zeros(1, 3, 3, 4)
    attn[..., 0] = 0.9
    attn[..., 1] = 0.02
    attn[..., 2] = 0.02
    attn[0, 1, 1, 1] = 0.05
    m = max_attention_per_token(attn, [[1], [2]], smoothing=False)
    e = math.exp(100 * 0.05), math.exp(100 * 0.02)
    assert m[0, 0].item() == pytest.approx(e[0] / (e[0] + e[1]), abs=1e-5)
    assert m[0, 1].item() == pytest.approx(0.5, abs=1e-6)  # token 2 ties token 1 outside the centre
    loss = excite_loss(m)
    assert loss.item() == pytest.approx(0.5, abs=1e-6)  # the most neglected subject: max(0, 1 - 0.5)


def test_multi_piece_subject_takes_its_best_piece():
    attn = torch.full((1, 2, 2, 5), 0.1)
    attn[..., 2] = 0.3
    m = max_attention_per_token(attn, [[1, 2]], smoothing=False)
    m2 = max_attention_per_token(attn, [[2]], smoothing=False)
    assert m.item() == pytest.approx(m2.item())


def test_reference_keep_with_two_chunks():
    k = reference_keep(154)
    assert not k[0] and not k[77] and not k[153] and k[1] and k[76] and k[78]


def test_schedule_matches_the_paper_at_50_steps():
    s = ExciteSchedule()
    assert s.step_size(0, 50) == pytest.approx(20.0)
    assert s.step_size(49, 50) == pytest.approx(20 * math.sqrt(0.5))
    assert s.step_size(10, 50) == pytest.approx(20 * math.sqrt(1 - 0.5 * 10 / 49))
    assert [i for i in range(50) if s.active(i, 50)] == list(range(25))
    assert {i: s.refinement_threshold(i, 50) for i in range(50) if s.refinement_threshold(i, 50)} == \
        {0: 0.05, 10: 0.5, 20: 0.8}


def test_layer_geometry_rounds_up_like_the_unet():
    assert layer_geometry(64 * 64, (64, 64)) == (1, 64, 64)
    assert layer_geometry(16 * 16, (64, 64)) == (4, 16, 16)
    assert layer_geometry(8 * 12, (60, 92)) == (8, 8, 12)  # ceil(60/8)=8, ceil(92/8)=12
    assert layer_geometry(7, (64, 64)) is None


def test_attention_probs_match_a_manual_softmax():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, 8, generator=g)
    k = torch.randn(2, 5, 8, generator=g)
    p = attention_probs(q, k, heads=2)
    qh, kh = q.view(2, 6, 2, 4), k.view(2, 5, 2, 4)
    manual = torch.stack([(qh[:, :, h] @ kh[:, :, h].transpose(1, 2) / 2.0).softmax(-1) for h in range(2)]).mean(0)
    assert torch.allclose(p, manual, atol=1e-6)
    assert torch.allclose(p.sum(-1), torch.ones(2, 6))
    assert attention_probs(q.half(), k.half(), 2).dtype == torch.float32


def test_mean_map_weights_layers_by_heads():
    a = CapturedMap("input", 1, 0, 4, torch.zeros(1, 2, 2, 3), heads=5)
    b = CapturedMap("output", 1, 0, 4, torch.ones(1, 2, 2, 3), heads=15)
    assert mean_map([a, b]).mean().item() == pytest.approx(0.75)


def test_map_store_selects_and_stops_early():
    from guidance_core.maps import CaptureComplete
    sel = LayerSelector(kinds=("output",), factors=(2,), ordinals=(0, 1))
    store = MapStore([sel], (8, 8), stop_after=2)
    assert not store.classify("input", 1, 0, 2).wanted
    info = store.classify("output", 3, 0, 2)
    store.add(info, torch.zeros(1, 4, 4, 3))
    info = store.classify("output", 4, 0, 2)
    with pytest.raises(CaptureComplete):
        store.add(info, torch.zeros(1, 4, 4, 3))
    assert len(store.for_selector(0)) == 2


def test_weight_syntax_and_alignment():
    assert strip_weight_syntax("a (red:1.3) car and [blue] (dog) \\(pet\\)") == "a red car and blue dog (pet)"
    pieces = [None, "a</w>", "red</w>", "red</w>", "bear</w>", None]
    words = {"red": ["red</w>"], "bear": ["bear</w>"], "teddy bear": ["teddy</w>", "bear</w>"]}
    assert locate_words(pieces, ["red", "red", "bear"], words.__getitem__) == [[2], [3], [4]]
    assert locate_words(pieces, ["teddy bear"], words.__getitem__) == [None]
    assert find_sequence(pieces, ["red</w>", "bear</w>"]) == [3, 4]
