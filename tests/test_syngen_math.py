"""SynGen loss on tiny maps against values computed by hand."""
import math

import pytest
import torch

from guidance_core.syngen import Subtree, symmetric_kl, syngen_loss

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once



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


def _reference_loss(attn, noun, mod, outside):
    """The reference's loss for one subtree of single-piece words (compute_loss.py: Categorical maps,
    kl_divergence, positive D(m, n), negative -1/2 [mean_o D(m, o) + mean_o D(n, o)]); attn (h, w, T)."""
    from torch.distributions import Categorical, kl_divergence

    def d(a, b):
        p, q = Categorical(probs=attn[..., a].reshape(-1)), Categorical(probs=attn[..., b].reshape(-1))
        return (kl_divergence(p, q) + kl_divergence(q, p)) / 2

    neg_n = -sum(d(noun, o) for o in outside) / len(outside)
    neg_m = -sum(d(mod, o) for o in outside) / len(outside)
    return d(mod, noun) + (neg_m + neg_n) / 2


def test_peaked_maps_match_the_reference_floor_in_value_and_gradient():
    """Very peaked maps have pixel probabilities far below float32 eps; the reference floors log P at eps
    (torch.distributions' clamp_probs) with no gradient through the floor. With a 1e-12 floor the gradient
    differed by up to several times on such maps."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16 * 16, 5, generator=g) * torch.tensor([1.0, 12.0, 9.0, 1.5, 10.0])
    base = logits.softmax(0).reshape(16, 16, 5)  # tokens: 0 sot, 1 modifier, 2 noun, 3 and 4 outside
    base[3, 4, :] = 0.0  # a pixel exactly 0 in every map: the reference's terms there are 0, with no gradient
    assert (base[..., 1] < 1.19e-7).sum() > 50 and (base[..., 2] < 1.19e-7).sum() > 50
    ours = base.clone().requires_grad_(True)
    got = syngen_loss(ours[None], [Subtree(noun=[2], modifiers=[[1]])], prompt_positions=[1, 2, 3, 4])[0]
    got.backward()
    ref = base.clone().requires_grad_(True)
    want = _reference_loss(ref, 2, 1, [3, 4])
    want.backward()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-4, atol=1e-6 * ref.grad.abs().max().item())
    # the pairwise form used by the margins diagnostics agrees too
    p = base[..., 1].reshape(-1) / base[..., 1].sum()
    q = base[..., 3].reshape(-1) / base[..., 3].sum()
    from torch.distributions import Categorical, kl_divergence
    P, Q = Categorical(probs=p), Categorical(probs=q)
    assert symmetric_kl(p, q).item() == pytest.approx(((kl_divergence(P, Q) + kl_divergence(Q, P)) / 2).item(),
                                                      rel=1e-5)
