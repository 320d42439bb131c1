"""Attend-and-Excite (Chefer et al., SIGGRAPH 2023, arXiv 2301.13826): the loss and its schedule.

Given the aggregated cross-attention A (B, h, w, T) (mean over the 16x16 layers and their heads, softmax over
all T tokens, sot included), per sample:

    keep text columns 1..T-2 (drop sot and the last slot), A' = softmax_s(100 * A[..., 1:-1])     (token axis)
    for each subject token s:  m_s = max_p  G * A'[:, :, s]     (G: 3x3 Gaussian, sigma 0.5, reflect padding)
    L = max_s  max(0, 1 - m_s)

and the latent is moved by  z <- z - alpha_i * dL/dz,  alpha_i = scale * sqrt(r_i),  r = linspace(1, 0.5, N)
over the N sampler steps, for the first half of the steps, with iterative refinement at 0%, 20% and 40% of the
steps (the paper's iterations 0, 10, 20 of 50) until L <= 1 - threshold (0.05, 0.5, 0.8), at most 20 times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .engine import GuidanceTerm


def gaussian_kernel(size: int = 3, sigma: float = 0.5, device=None, dtype=torch.float32) -> torch.Tensor:
    """The reference's 2-D smoothing kernel (size, size): per axis exp(-((d - mu) / (2 sigma))^2), normalised.

    This is a Gaussian of effective sigma sqrt(2)*sigma; for size 3, sigma 0.5 the weights are centre 0.332,
    edge 0.122, corner 0.045.
    """
    d = torch.arange(size, dtype=torch.float64)
    mu = (size - 1) / 2
    g = torch.exp(-(((d - mu) / (2 * sigma)) ** 2))
    k = g[:, None] * g[None, :]
    k = k / k.sum()
    return k.to(device=device, dtype=dtype)


def smooth(maps: torch.Tensor, size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """Gaussian smoothing with reflect padding: (B, K, h, w) -> (B, K, h, w)."""
    b, kk, h, w = maps.shape
    kern = gaussian_kernel(size, sigma, maps.device, maps.dtype)[None, None]
    pad = size // 2
    x = F.pad(maps.reshape(b * kk, 1, h, w), (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(x, kern).reshape(b, kk, h, w)


def text_softmax(attn: torch.Tensor, keep: torch.Tensor | None = None, temperature: float = 100.0) -> torch.Tensor:
    """Re-normalise attention over text tokens: (B, h, w, T) -> (B, h, w, T) with dropped columns set to 0.

    ``keep`` is a boolean (T,) mask of the columns that take part (default: all but the first and the last,
    the reference's ``[:, :, 1:-1]``). The softmax is over the kept columns of 100 * A.
    """
    t = attn.shape[-1]
    if keep is None:
        keep = torch.ones(t, dtype=torch.bool, device=attn.device)
        keep[0] = False
        keep[-1] = False
    logits = (attn * temperature).masked_fill(~keep, float("-inf"))
    return logits.softmax(dim=-1)


def max_attention_per_token(attn: torch.Tensor, token_groups: list[list[int]], keep: torch.Tensor | None = None,
                            smoothing: bool = True, kernel_size: int = 3, sigma: float = 0.5) -> torch.Tensor:
    """m_s for each subject: (B, h, w, T) -> (B, S).

    ``token_groups`` holds each subject's context positions; a word split into several BPE pieces scores the
    best of its pieces (the authors' advice is to excite the most dominant sub-token, A&E issue #32).
    """
    a = text_softmax(attn, keep)
    flat = sorted({p for g in token_groups for p in g})
    idx = {p: i for i, p in enumerate(flat)}
    sel = a[..., flat].permute(0, 3, 1, 2)  # (B, P, h, w)
    if smoothing:
        sel = smooth(sel, kernel_size, sigma)
    peak = sel.flatten(2).amax(dim=-1)  # (B, P)
    return torch.stack([peak[:, [idx[p] for p in g]].amax(dim=-1) for g in token_groups], dim=-1)


def excite_loss(max_per_token: torch.Tensor) -> torch.Tensor:
    """L = max_s max(0, 1 - m_s): (B, S) -> (B,). The most neglected subject drives each step."""
    return (1.0 - max_per_token).clamp(min=0).amax(dim=-1)


@dataclass
class ExciteSchedule:
    """The paper's schedule, expressed as fractions of the N sampler steps so it holds for any step count.

    scale_factor: 20; scale_range (1.0, 0.5); guided while i < round(until * N) (until = 25/50 = 0.5);
    refinement at step fractions {0: 0.05, 0.2: 0.5, 0.4: 0.8} (the paper's iterations 0, 10, 20 of 50);
    at most ``max_refinement_steps`` = 20 extra updates per refinement.
    """
    scale_factor: float = 20.0
    scale_range: tuple[float, float] = (1.0, 0.5)
    until: float = 0.5
    refinement: dict[float, float] = field(default_factory=lambda: {0.0: 0.05, 0.2: 0.5, 0.4: 0.8})
    max_refinement_steps: int = 20

    def step_size(self, i: int, n: int) -> float:
        """alpha_i = scale * sqrt(linspace(r0, r1, n)[i])."""
        r0, r1 = self.scale_range
        r = r0 if n <= 1 else r0 + (r1 - r0) * i / (n - 1)
        return self.scale_factor * math.sqrt(r)

    def active(self, i: int, n: int) -> bool:
        return i < round(self.until * n)

    def refinement_threshold(self, i: int, n: int) -> float | None:
        """The threshold T if step i is a refinement step (refine while L > 1 - T), else None."""
        for frac, thr in self.refinement.items():
            if round(frac * n) == i:
                return thr
        return None


def reference_keep(n_tokens: int, chunk: int = 77) -> torch.Tensor:
    """The reference's kept columns ``[1:-1]``, generalised to several 77-token chunks: every chunk's sot and
    the very last slot are dropped. (T,) bool."""
    keep = torch.ones(n_tokens, dtype=torch.bool)
    keep[::chunk] = False
    keep[-1] = False
    return keep


class ExciteTerm(GuidanceTerm):
    """Attend-and-Excite as a guidance-engine term (latent channel, with iterative refinement).

    token_groups: each subject's context positions (sot = 0). keep_positions: the columns that take part in the
    text softmax (None = the reference's ``[1:-1]`` per chunk). factor: latent size / map size (4 -> 16x16 maps
    at 512 px, the paper's resolution).
    """
    name = "attend_and_excite"
    label = "Excite Tokens"
    channel = "latent"

    def __init__(self, token_groups: list[list[int]], schedule: ExciteSchedule | None = None,
                 factor: int = 4, smoothing: bool = True, kernel_size: int = 3, sigma: float = 0.5,
                 keep_positions: list[int] | None = None, refine: bool = True):
        from .maps import LayerSelector
        if not token_groups or any(len(g) == 0 for g in token_groups):
            raise ValueError("Attend-and-Excite needs at least one subject token")
        self.token_groups = [list(map(int, g)) for g in token_groups]
        self.schedule = schedule or ExciteSchedule()
        self.factor = int(factor)
        self.smoothing = smoothing
        self.kernel_size = kernel_size
        self.sigma = sigma
        self.keep_positions = keep_positions
        self.refine = refine
        self.selectors = (LayerSelector(kinds=("input", "middle", "output"), factors=(self.factor,)),)
        self.max_refinement_steps = self.schedule.max_refinement_steps

    def active(self, step) -> bool:
        return self.schedule.active(step.i, step.n)

    def weight(self, step) -> float:
        return self.schedule.step_size(step.i, step.n)

    def refinement_threshold(self, step):
        return self.schedule.refinement_threshold(step.i, step.n) if self.refine else None

    def keep_mask(self, n_tokens: int, device) -> torch.Tensor:
        if self.keep_positions is None:
            keep = reference_keep(n_tokens)
        else:
            keep = torch.zeros(n_tokens, dtype=torch.bool)
            keep[[p for p in self.keep_positions if p < n_tokens]] = True
        return keep.to(device)

    def max_per_token(self, maps) -> torch.Tensor:
        from .maps import mean_map
        attn = mean_map(maps[0])
        t = attn.shape[-1]
        bad = [p for g in self.token_groups for p in g if p >= t]
        expected = getattr(self, "expected_tokens", None)
        if bad or (expected is not None and expected != t):
            raise ValueError(f"Excite Tokens: the positive conditioning has {t} tokens but the node's prompt has "
                             f"{expected}: the prompt given to Excite Tokens is not the prompt of the positive "
                             "conditioning. Connect the same text to both (convert the widget to an input).")
        return max_attention_per_token(attn, self.token_groups, self.keep_mask(t, attn.device),
                                       self.smoothing, self.kernel_size, self.sigma)

    def loss(self, maps, step) -> torch.Tensor:
        return excite_loss(self.max_per_token(maps))
