"""SynGen's relative segment metric (Rassin et al., NeurIPS 2023, Sec. 5.1).

For one prompt and seed, the n images of the competing methods against its m noun-phrase segments:
logits (n, m) = logit_scale * cos(image, segment); each segment's column is softmaxed ACROSS the images, the
per-image score is the mean over segments, and the best image wins; wins are counted per method.
"""
from __future__ import annotations

import collections
from typing import Callable, Iterable, Sequence

import numpy as np

from .clip_scores import ClipScorer


def segment_scores(logits_per_image) -> np.ndarray:
    """(n_images, n_segments) logits -> per-image score: softmax ACROSS IMAGES (axis 0), mean over segments."""
    x = np.asarray(logits_per_image, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"logits must be (n_images, n_segments), got {x.shape}")
    x = x - x.max(axis=0, keepdims=True)
    p = np.exp(x)
    p = p / p.sum(axis=0, keepdims=True)
    return p.mean(axis=1)


def winner(methods: Sequence[str], scores: Sequence[float]) -> str:
    """The method with the highest score; a tie goes to the method listed first."""
    return methods[int(np.argmax(np.asarray(scores)))]


def count_wins(groups: Iterable[tuple[Sequence[str], Sequence[float]]], methods: Sequence[str] | None = None) -> dict:
    """Wins per method over groups of (methods, scores); every method of ``methods`` appears, with 0 wins."""
    c = collections.Counter()
    for ms, sc in groups:
        c[winner(ms, sc)] += 1
    out = {m: 0 for m in (methods or [])}
    out.update(c)
    return out


def syngen_compare(scorer: ClipScorer, items: Sequence[dict],
                   segments: Callable[[str], list[str]] | None = None) -> tuple[list[dict], dict]:
    """items: [{"prompt": str, "images": {method: image or path}, "segments"?: [...]}, ...], one item per
    (prompt, seed). Segments: ``segments(prompt)`` when given, else the item's "segments".
    Returns (per-item {"scores": {method: score}, "winner": method}, wins per method)."""
    results, groups, all_methods = [], [], []
    for it in items:
        segs = segments(it["prompt"]) if segments else it.get("segments")
        if not segs:
            raise ValueError(f"no segments for '{it['prompt']}': pass segments= or give records a 'segments' list")
        ms = list(it["images"])
        for m in ms:
            if m not in all_methods:
                all_methods.append(m)
        iemb = scorer.encode_images([it["images"][m] for m in ms])
        temb = scorer.encode_texts(list(segs))
        logits = scorer.logit_scale * iemb @ temb.T
        sc = segment_scores(logits)
        groups.append((ms, sc))
        results.append({"prompt": it["prompt"], "scores": dict(zip(ms, map(float, sc))), "winner": winner(ms, sc),
                        **({"key": it["key"]} if "key" in it else {})})
    return results, count_wins(groups, all_methods)
