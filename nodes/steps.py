"""Which model evaluation is the first of each sampler step. Host internals, checked against ComfyUI 0.3.75 and
0.33.0 (comfy/k_diffusion/sampling.py, comfy/extra_samplers/uni_pc.py, comfy/samplers.py).

Attend-and-Excite (Chefer et al. 2023, Alg. 1), SynGen (Rassin et al. 2023, Eq. 6) and InfSplign guide once per
sampler step i, on the state z_i at sigma_i: z_i <- z_i + delta_i (delta_i = -alpha (1 + sigma_i^2) dL/dz_i,
latent shape (B, C, H, W)), then the model predicts from z_i and the sampler steps on from the moved z_i. In a
ComfyUI sampler a step may call the model several times (Heun's corrector, DPM-2's midpoint, UniPC's corrector
evaluation), so the pack must find the step's FIRST evaluation and move the state the sampler keeps.

What the pack legitimately knows: the KSAMPLER's ``sampler_function`` (its ``__name__``) and ``extra_options``,
the schedule ``sigmas`` (n + 1 values), every call of the sampler's model with the sampler's own x and sigma
(runtime._LatentUpdater stands in for the model), and the sampler's ``callback``, which every k-diffusion
sampler and UniPC call once per step i with {"i": i, "x": ..., "denoised": ...}: right after step i's first
evaluation (k-diffusion), after all of step i (UniPC).

**Generic rule.** The first evaluation of step i is the first model call after callback(i - 1) (after the start
of sampling for i = 0) whose sigma is sigmas[i], not counting the calls that still belong to step i - 1. A step
whose callback comes with no such call raises a ValueError (never a silent skip).

**The table** ``SPECS[name].correctors`` gives, for every sampler that calls the model after its step's
callback, how many such calls step i makes (Heun's corrector, the midpoints of dpm_2, dpm_2_ancestral,
dpmpp_2s_ancestral, dpmpp_sde, seeds_2/3). Sigma alone cannot tell them from step i+1's first evaluation:
Heun's corrector ``model(x + d dt, sigma_{i+1})`` has step i+1's sigma, and so, with the default eta = 1, has the
ancestral midpoint sqrt(sigma_i sigma_down) since sigma_down = sigma_{i+1}^2 / sigma_i (found by the tests).
Extra calls at the step's own sigma (sa_solver_pece's re-evaluation) never match and need no entry.

**Where the update goes** (``SPECS[name].state``):

* ``"model_x"`` (default): the x given to the model at the first evaluation is the sampler's loop variable, so
  it is moved in place right after that call (before the sampler computes d = (x - D) / sigma from it).
* ``"vp_callback"`` (UniPC): the model gets a temporary ``x_vp * sqrt(1 + sigma^2)`` and UniPC keeps its state in
  variance-preserving units x_vp = x / sqrt(1 + sigma^2), corrected after the evaluation. The temporary is left
  alone (moving it would make UniPC's x0 = D - delta) and callback(i)'s x, UniPC's corrected state, is moved by
  delta / sqrt(1 + sigma_i^2).
* ``"predicted"`` (sa_solver, sa_solver_pece): the model sees, and the callback reports, the predicted state;
  it is moved in place, but from the second step on the stochastic Adams corrector rebuilds the state from the
  previous state and the (guided) denoised history, so the shift reaches the result through the denoised
  estimate only. Documented in the README's sampler table.

``REJECTED``: dpm_fast and dpm_adaptive choose their own sigmas (``sigma_min``/``sigma_max`` only), so no
evaluation belongs to a schedule step: a ValueError at sampling start names the samplers that work.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

CHECKED_HOSTS = ("0.3.75", "0.33.0")


@dataclass(frozen=True)
class SamplerSpec:
    # model calls after callback(i) that still belong to step i: an int, or f(i, sigmas, extra_options) -> int
    correctors: int | Callable[[int, torch.Tensor, dict], int] = 0
    state: str = "model_x"  # "model_x" | "vp_callback" | "predicted"

    def corrector_calls(self, i: int, sigmas: torch.Tensor, extra_options: dict) -> int:
        c = self.correctors
        return int(c(i, sigmas, extra_options or {}) if callable(c) else c)


def _if_next(n: int):
    """n extra calls after callback(i) whenever sigma_{i+1} > 0 (midpoints / correctors of one-step methods)."""
    return lambda i, s, o: n if float(s[i + 1]) > 0 else 0


def _heunpp2(i, s, o):
    end = float(s[-1])
    if float(s[i + 1]) == end:
        return 0
    return 1 if float(s[i + 2]) == end else 2  # Heun (sigma_{i+1}) or Heun++ (sigma_{i+1}, sigma_{i+2})


def _ancestral_midpoint(i, s, o):
    """DPM-2 / DPM-Solver++(2S) ancestral: a midpoint sqrt(sigma_i sigma_down) unless sigma_down = 0. With the
    default eta = 1, sigma_down = sigma_{i+1}^2 / sigma_i, so the midpoint IS sigma_{i+1}: only the count tells it
    from step i+1's first evaluation."""
    s0, s1 = float(s[i]), float(s[i + 1])
    eta = float(o.get("eta", 1.0))
    if s1 <= 0:
        return 0
    up = min(s1, eta * (s1 ** 2 * (s0 ** 2 - s1 ** 2) / s0 ** 2) ** 0.5)
    return 1 if (s1 ** 2 - up ** 2) > 0 else 0


# KSAMPLER.sampler_function.__name__ -> what differs from the generic rule: every sampler that calls the model
# after its step's callback (with the exact count, so that a call landing on sigma_{i+1} by construction, as
# Heun's corrector or the eta = 1 ancestral midpoint, is never taken for step i+1), and where the update goes
# when it is not the model's x. Every other sampler of both hosts' comfy.samplers.SAMPLER_NAMES makes one call
# per step, before its callback (tests/test_samplers.py runs each of them). sa_solver_pece's re-evaluation after
# the callback is at sigma_i (never sigma_{i+1}) and absent at step 0, so the generic rule handles it.
SPECS: dict[str, SamplerSpec] = {
    "sample_heun": SamplerSpec(correctors=_if_next(1)),     # corrector at sigma_{i+1}
    "sample_heunpp2": SamplerSpec(correctors=_heunpp2),
    "sample_dpm_2": SamplerSpec(correctors=_if_next(1)),    # midpoint sqrt(sigma_i sigma_{i+1})
    "sample_dpm_2_ancestral": SamplerSpec(correctors=_ancestral_midpoint),
    "sample_dpmpp_2s_ancestral": SamplerSpec(correctors=_ancestral_midpoint),
    "sample_dpmpp_2s_ancestral_cfg_pp": SamplerSpec(correctors=_ancestral_midpoint),
    "sample_dpmpp_sde": SamplerSpec(correctors=_if_next(1)),  # at lambda_i + r h (= sigma_{i+1} when r = 1)
    "sample_dpmpp_sde_gpu": SamplerSpec(correctors=_if_next(1)),
    "sample_seeds_2": SamplerSpec(correctors=_if_next(1)),    # SamplerSEEDS2's r = 1 puts it at sigma_{i+1}
    "sample_seeds_3": SamplerSpec(correctors=_if_next(2)),
    "sample_exp_heun_2_x0": SamplerSpec(correctors=_if_next(1)),      # 0.33.0: seeds_2 with r = 1
    "sample_exp_heun_2_x0_sde": SamplerSpec(correctors=_if_next(1)),  # 0.33.0
    "sample_unipc": SamplerSpec(state="vp_callback"),
    "sample_unipc_bh2": SamplerSpec(state="vp_callback"),
    "sample_sa_solver": SamplerSpec(state="predicted"),
    "sample_sa_solver_pece": SamplerSpec(state="predicted"),
}

REJECTED = {"dpm_fast_function": "dpm_fast", "dpm_adaptive_function": "dpm_adaptive",
            "sample_dpm_fast": "dpm_fast", "sample_dpm_adaptive": "dpm_adaptive"}


def function_name(fn) -> str:
    """The sampler function's name, through functools.partial and decorators (``__wrapped__``)."""
    seen = 0
    while seen < 16:
        seen += 1
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        else:
            break
    return getattr(fn, "__name__", type(fn).__name__)


def supported_names() -> list[str]:
    try:
        import comfy.samplers
        names = list(comfy.samplers.SAMPLER_NAMES)
    except Exception:  # pragma: no cover - only without a host
        names = []
    bad = set(REJECTED.values())
    return [n for n in names if n not in bad]


def check_sampler(fn) -> SamplerSpec:
    """The spec of a sampler function; a ValueError for the samplers whose evaluations ignore the schedule."""
    name = function_name(fn)
    if name in REJECTED:
        raise ValueError(f"Faithful cannot guide the '{REJECTED[name]}' sampler: it picks its own sigmas between "
                         "sigma_min and sigma_max, so no model evaluation belongs to a step of the schedule. Use "
                         "one of: " + ", ".join(supported_names()) + ".")
    return SPECS.get(name, SamplerSpec())


def _same_sigma(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


class StepTracker:
    """Follows one sampling run: which model call is the first evaluation of which step (see the module doc).

    ``on_call(sigma)`` before each model call returns the step index it is the first evaluation of, or None;
    ``callback(d)`` wraps the sampler's k-diffusion callback (d = {"i", "x", "denoised", ...}).
    """

    def __init__(self, sigmas: torch.Tensor, spec: SamplerSpec, extra_options: dict | None = None, name: str = ""):
        self.sigmas = sigmas.detach().float().cpu().clone()  # UniPC writes 0.001 over the last sigma in place
        self.spec = spec
        self.name = name
        self.extra_options = dict(extra_options or {})
        self.expect = 0       # the step whose first evaluation comes next
        self.skip = 0         # calls still owed to the previous step's corrector
        self.found: dict[int, int] = {}   # step -> ordinal of its first-evaluation call
        self.calls = 0
        self.deferred: dict[int, torch.Tensor] = {}  # step -> update for callback(i)'s x ("vp_callback")

    @property
    def n_steps(self) -> int:
        return len(self.sigmas) - 1

    def on_call(self, sigma) -> int | None:
        self.calls += 1
        if self.skip > 0:
            self.skip -= 1
            return None
        i = self.expect
        if i >= self.n_steps or i in self.found:
            return None
        s = float(torch.as_tensor(sigma).flatten()[0])
        if not _same_sigma(s, float(self.sigmas[i])):
            return None
        self.found[i] = self.calls
        return i

    def after_call(self, i: int, x: torch.Tensor, delta: torch.Tensor) -> None:
        """Apply step i's update ``delta`` (already masked, shaped like x) where the sampler keeps its state."""
        if self.spec.state == "vp_callback":
            self.deferred[i] = delta
        else:
            x.add_(delta.to(x.dtype))

    def callback(self, d: dict) -> None:
        i = int(d.get("i", -1))
        if 0 <= i < self.n_steps:
            if i not in self.found:
                raise ValueError(
                    f"Faithful found no model evaluation at sigma {float(self.sigmas[i]):.6g} for step {i} of the "
                    f"'{self.name}' sampler: its evaluations do not follow the schedule, so guidance cannot be "
                    "applied at each step. Use one of: " + ", ".join(supported_names()) + ".")
            delta = self.deferred.pop(i, None)
            if delta is not None and isinstance(d.get("x"), torch.Tensor):
                x = d["x"]
                scale = float((1.0 + float(self.sigmas[i]) ** 2) ** -0.5)
                x.add_((delta * scale).to(x.dtype))
            self.expect = i + 1
            self.skip = self.spec.corrector_calls(i, self.sigmas, self.extra_options) if i + 1 < self.n_steps else 0


# -- the proxies runtime.py installs through a copy of the KSAMPLER --------------------------------------------

def guided_step(run, timestep) -> int | None:
    """The step this model call is the first evaluation of, else None (see nodes/steps.py)."""
    if getattr(run, "tracker", None) is not None:
        i, run.call_step = getattr(run, "call_step", None), None  # set by _LatentUpdater; one guidance per call
        return i
    # a sampler that is not a KSAMPLER: no proxy sees its calls, so take the first call at each schedule sigma
    i = run.step_index(timestep)
    if i is None or i in run.seen_steps:
        return None
    run.seen_steps.add(i)
    return i


class _LatentUpdater:
    """Stands in for the sampler's model (KSamplerX0Inpaint): tells the run's StepTracker about each call (so
    guidance runs at the first evaluation of each step only), and after a guided call moves the sampler's state by
    that call's update (masked by the denoise mask), where nodes/steps.py says the sampler keeps it. Everything
    else is forwarded."""

    def __init__(self, model, run):
        self._model = model
        self._run = run

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, x, sigma, *args, **kwargs):
        run = self._run
        tracker = getattr(run, "tracker", None)
        run.pending_delta = None
        i = tracker.on_call(sigma) if tracker is not None else None
        run.call_step = i
        try:
            out = self._model(x, sigma, *args, **kwargs)
        finally:
            run.call_step = None
        d = run.pending_delta
        if d is not None:
            run.pending_delta = None
            mask = kwargs.get("denoise_mask")
            if mask is not None:
                mo = kwargs.get("model_options", {})
                fn = mo.get("denoise_mask_function")
                if fn is not None:
                    mask = fn(sigma, mask, extra_options={"model": self._model.inner_model, "sigmas": self._model.sigmas})
                d = d * mask
            if tracker is not None and i is not None:
                tracker.after_call(i, x, d)
            else:
                x.add_(d.to(x.dtype))
        return out


class _GuidedSamplerFunction:
    """The KSAMPLER's sampler function with the model replaced by _LatentUpdater and the callback by the run's
    StepTracker (which then calls the original callback, if any)."""

    def __init__(self, fn, run, extra_options=None):
        self.fn = fn
        self.run = run
        self.extra_options = dict(extra_options or {})
        self.__wrapped__ = fn
        self.__name__ = function_name(fn)

    def __call__(self, model, x, sigmas, *args, **kwargs):
        tracker = StepTracker(sigmas, check_sampler(self.fn), self.extra_options, self.__name__)
        self.run.tracker = tracker
        args = list(args)
        user_cb = args[1] if len(args) >= 2 else kwargs.get("callback")

        def callback(d):
            tracker.callback(d)
            if user_cb is not None:
                user_cb(d)

        if len(args) >= 2:
            args[1] = callback
        else:
            kwargs["callback"] = callback
        return self.fn(_LatentUpdater(model, self.run), x, sigmas, *args, **kwargs)
