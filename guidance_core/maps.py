"""Capturing cross-attention maps during one UNet forward, and choosing the layers each loss reads.

A forward visits cross-attention layers in a fixed order (encoder, middle, decoder). Each layer is named by
ComfyUI's ``(block kind, block index, transformer index)`` and has a geometry found at run time from its number
of image tokens: ``factor`` = latent size / layer size (SD1.x at 512 px: 64x64 latent, so factor 4 is 16x16).
A ``LayerSelector`` says which layers a loss wants; the ``MapStore`` keeps, per selected layer, the head-averaged
probabilities as maps of shape (B, h, w, T).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch


class CaptureComplete(Exception):
    """Raised inside a forward once the last layer any loss needs has been captured (the rest is skipped)."""


@dataclass(frozen=True)
class LayerSelector:
    """Which cross-attention layers a loss reads.

    kinds: block kinds ("input", "middle", "output"); factors: accepted latent/layer size ratios; ordinals:
    if given, only the n-th selected layers (0-based, in forward order, counted among layers of the same kind
    and factor); transformer_indices: if given, only these sub-block indices (SDXL's deep transformer stacks).
    """
    kinds: tuple[str, ...] = ("input", "middle", "output")
    factors: tuple[int, ...] = (4,)
    ordinals: tuple[int, ...] | None = None
    transformer_indices: tuple[int, ...] | None = None
    block_ordinals: tuple[int, ...] | None = None

    def matches(self, kind: str, factor: int, ordinal: int, tindex: int, block_ordinal: int) -> bool:
        if kind not in self.kinds or factor not in self.factors:
            return False
        if self.ordinals is not None and ordinal not in self.ordinals:
            return False
        if self.transformer_indices is not None and tindex not in self.transformer_indices:
            return False
        if self.block_ordinals is not None and block_ordinal not in self.block_ordinals:
            return False
        return True


@dataclass
class CapturedMap:
    kind: str
    index: int
    tindex: int
    factor: int
    probs: torch.Tensor  # (B, h, w, T) float32
    heads: int = 1

    @property
    def hw(self) -> tuple[int, int]:
        return self.probs.shape[1], self.probs.shape[2]


@dataclass
class LayerInfo:
    kind: str
    index: int
    tindex: int
    factor: int
    ordinal: int        # among layers of the same kind and factor, in forward order
    block_ordinal: int  # among distinct blocks of the same kind and factor
    wanted: tuple[int, ...] = ()  # which selectors (by position) take this layer


class MapStore:
    """Collects maps for one forward. ``selectors`` come from all active losses; maps are kept per selector.

    ``stop_after`` is the count of wanted layers after which the forward may stop (known from an earlier
    complete forward of the same run); ``None`` means run the whole forward.
    """

    def __init__(self, selectors: Iterable[LayerSelector], latent_hw: tuple[int, int], stop_after: int | None = None):
        self.selectors = list(selectors)
        self.latent_hw = latent_hw
        self.stop_after = stop_after
        self.maps: list[list[CapturedMap]] = [[] for _ in self.selectors]
        self.layers: list[LayerInfo] = []
        self._counts: dict[tuple[str, int], int] = {}
        self._blocks: dict[tuple[str, int], list[int]] = {}
        self.wanted_seen = 0

    def classify(self, kind: str, index: int, tindex: int, factor: int) -> LayerInfo:
        """Register a visited layer and say which selectors want it."""
        key = (kind, factor)
        ordinal = self._counts.get(key, 0)
        self._counts[key] = ordinal + 1
        blocks = self._blocks.setdefault(key, [])
        if index not in blocks:
            blocks.append(index)
        info = LayerInfo(kind, index, tindex, factor, ordinal, blocks.index(index))
        info.wanted = tuple(i for i, s in enumerate(self.selectors)
                            if s.matches(kind, factor, ordinal, tindex, info.block_ordinal))
        self.layers.append(info)
        return info

    def add(self, info: LayerInfo, probs: torch.Tensor, heads: int = 1) -> None:
        """Store head-averaged probabilities (B, h, w, T) for every selector that wants this layer."""
        for i in info.wanted:
            self.maps[i].append(CapturedMap(info.kind, info.index, info.tindex, info.factor, probs, heads))
        self.wanted_seen += 1
        if self.stop_after is not None and self.wanted_seen >= self.stop_after:
            raise CaptureComplete()

    def for_selector(self, selector_index: int) -> list[CapturedMap]:
        return self.maps[selector_index]

    def factors_seen(self, kinds: Iterable[str] | None = None) -> list[int]:
        """The factors of the cross-attention layers this forward visited (of ``kinds`` if given), sorted."""
        kinds = None if kinds is None else set(kinds)
        return sorted({li.factor for li in self.layers if kinds is None or li.kind in kinds})

    def map_size(self, factor: int) -> str:
        """'16x16': the map size of a layer ``factor`` times smaller than this forward's latent."""
        h, w = self.latent_hw
        return f"{-(-h // factor)}x{-(-w // factor)}"




def missing_factor_message(label: str, factor_input: str, selector: LayerSelector, store: MapStore) -> str:
    """The error for a term whose ``factor_input`` (e.g. attention_factor) matches no cross-attention layer."""
    want = ", ".join(str(f) for f in selector.factors)
    seen = store.factors_seen(selector.kinds)
    h, w = store.latent_hw
    if not store.layers:
        return (f"{label}: the sampler's positive conditioning gave no cross-attention map of the whole image "
                f"(an area-restricted conditioning is not read); give the sampler a positive conditioning that "
                f"covers the image.")
    if not seen:
        return (f"{label}: this model has no cross-attention layer in the blocks it reads ({', '.join(selector.kinds)}); "
                f"it supports SD1.x, SD2.x and SDXL UNets.")
    options = ", ".join(f"{f} ({store.map_size(f)} maps)" for f in seen)
    return (f"{label}: {factor_input} {want} matches no cross-attention layer of this model: with this image "
            f"({h}x{w} latent) it would read {store.map_size(selector.factors[0])} maps, and the model's cross-"
            f"attention layers are at {factor_input} {options}. Set {factor_input} on {label} to one of "
            f"{', '.join(str(f) for f in seen)} (4 reads the paper's 16x16 maps at 512 px).")


def require_maps(term, maps: list[list[CapturedMap]], store: MapStore) -> None:
    """Raise a ValueError naming the node and the input to change when a complete forward gave one of
    ``term``'s selectors no map at all (``maps[k]`` for ``term.selectors[k]``).

    A forward that stopped early (``store.stop_after`` set) is never judged: it stops only after as many wanted
    layers as a complete forward of the same selectors captured. The message is the term's own
    ``missing_maps_message(selector, store)`` when it has one, else it names the term's ``factor_input``
    (default "attention_factor") and the factors the model offers at this image size.
    """
    if store.stop_after is not None:
        return
    for sel, got in zip(term.selectors, maps):
        if got:
            continue
        own = getattr(term, "missing_maps_message", None)
        if own is not None:
            raise ValueError(own(sel, store))
        label = getattr(term, "label", None) or getattr(term, "name", "guidance")
        raise ValueError(missing_factor_message(label, getattr(term, "factor_input", "attention_factor"), sel, store))


def mean_map(maps: list[CapturedMap]) -> torch.Tensor:
    """Mean over layers x heads of same-sized maps: list of (B, h, w, T) -> (B, h, w, T).

    Each map is already its layer's head mean, so layers are weighted by their head count: this equals the
    Attend-and-Excite reference, which concatenates every head of every layer and averages (SD2.x layers have
    5, 10 or 20 heads, SD1.x 8 everywhere).
    """
    if not maps:
        raise ValueError("no attention maps were captured at the requested resolution")
    total = sum(m.heads for m in maps)
    return sum(m.probs * (m.heads / total) for m in maps)
