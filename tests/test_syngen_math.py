"""SynGen loss on tiny maps against values computed by hand."""
import math

import pytest
import torch

from guidance_core.syngen import Subtree, symmetric_kl, syngen_loss


def _maps(cols):
    """cols: list of 2-pixel maps per token -> attn (1, 1, 2, T)."""
    t = torch.tensor(cols, dtype=torch.float32).T  # (2, T)
    return t.view(1, 1, 2, len(cols))


def test_symmetric_kl_by_hand():
    p = torch.tensor([0.75, 0.25])
    q = torch.tensor([0.25, 0.75])
    kl = 0.75 * math.log(3) + 0.25 * math.log(1 / 3)
    assert symmetric_kl(p, q).item() == pytest.approx(kl, abs=1e-6)
    assert symmetric_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)


def test_loss_positive_and_negative_terms_by_hand():
    # tokens: 0 sot, 1 "red" (modifier), 2 "car" (noun), 3 "and" (outside)
    attn = _maps([[0.5, 0.5], [0.3, 0.1], [0.1, 0.3], [0.2, 0.2]])
    pr = torch.tensor([0.75, 0.25])
    pc = torch.tensor([0.25, 0.75])
    po = torch.tensor([0.5, 0.5])
    d = lambda a, b: symmetric_kl(a, b).item()
    expected = d(pr, pc) - 0.5 * (d(pr, po) + d(pc, po))
    got = syngen_loss(attn, [Subtree(noun=[2], modifiers=[[1]])], prompt_positions=[1, 2, 3])
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_bound_maps_score_lower_than_leaked_ones():
    sub = [Subtree(noun=[2], modifiers=[[1]])]
    together = _maps([[0.5, 0.5], [0.3, 0.1], [0.3, 0.1], [0.1, 0.3]])
    apart = _maps([[0.5, 0.5], [0.3, 0.1], [0.1, 0.3], [0.3, 0.1]])
    assert syngen_loss(together, sub, [1, 2, 3]) < syngen_loss(apart, sub, [1, 2, 3])


def test_multi_piece_word_uses_the_max_pair_and_include_entities():
    attn = _maps([[0.5, 0.5], [0.3, 0.1], [0.1, 0.3], [0.3, 0.1], [0.2, 0.2]])
    one = syngen_loss(attn, [Subtree(noun=[2], modifiers=[[1]])], [1, 2, 3, 4])
    two = syngen_loss(attn, [Subtree(noun=[2, 3], modifiers=[[1]])], [1, 2, 3, 4])
    assert two.item() != pytest.approx(one.item())
    lonely = syngen_loss(attn, [Subtree(noun=[4], modifiers=[])], [1, 2, 3, 4], include_entities=True)
    assert lonely.item() < 0  # only the push-away term
    assert syngen_loss(attn, [Subtree(noun=[4], modifiers=[])], [1, 2, 3, 4]).item() == 0


def test_gradient_pulls_modifier_towards_noun():
    base = torch.tensor([[0.5, 0.5], [0.3, 0.1], [0.1, 0.3], [0.2, 0.2]]).T.reshape(1, 1, 2, 4)
    attn = base.clone().requires_grad_(True)
    syngen_loss(attn, [Subtree(noun=[2], modifiers=[[1]])], [1, 2, 3]).backward()
    g = attn.grad[0, 0, :, 1]  # modifier column: descending the loss moves mass to pixel 1 (where the noun is)
    assert g[1] < g[0]
