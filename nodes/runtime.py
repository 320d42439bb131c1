"""Installing Faithful on a ComfyUI ModelPatcher clone, and running guidance inside the stock samplers.

What is installed (all on a clone, under keys unique to this pack):

* ``model_options["transformer_options"]["faithful_registry"]``: the ``Registry`` of guidance terms and
  attention modulations. ModelPatcher.clone deep-copies model_options, so every node that adds a term works on
  its own copy and upstream models are never changed.
* attn2 (and, for layouts, attn1) replace patches on every transformer block of the UNet, found by walking the
  model; a replace another pack had installed at that place is kept and called (chained), never dropped.
* an OUTER_SAMPLE wrapper that creates the per-run ``RunState`` in the run's own copy of the options and
  removes it in ``finally``, and a PREDICT_NOISE wrapper that does the guided step.

Latent update with the paper's semantics (update z, then predict from it, then the sampler steps from the
updated latent): the PREDICT_NOISE wrapper computes delta_x and predicts from x + delta_x; the sampler's own x
is then moved by delta_x in place by a thin proxy around the sampler's model (installed through a copy of the
KSAMPLER passed down the OUTER_SAMPLE executor). The proxy sees the sampler's x before the inpainting blend,
so with a denoise mask m (x_in = m*x + (1-m)*noised_original) the chain rule gives dL/dx = m * dL/dx_in and
the sampler's x moves by m * delta_x; the unmasked part keeps following the original image. For a sampler
that is not a KSAMPLER the update is applied to the x given to predict_noise. Which call is the first
evaluation of each step, and where each sampler keeps its state, is decided in nodes/steps.py.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field

import torch

import comfy.patcher_extension as pe
import comfy.samplers
from comfy.ldm.modules.attention import optimized_attention

from .allocator import pin_mmap_threshold
from .steps import _GuidedSamplerFunction, _LatentUpdater, check_sampler, guided_step  # noqa: F401
from ..guidance_core.attention import attention_probs, layer_geometry
from ..guidance_core.engine import GuidanceEngine, StepInfo
from ..guidance_core.maps import CaptureComplete, MapStore

log = logging.getLogger("faithful")

REGISTRY_KEY = "faithful_registry"
RUN_KEY = "faithful_run"
CAPTURE_KEY = "faithful_capture"
WRAPPER_KEY = "faithful.guidance"

SUPPORTED = "SD1.x, SD2.x and SDXL (UNet models with cross-attention)"


@dataclass
class Registry:
    """What the Faithful nodes chained on this model asked for. Deep-copied with the model options."""
    terms: list = field(default_factory=list)
    modulations: list = field(default_factory=list)
    observers: list = field(default_factory=list)
    # The last run's per-step report (losses, refinement counts, backward passes), for previews and tests.
    # Read-only for the next run: nothing in it feeds back into sampling.
    last_report: list = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.terms or self.modulations or self.observers)


# -- finding the transformer blocks --------------------------------------------------------------------------

def transformer_positions(model_patcher) -> list[tuple[str, int, int]]:
    """Every (block kind, block index, transformer index) of the UNet, found by walking the model."""
    dm = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    if dm is None or not hasattr(dm, "input_blocks") or not hasattr(dm, "output_blocks"):
        name = type(dm).__name__ if dm is not None else type(getattr(model_patcher, "model", None)).__name__
        raise ValueError(f"Faithful cannot guide this model ({name}): it supports {SUPPORTED}. "
                         "DiT / flow models such as Flux or SD3 have no UNet cross-attention to steer.")
    out = []
    groups = [("input", list(dm.input_blocks)), ("middle", [dm.middle_block]), ("output", list(dm.output_blocks))]
    for kind, blocks in groups:
        for idx, block in enumerate(blocks):
            for mod in block.modules():
                tb = getattr(mod, "transformer_blocks", None)
                if tb is not None and hasattr(mod, "proj_in"):
                    for j in range(len(tb)):
                        out.append((kind, idx, j))
    if not out:
        raise ValueError(f"Faithful found no cross-attention in this model; it supports {SUPPORTED}.")
    return out


def check_supported(model_patcher) -> None:
    transformer_positions(model_patcher)
    ms = model_patcher.get_model_object("model_sampling")
    import comfy.model_sampling as msm
    if isinstance(ms, getattr(msm, "CONST", ())) or not isinstance(ms, msm.ModelSamplingDiscrete):
        raise ValueError(f"Faithful cannot guide this model's sampling ({type(ms).__name__}); it supports {SUPPORTED}.")


# -- attention patches ---------------------------------------------------------------------------------------

class AttentionPatch:
    """attn1/attn2 replace: runs the chained patch (or ComfyUI's attention), and lets Faithful read or modulate.

    Called as ``patch(q, k, v, extra_options)`` with q (B, N, H*D), k and v (B, T, H*D).
    """

    def __init__(self, which: str, prev=None):
        self.which = which
        self.prev = prev

    def default(self, q, k, v, extra_options):
        if self.prev is not None:
            return self.prev(q, k, v, extra_options)
        return optimized_attention(q, k, v, extra_options["n_heads"], attn_precision=extra_options.get("attn_precision"),
                                   transformer_options=extra_options)

    def __call__(self, q, k, v, extra_options):
        run = extra_options.get(RUN_KEY)
        out = None
        if run is not None and run.modulations:
            for mod in run.modulations:
                out = mod(self.which, q, k, v, extra_options, self.default)
                if out is not None:
                    break
        if out is None:
            out = self.default(q, k, v, extra_options)
        if self.which == "attn2":
            cap = extra_options.get(CAPTURE_KEY)
            readers = [cap] if cap is not None else (run.observers if run is not None else [])
            # the sampler's own forwards feed the observers, never guidance passes
            if readers:
                score_fn = _score_fn(run, q, k, extra_options)
                for r in readers:
                    (r.record if r is cap else r)(q, k, extra_options, score_fn=score_fn)
        return out


def _score_fn(run, q, k, extra_options):
    """The first modulation's score map for this cross-attention call (None when none is active), so losses and
    recorders read the probabilities the model actually used."""
    for mod in getattr(run, "modulations", None) or []:
        get = getattr(mod, "score_fn", None)
        fn = get("attn2", q, k, extra_options) if get is not None else None
        if fn is not None:
            return fn
    return None


def _install_attention(m, which: str) -> None:
    to = m.model_options.setdefault("transformer_options", {})
    existing = to.get("patches_replace", {}).get(which, {})
    for kind, idx, j in transformer_positions(m):
        key3 = (kind, idx, j)
        prev = existing.get(key3, existing.get((kind, idx)))
        if isinstance(prev, AttentionPatch):
            continue
        m.set_model_patch_replace(AttentionPatch(which, prev), which, kind, idx, j)


def install(model_patcher, self_attention: bool = False):
    """Clone ``model_patcher`` and make sure Faithful's wrappers and patches are on the clone.

    Returns (clone, registry). The registry is the clone's own (deep-copied) one: add terms to it.
    """
    check_supported(model_patcher)
    m = model_patcher.clone()
    to = m.model_options.setdefault("transformer_options", {})
    reg = to.get(REGISTRY_KEY)
    if reg is None:
        reg = Registry()
        to[REGISTRY_KEY] = reg
    if not m.get_wrappers(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY):
        m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample_wrapper)
        m.add_wrapper_with_key(pe.WrappersMP.PREDICT_NOISE, WRAPPER_KEY, _predict_noise_wrapper)
    _install_attention(m, "attn2")
    if self_attention:
        _install_attention(m, "attn1")
    return m, reg


# -- capture -------------------------------------------------------------------------------------------------

class Capture:
    """Feeds a MapStore from the attn2 calls of one conditional forward."""

    def __init__(self, store: MapStore, latent_hw: tuple[int, int], batch: int):
        self.store = store
        self.latent_hw = latent_hw
        self.batch = batch

    def record(self, q, k, extra_options, score_fn=None):
        shape = extra_options.get("original_shape")
        if shape is not None and tuple(shape[-2:]) != tuple(self.latent_hw):
            return  # an area-conditioned crop: not a full-image map
        geo = layer_geometry(q.shape[1], self.latent_hw)
        block = extra_options.get("block")
        if geo is None or block is None:
            return
        f, h, w = geo
        info = self.store.classify(block[0], int(block[1]), int(extra_options.get("block_index", 0)), f)
        if not info.wanted:
            return
        heads = extra_options["n_heads"]
        probs = attention_probs(q, k, heads, score_fn=score_fn)  # (Bt, N, T)
        bt = probs.shape[0]
        probs = probs.reshape(bt, h, w, probs.shape[-1])
        if bt != self.batch and bt % self.batch == 0:  # several positive conds batched: average them
            probs = probs.reshape(bt // self.batch, self.batch, h, w, -1).mean(0)
        self.store.add(info, probs, heads)


# -- weights usable by autograd inside the server --------------------------------------------------------------

def ensure_autograd_weights(module: torch.nn.Module) -> int:
    """Replace inference-mode parameters and buffers by ordinary copies (values unchanged).

    The server loads checkpoints under ``torch.inference_mode()``; autograd cannot save such tensors for
    backward. Must run outside inference mode. Returns how many tensors were replaced (0 once done, so later
    prompts on the cached model pay nothing; a weight patch restored by ModelPatcher is copied again).
    """
    n = 0
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and p.is_inference():
                new = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
                new.__dict__.update(p.__dict__)
                mod._parameters[name] = new
                n += 1
        for name, b in list(mod._buffers.items()):
            if b is not None and b.is_inference():
                mod._buffers[name] = b.clone()
                n += 1
    return n


# -- per-run state and the wrappers ----------------------------------------------------------------------------

class RunState:
    """Everything one sampling run needs; lives in that run's copy of the model options only."""

    def __init__(self, registry: Registry, sigmas: torch.Tensor, latent_shape):
        self.registry = registry
        self.sample_sigmas = sigmas.detach().float().cpu()
        self.latent_shape = tuple(latent_shape)
        # FAITHFUL_NO_EARLY_STOP=1 runs every guidance forward to the end (for the benchmark's comparison).
        early = os.environ.get("FAITHFUL_NO_EARLY_STOP", "") != "1"
        self.engine = GuidanceEngine(registry.terms, early_stop=early) if registry.terms else None
        self.modulations = [m.bind(self) if hasattr(m, "bind") else m for m in registry.modulations]
        self.observers = [o.bind(self) if hasattr(o, "bind") else o for o in registry.observers]
        self.seen_steps: set[int] = set()
        self.pending_delta = None
        self.sampler_wrapped = False
        self.weights_ready = False
        self.model_sampling = None
        self.current_step: int | None = None

    @property
    def n_steps(self) -> int:
        return len(self.sample_sigmas) - 1

    def step_index(self, sigma: torch.Tensor) -> int | None:
        s = float(sigma.flatten()[0])
        ss = self.sample_sigmas[:-1]
        if len(ss) == 0:
            return None
        i = int(torch.argmin((ss - s).abs()))
        return i if abs(float(ss[i]) - s) <= 1e-4 * max(1.0, abs(s)) else None

    def close(self):
        self.pending_delta = None
        if self.engine is not None:
            self.registry.last_report = [dict(step=r.step, losses=r.losses, refinement_iterations=r.refinement_iterations,
                                              backward_passes=r.backward_passes, skipped=r.skipped,
                                              diagnostics=r.diagnostics)
                                         for r in self.engine.history]
        self.engine = None


def _progress():
    try:
        import comfy.utils
        bars = {}

        def cb(i, total):
            bar = bars.get(total)
            if bar is None:
                bar = bars[total] = comfy.utils.ProgressBar(total)
            bar.update_absolute(i, total)
        return cb
    except Exception:  # pragma: no cover - progress is cosmetic
        return None


def _guide(run: RunState, guider, x, timestep, model_options, i: int):
    inner = guider.inner_model
    ms = inner.model_sampling
    with torch.inference_mode(False), torch.enable_grad():
        if not run.weights_ready:
            n = ensure_autograd_weights(inner)
            if n:
                log.info("faithful: %d inference tensors of the model copied for autograd", n)
            run.weights_ready = True
            pin_mmap_threshold(x.device)
        xg = x.detach().clone()
        ts = timestep.detach().clone()
        c_in = ms.calculate_input(ts, torch.ones((xg.shape[0],) + (1,) * (xg.dim() - 1), device=xg.device, dtype=torch.float32))
        step = StepInfo(i=i, n=run.n_steps, sigma=ts.float(), sigma_next=float(run.sample_sigmas[i + 1]), c_in=c_in)
        positive = guider.conds.get("positive")
        if positive is None:
            raise ValueError("Faithful guidance needs a positive conditioning")
        latent_hw = tuple(xg.shape[-2:])

        def forward(leaf, selectors, stop_after):
            store = MapStore(selectors, latent_hw, stop_after)
            opts = pe.copy_nested_dicts(model_options)
            to = opts.setdefault("transformer_options", {})
            to[CAPTURE_KEY] = Capture(store, latent_hw, leaf.shape[0])
            to.setdefault("optimized_attention_override", _fused_attention)  # another pack's override wins
            try:
                comfy.samplers.calc_cond_batch(inner, [positive], leaf, ts, opts)
            except CaptureComplete:
                pass
            return store

        return run.engine.step(forward, xg, step, progress=_progress())


def _fused_attention(func, *args, **kwargs):
    """Attention of the with-grad guidance forward: PyTorch's fused scaled_dot_product_attention (ComfyUI's own
    attention_pytorch, the default on NVIDIA), whatever the host chose for sampling. Its backward keeps only the
    log-sum-exp per query instead of the (heads, N, N) probabilities, which on CPU (where ComfyUI samples with
    sub-quadratic attention) cut the guided step's peak memory at 512 px from 2.44x to 1.72x a plain step for
    SynGen and from 1.79x to 0.97x for InfSplign (tools/benchmark.py, docs/benchmark.md). Same mathematics, so the gradient is unchanged up to rounding."""
    from comfy.ldm.modules.attention import attention_pytorch
    return attention_pytorch(*args, **kwargs)


def _predict_noise_wrapper(executor, x, timestep, model_options={}, seed=None, *args, **kwargs):
    run = model_options.get("transformer_options", {}).get(RUN_KEY)
    if run is None or run.engine is None:
        return executor(x, timestep, model_options, seed, *args, **kwargs)
    i = guided_step(run, timestep)
    run.current_step = i
    if i is None:
        return executor(x, timestep, model_options, seed, *args, **kwargs)
    res = _guide(run, executor.class_obj, x, timestep, model_options, i)
    x_pred = x
    if res.delta_x is not None:
        x_pred = x + res.delta_x.to(x.dtype)
    out = executor(x_pred, timestep, model_options, seed, *args, **kwargs)
    if res.denoised_shift is not None:
        out = out + res.denoised_shift.to(out.dtype)
    if res.delta_x is not None:
        if run.sampler_wrapped:
            run.pending_delta = res.delta_x
        else:
            x.add_(res.delta_x.to(x.dtype))
    return out


def _outer_sample_wrapper(executor, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                          disable_pbar=False, seed=None, *args, **kwargs):
    guider = executor.class_obj
    to = guider.model_options.setdefault("transformer_options", {})
    reg = to.get(REGISTRY_KEY)
    if reg is None or reg.empty:
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, *args, **kwargs)
    run = RunState(reg, sigmas, noise.shape)
    to[RUN_KEY] = run
    try:
        if run.engine is not None and hasattr(sampler, "sampler_function"):
            check_sampler(sampler.sampler_function)  # dpm_fast / dpm_adaptive: a clear error before any step
            sampler = copy.copy(sampler)
            sampler.sampler_function = _GuidedSamplerFunction(sampler.sampler_function, run,
                                                              getattr(sampler, "extra_options", None))
            run.sampler_wrapped = True
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, *args, **kwargs)
    finally:
        to.pop(RUN_KEY, None)
        run.close()
