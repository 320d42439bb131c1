"""The guidance step shared by every gradient method: one conditional forward, one loss, one backward.

Loss terms (Attend-and-Excite, SynGen, InfSplign) are ``GuidanceTerm`` objects. At a guided sampler step all
active terms read maps captured in ONE conditional forward with gradients, their weighted losses are summed,
and ONE backward gives the gradient. Two channels exist:

* ``latent`` (A&E, SynGen): the paper moves the VP latent z before predicting from it,
      z <- z - alpha * dL/dz.
  ComfyUI's samplers work on x = z / c_in (c_in = 1/sqrt(1 + sigma^2) for SD), so with g_x = dL/dx = c_in*dL/dz
      delta_x = delta_z / c_in = -alpha * g_x / c_in^2.
* ``noise`` (InfSplign): the paper adds the gradient to the CFG noise estimate, eps <- eps + w * dL/dz, i.e.
  ComfyUI's denoised D = x - sigma * eps becomes
      D <- D - sigma * w * g_x / c_in.

When terms of both channels are active in one step, one backward still serves both: noise-channel weights are
converted to the latent channel by the first-order equivalence of the two on an Euler/DDIM step
(sigma -> sigma_next): a noise shift of w moves the next state as a latent shift of alpha = w*sigma*(sigma -
sigma_next)/sigma_next * c_in, and the summed loss is applied as one latent update.

Iterative refinement (A&E) repeats forward + backward + update on the refinement terms alone until every
sample's loss is at most its target or the iteration cap is reached, then the regular update follows.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .maps import CapturedMap, LayerSelector, MapStore, require_maps

log = logging.getLogger("faithful")


@dataclass
class StepInfo:
    """Where the sampler is: step ``i`` of ``n``, current and next sigma, and c_in (B, 1, 1, 1)."""
    i: int
    n: int
    sigma: torch.Tensor
    sigma_next: float
    c_in: torch.Tensor


class GuidanceTerm:
    """A loss on captured maps. Subclasses set ``name`` (the report key), ``label`` (the node the user sees, for
    messages), ``channel`` and ``selectors`` and implement ``loss``. Terms are told apart by identity: two terms of
    one kind on a model are two terms."""
    name = "term"
    label = "guidance"
    channel = "latent"  # or "noise"
    selectors: Sequence[LayerSelector] = ()
    max_refinement_steps = 0

    def active(self, step: StepInfo) -> bool:
        return True

    def weight(self, step: StepInfo) -> float:
        return 1.0

    def refinement_threshold(self, step: StepInfo) -> float | None:
        return None

    def loss(self, maps: list[list[CapturedMap]], step: StepInfo) -> torch.Tensor:
        """Per-sample loss (B,), from ``maps[k]`` = the maps for ``self.selectors[k]``."""
        raise NotImplementedError


@dataclass
class GuidanceResult:
    step: int = -1
    delta_x: torch.Tensor | None = None   # add to the sampler's x before predicting
    denoised_shift: torch.Tensor | None = None  # add to the returned denoised (noise channel)
    losses: dict[str, list[float]] = field(default_factory=dict)  # per term, per sample, at this step
    diagnostics: dict[str, dict] = field(default_factory=dict)  # per term, what it chose to report
    refinement_iterations: int = 0
    backward_passes: int = 0
    skipped: str | None = None


Forward = Callable[[torch.Tensor, Sequence[LayerSelector], "int | None"], MapStore]


class GuidanceEngine:
    """Runs guided steps for one sampling run; remembers where each set of layers ends so that later
    forwards stop right after the last layer a loss reads."""

    def __init__(self, terms: Sequence[GuidanceTerm], early_stop: bool = True):
        self.terms = list(terms)
        if len({id(t) for t in self.terms}) != len(self.terms):
            raise ValueError("the same guidance term was added twice to one model")
        self.labels = term_labels(self.terms)
        self.early_stop = early_stop
        self._stop_after: dict[tuple, int] = {}
        self.history: list[GuidanceResult] = []

    # -- helpers -------------------------------------------------------------------------------------------
    @staticmethod
    def _selectors(terms):
        sels: list[LayerSelector] = []
        for t in terms:
            for s in t.selectors:
                if s not in sels:
                    sels.append(s)
        return sels

    def _evaluate(self, forward: Forward, x: torch.Tensor, terms, step: StepInfo):
        """Forward with grad from a leaf copy of x; returns (unweighted total, per-term losses (B,), leaf).

        Per-term losses are keyed by the term object itself (identity), never by its name: two nodes of the same
        kind on one model (Excite Tokens "cat" -> Excite Tokens "frog") are two terms with one name."""
        sels = self._selectors(terms)
        key = tuple(sels)
        leaf = x.detach().requires_grad_(True)
        store = forward(leaf, sels, self._stop_after.get(key) if self.early_stop else None)
        if key not in self._stop_after and store.wanted_seen > 0:
            self._stop_after[key] = store.wanted_seen
        total = None
        per_term = {}
        for t in terms:
            maps = [store.for_selector(sels.index(s)) for s in t.selectors]
            require_maps(t, maps, store)  # a layer choice that reads nothing: a clear error naming the input
            lt = t.loss(maps, step)
            per_term[t] = lt
            total = lt.sum() if total is None else total + lt.sum()
        return total, per_term, leaf

    @staticmethod
    def _grad(total: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor | None:
        if not torch.isfinite(total):
            return None
        (g,) = torch.autograd.grad(total, leaf)
        if not torch.isfinite(g).all():
            return None
        return g

    # -- the step ------------------------------------------------------------------------------------------
    def step(self, forward: Forward, x: torch.Tensor, step: StepInfo,
             progress: Callable[[int, int], None] | None = None) -> GuidanceResult:
        active = [t for t in self.terms if t.active(step)]
        res = GuidanceResult(step=step.i)
        if not active:
            return res
        c2 = step.c_in ** 2
        x_cur = x.detach().clone()

        # Iterative refinement (Attend-and-Excite): only the terms that ask for it at this step. Reference order:
        # a sample refining at iteration j takes the update from its loss L_j, then stops if L_j <= target.
        refine = [(t, t.refinement_threshold(step)) for t in active]
        refine = [(t, thr) for t, thr in refine if thr is not None]
        if refine:
            rterms = [t for t, _ in refine]
            targets = torch.tensor([max(0.0, 1.0 - thr) for _, thr in refine], device=x.device)
            cap = max(t.max_refinement_steps for t in rterms)
            rweights = [t.weight(step) for t in rterms]
            _, per, leaf = self._evaluate(forward, x_cur, rterms, step)
            above = (torch.stack([per[t].detach() for t in rterms], -1) > targets).any(-1)  # (B,)
            going = above
            it = 0
            while bool(going.any()) and it < cap:
                g = self._weighted_grad(per, rterms, rweights, leaf)
                res.backward_passes += 1
                if g is None:
                    res.skipped = "non-finite refinement gradient"
                    log.warning("faithful: non-finite loss or gradient in refinement at step %d; skipped", step.i)
                    break
                x_cur = x_cur - _bmask(going, x_cur) * g / c2
                it += 1
                if progress is not None:
                    progress(it, cap)
                going = going & above
                if it >= cap or not bool(going.any()):
                    break
                _, per, leaf = self._evaluate(forward, x_cur, rterms, step)
                above = (torch.stack([per[t].detach() for t in rterms], -1) > targets).any(-1)
            res.refinement_iterations = it

        # The regular step: every active term, one forward, one backward.
        lat = any(t.channel == "latent" for t in active)
        weights = []
        for t in active:
            w = t.weight(step)
            if t.channel == "noise" and lat:
                w = w * self._noise_to_latent(step, x_cur)
            weights.append(w)
        _, per, leaf = self._evaluate(forward, x_cur, active, step)
        for t in active:
            label = self.labels[t]
            res.losses[label] = [float(v) for v in per[t].detach().float().cpu()]
            diag = getattr(t, "last_diagnostics", None)
            if diag:
                res.diagnostics[label] = diag
        g = self._weighted_grad(per, active, weights, leaf)
        res.backward_passes += 1
        if g is None:
            res.skipped = "non-finite loss or gradient"
            log.warning("faithful: non-finite loss or gradient at step %d; this update is skipped", step.i)
        elif lat:
            x_cur = x_cur - g / c2
        else:
            res.denoised_shift = -_bview(step.sigma, g) * g / _bview(step.c_in, g)
        if not torch.equal(x_cur, x):
            res.delta_x = x_cur - x
        self.history.append(res)
        return res

    def _weighted_grad(self, per, terms, weights, leaf):
        total = None
        for t, w in zip(terms, weights):
            if isinstance(w, torch.Tensor):
                c = (per[t] * w.flatten()).sum()
            else:
                c = per[t].sum() * w
            total = c if total is None else total + c
        return self._grad(total, leaf)

    @staticmethod
    def _noise_to_latent(step: StepInfo, x: torch.Tensor):
        """alpha per sample equivalent to a noise-channel weight of 1 (see module docstring)."""
        s = step.sigma.flatten().to(x.dtype)
        sn = max(float(step.sigma_next), 1e-4)
        return s * (s - sn).clamp(min=0) / sn * step.c_in.flatten().to(x.dtype)


def term_labels(terms: Sequence[GuidanceTerm]) -> dict:
    """A unique report label per term: its name, then "name#2", "name#3" for further terms of the same kind
    (in chain order), so reports of two nodes of one kind stay apart."""
    seen: dict[str, int] = {}
    out = {}
    for t in terms:
        n = seen[t.name] = seen.get(t.name, 0) + 1
        out[t] = t.name if n == 1 else f"{t.name}#{n}"
    return out


def _bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample (B,) or (B, 1, ...) tensor shaped to broadcast over ``like`` (B, C, H, W)."""
    return v.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def _bmask(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return _bview(m.to(like.dtype), like)
