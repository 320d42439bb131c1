"""SynGen (Rassin et al., "Linguistic Binding in Diffusion Models", NeurIPS 2023, arXiv 2306.08877): the loss.

Maps: the same aggregate as Attend-and-Excite, A (B, h, w, T) = mean over the 16x16 layers and heads of the
cross-attention softmax over all T tokens; NO token re-softmax and no smoothing. Each token's map is treated
as a distribution over the h*w pixels:  P_s = A[..., s] / sum_p A[p, s].

Distance: D(a, b) = 1/2 [KL(P_a || P_b) + KL(P_b || P_a)]; for words of several pieces, the max over piece
pairs.

For each subtree S = (modifiers m_1..m_k, noun n) with outside set O_S = (prompt pieces) minus (pieces of S):
    L += sum_j  D(m_j, n)  -  1/2 [ mean_{o in O_S} D(m_j, o) + mean_{o in O_S} D(n, o) ]
(pairs de-duplicated, the negative term 0 when O_S is empty). With ``include_entities`` a noun without
modifiers contributes -mean_o D(n, o). The latent moves by z <- z - 20 dL/dz for the first half of the steps
(the reference's 25 of 51 PNDM iterations), with a constant step size.

Logarithms follow the reference, which builds ``torch.distributions.Categorical(probs=map)`` and takes
``kl_divergence``: P = map / sum(map) unclamped, log P from P clamped to [eps, 1 - eps] with eps the float32
machine epsilon 1.19e-7 (``torch.distributions.utils.clamp_probs``; no gradient flows through a clamped
entry, so a pixel where both maps are exactly 0 adds nothing and passes no gradient, as the reference's zeroed
terms). Where the reference's divergence would be infinite (one map exactly 0 where the other is positive,
which float32 softmax attention averaged over heads does not produce) the clamped log keeps it finite.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .engine import GuidanceTerm
from .maps import LayerSelector, mean_map

EPS = torch.finfo(torch.float32).eps  # 1.19e-7: the probability floor of the reference's Categorical
SUM_FLOOR = 1e-30  # only guards a map that is 0 everywhere (the reference would divide by 0)


def spatial_distributions(attn: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """(B, h, w, T) -> (B, K, h*w): each selected token's map normalised over pixels, in float32."""
    sel = attn[..., positions].flatten(1, 2).transpose(1, 2).float()  # (B, K, hw)
    return sel / sel.sum(-1, keepdim=True).clamp_min(SUM_FLOOR)


def log_probs(p: torch.Tensor) -> torch.Tensor:
    """log P with P clamped to [eps, 1 - eps] (torch.clamp: zero gradient at a clamped entry), as
    torch.distributions' probs_to_logits."""
    return p.clamp(EPS, 1.0 - EPS).log()


def symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """1/2 [KL(p||q) + KL(q||p)] over the last axis; p, q (..., hw) distributions -> (...)."""
    lp, lq = log_probs(p), log_probs(q)
    return 0.5 * ((p * (lp - lq)).sum(-1) + (q * (lq - lp)).sum(-1))


@dataclass
class Subtree:
    """One noun and its modifiers, each word as its list of context positions."""
    noun: list[int]
    modifiers: list[list[int]]


def syngen_loss(attn: torch.Tensor, subtrees: list[Subtree], prompt_positions: list[int],
                include_entities: bool = False) -> torch.Tensor:
    """Per-sample SynGen loss (B,) from aggregated maps ``attn`` (B, h, w, T).

    ``prompt_positions``: every prompt piece position (sot, eot and padding excluded), the reference's W.
    """
    b = attn.shape[0]
    needed = sorted(set(prompt_positions) | {p for s in subtrees for w in [s.noun, *s.modifiers] for p in w})
    col = {p: i for i, p in enumerate(needed)}
    dist = spatial_distributions(attn, needed)  # (B, K, hw)
    # all pairwise distances among needed pieces at once: (B, K, K)
    lp = log_probs(dist)
    cross = torch.einsum("bkn,bjn->bkj", dist, lp)  # sum p_k log p_j
    self_term = (dist * lp).sum(-1)  # sum p_k log p_k
    kl = self_term[:, :, None] - cross  # KL(p_k || p_j)
    dmat = 0.5 * (kl + kl.transpose(1, 2))

    def d_word(a: list[int], c: list[int]) -> torch.Tensor:
        ia = torch.tensor([col[p] for p in a])
        ic = torch.tensor([col[p] for p in c])
        return dmat[:, ia][:, :, ic].flatten(1).amax(-1)  # max over piece pairs, (B,)

    total = attn.new_zeros(b, dtype=torch.float32)
    for s in subtrees:
        inside = {p for w in [s.noun, *s.modifiers] for p in w}
        outside = [p for p in prompt_positions if p not in inside]
        pairs = []
        for m in s.modifiers:
            key = (tuple(s.noun), tuple(m))
            if key not in pairs and m != s.noun:
                pairs.append(key)
        for noun, mod in pairs:
            noun, mod = list(noun), list(mod)
            total = total + d_word(mod, noun)
            if outside:
                neg_m = torch.stack([d_word(mod, [o]) for o in outside], -1).mean(-1)
                neg_n = torch.stack([d_word(noun, [o]) for o in outside], -1).mean(-1)
                total = total - 0.5 * (neg_m + neg_n)
        if include_entities and not s.modifiers and outside:
            total = total - torch.stack([d_word(s.noun, [o]) for o in outside], -1).mean(-1)
    return total


def binding_margins(attn: torch.Tensor, subtrees: list[Subtree]) -> dict:
    """For each modifier: D(modifier, other nouns) - D(modifier, own noun), per sample (positive = the modifier's
    map is closer to its own noun than to the other nouns). Diagnostics only."""
    out = []
    nouns = [s.noun for s in subtrees]
    for s in subtrees:
        others = [n for n in nouns if n != s.noun]
        for m in s.modifiers:
            pm = spatial_distributions(attn, m).mean(1)
            own = symmetric_kl(pm, spatial_distributions(attn, s.noun).mean(1))
            if others:
                other = torch.stack([symmetric_kl(pm, spatial_distributions(attn, o).mean(1)) for o in others]).mean(0)
                out.append((other - own).float().cpu().tolist())
    return {"margins": out}


class SynGenTerm(GuidanceTerm):
    """SynGen as a guidance-engine term (latent channel, no refinement).

    subtrees: the bindings as context positions; prompt_positions: every prompt piece position; step_size 20
    (constant); guided while i < round(until * N); factor as in Attend-and-Excite (shared captured maps).
    """
    name = "syngen"
    label = "Bind Attributes"
    factor_input = "attention_factor"
    channel = "latent"
    max_refinement_steps = 0

    def __init__(self, subtrees: list[Subtree], prompt_positions: list[int], step_size: float = 20.0,
                 until: float = 0.5, factor: int = 4, include_entities: bool = False):
        if not subtrees:
            raise ValueError("SynGen needs at least one noun with a modifier to bind")
        self.subtrees = subtrees
        self.prompt_positions = list(prompt_positions)
        self.step_size = float(step_size)
        self.until = float(until)
        self.factor = int(factor)
        self.include_entities = include_entities
        self.selectors = (LayerSelector(kinds=("input", "middle", "output"), factors=(self.factor,)),)
        self.expected_tokens = None

    def active(self, step) -> bool:
        return step.i < round(self.until * step.n)

    def weight(self, step) -> float:
        return self.step_size

    def refinement_threshold(self, step):
        return None

    def loss(self, maps, step) -> torch.Tensor:
        attn = mean_map(maps[0])
        t = attn.shape[-1]
        if self.expected_tokens is not None and self.expected_tokens != t:
            raise ValueError(f"Bind Attributes: the positive conditioning has {t} tokens but the bindings' prompt has "
                             f"{self.expected_tokens}: parse the same prompt that feeds the sampler's positive input.")
        loss = syngen_loss(attn, self.subtrees, self.prompt_positions, self.include_entities)
        self.last_diagnostics = binding_margins(attn.detach(), self.subtrees)
        return loss
