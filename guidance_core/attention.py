"""Cross-attention probabilities and layer geometry, formed from projected queries and keys.

ComfyUI's default attention path is a fused kernel that never materialises the probability matrix, so the
methods that read attention (Attend-and-Excite, SynGen, InfSplign) recompute it, for the layers and batch rows
they need only:  P = softmax(Q K^T / sqrt(d_head))  per head.

Shapes: q (B, N, H*D) for N = h*w image positions, k (B, T, H*D) for T context tokens (77 per CLIP chunk).
"""
from __future__ import annotations

import math

import torch


def layer_geometry(n_query: int, latent_hw: tuple[int, int]) -> tuple[int, int, int] | None:
    """(factor, h, w) of a UNet layer whose image tokens number ``n_query``, for a latent of size ``latent_hw``.

    A UNet halves the resolution with stride-2 convolutions that round up, so a layer ``factor`` times smaller
    than the latent (H, W) has ceil(H/f) x ceil(W/f) positions. Returns None when no power of two fits (the
    layer does not belong to this latent, e.g. an area-conditioned crop).
    """
    H, W = latent_hw
    f = 1
    while f <= 128:
        h, w = -(-H // f), -(-W // f)
        if h * w == n_query:
            return f, h, w
        f *= 2
    return None


def attention_probs(q: torch.Tensor, k: torch.Tensor, heads: int, rows: torch.Tensor | slice | None = None,
                    head_mean: bool = True, score_fn=None) -> torch.Tensor:
    """Post-softmax attention probabilities.

    q (B, N, H*D), k (B, T, H*D) -> (B', N, T) averaged over heads (or (B', H, N, T) if ``head_mean`` is False),
    where B' is the number of selected ``rows`` of the batch. The softmax is taken in float32 for fp16/bf16
    safety and the result is float32: maps are small and losses on them want the precision. ``score_fn`` maps
    the scores (B', H, N, T) before the softmax, so a layer whose scores another method modulates (Layout
    Regions) is read as the model actually attended.
    """
    if rows is not None:
        q = q[rows]
        k = k[rows]
    b, n, c = q.shape
    d = c // heads
    qh = q.reshape(b, n, heads, d).transpose(1, 2).float()
    kh = k.reshape(b, k.shape[1], heads, d).transpose(1, 2).float()
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(d))
    if score_fn is not None:
        scores = score_fn(scores)
    probs = scores.softmax(dim=-1)
    return probs.mean(dim=1) if head_mean else probs


def attention_scores(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """Raw scores S = Q K^T / sqrt(d) per head: (B, N, H*D), (B, T, H*D) -> (B, H, N, T), in q's dtype."""
    b, n, c = q.shape
    d = c // heads
    qh = q.reshape(b, n, heads, d).transpose(1, 2)
    kh = k.reshape(b, k.shape[1], heads, d).transpose(1, 2)
    return torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(d))


def attend(probs: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Output of attention from per-head probabilities: (B, H, N, T), v (B, T, H*D) -> (B, N, H*D)."""
    b, _, n, t = probs.shape
    d = v.shape[-1] // heads
    vh = v.reshape(b, t, heads, d).transpose(1, 2)
    out = torch.matmul(probs.to(vh.dtype), vh)
    return out.transpose(1, 2).reshape(b, n, heads * d)
