"""Installing Faithful on a ComfyUI ModelPatcher clone, and running guidance inside the stock samplers.

What is installed (all on a clone, under keys unique to this pack):

* ``model_options["transformer_options"]["faithful_registry"]``: the ``Registry`` of guidance terms and
  attention modulations. Every node copies the registry (and the transformer_options dict holding it) before it
  adds to it, whatever the host's clone copies, so upstream models and cached node outputs are never changed.
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

import torch

import comfy.patcher_extension as pe
import comfy.samplers

from . import summary
from .allocator import pin_mmap_threshold
from .registry import REGISTRY_KEY, Registry, check_prompts, run_key  # noqa: F401  (re-exported)
from .hooks import (CAPTURE_KEY, RUN_KEY, SUPPORTED, AttentionPatch, Capture, _install_attention,  # noqa: F401
                    check_supported, transformer_positions)
from .steps import _GuidedSamplerFunction, _LatentUpdater, check_sampler, guided_step  # noqa: F401
from ..guidance_core.engine import GuidanceEngine, StepInfo
from ..guidance_core.maps import CaptureComplete, MapStore

log = logging.getLogger("faithful")

WRAPPER_KEY = "faithful.guidance"



def install(model_patcher, self_attention: bool = False):
    """Clone ``model_patcher`` and make sure Faithful's wrappers and patches are on the clone.

    Returns (clone, registry). The registry is the clone's own copy: add terms to it.
    """
    check_supported(model_patcher)
    m = model_patcher.clone()
    # Copy what this node changes itself, whatever the host's clone copied (see Registry).
    to = dict(m.model_options.get("transformer_options", {}))
    m.model_options["transformer_options"] = to
    prev = to.get(REGISTRY_KEY)
    reg = prev.derive() if isinstance(prev, Registry) else Registry()
    to[REGISTRY_KEY] = reg
    if not m.get_wrappers(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY):
        m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample_wrapper)
        m.add_wrapper_with_key(pe.WrappersMP.PREDICT_NOISE, WRAPPER_KEY, _predict_noise_wrapper)
    _install_attention(m, "attn2")
    if self_attention:
        _install_attention(m, "attn1")
    return m, reg


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
        self.sample_sigmas = sigmas.detach().float().cpu().clone()  # UniPC writes into its sigmas
        self.latent_shape = tuple(latent_shape)
        self.engine = GuidanceEngine(registry.terms, early_stop=registry.early_stop) if registry.terms else None
        self.modulations = [m.bind(self) if hasattr(m, "bind") else m for m in registry.modulations]
        self.observers = [o.bind(self) if hasattr(o, "bind") else o for o in registry.observers]
        self.seen_steps: set[int] = set()
        self.pending_delta = None
        self.sampler_wrapped = False
        self.weights_ready = False
        self.model_sampling = None
        self.current_step: int | None = None
        self.tracker = None    # nodes/steps.py: the sampler-step tracker of a wrapped KSAMPLER
        self.call_step = None  # nodes/steps.py: the step the current model call was chosen to guide
        self.prompts_checked = not registry.prompts

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

    def report(self) -> list:
        if self.engine is None:
            return []
        return [dict(step=r.step, losses=r.losses, refinement_iterations=r.refinement_iterations,
                     backward_passes=r.backward_passes, skipped=r.skipped, diagnostics=r.diagnostics)
                for r in self.engine.history]

    def close(self, output: torch.Tensor | None = None):
        """End of the run: with its output latent (None when the run failed), file the report and the
        observers' recordings under that output's key; drop everything else."""
        self.pending_delta = None
        if output is not None:
            key = run_key(output)
            if self.engine is not None:
                report = self.report()
                self.registry.store_report(key, report)
                for t, label in self.engine.labels.items():
                    summary.send(self.registry.owners.get(t), summary.summarize(label, report))
            for o in self.observers:
                finish = getattr(o, "finish", None)
                if finish is not None:
                    finish(key)
        self.engine = None
        self.modulations = []
        self.observers = []


def _progress(registry: Registry):
    """Refinement progress (A&E's extra updates at a refinement step) on the node that asked for it, so the
    sampler's step bar stays monotone and the artist sees what the wait is. None when no node id is known."""
    node = next((registry.owners.get(t) for t in registry.terms
                 if getattr(t, "max_refinement_steps", 0) and registry.owners.get(t)), None)
    if node is None:
        return None
    import comfy.utils
    bars = {}

    def cb(i, total):
        bar = bars.get(total)
        if bar is None:
            bar = bars[total] = comfy.utils.ProgressBar(total, node_id=node)
        bar.update_absolute(i, total)

    def finish():
        if not bars:
            return
        try:  # mark the node done again in the page (host internals, checked on 0.3.75 and 0.33.0)
            from comfy_execution.progress import get_progress_state
            get_progress_state().finish_progress(node)
        except Exception:  # pragma: no cover - progress is cosmetic
            pass
    cb.finish = finish
    return cb


def _guide(run: RunState, guider, x, timestep, model_options, i: int):
    inner = guider.inner_model
    ms = inner.model_sampling
    with torch.inference_mode(False), torch.enable_grad():
        if not run.weights_ready:
            n = ensure_autograd_weights(inner)
            if n:
                log.debug("faithful: %d inference tensors of the model copied for autograd", n)
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
            # The multi-GPU path (0.33+) runs its forwards under torch.no_grad(): the guidance forward runs on the
            # main device only, so its gradient is kept.
            opts.pop("multigpu_clones", None)
            to = opts.setdefault("transformer_options", {})
            to[CAPTURE_KEY] = Capture(store, latent_hw, leaf.shape[0])
            # Exact, differentiable attention for the with-grad pass, even when an upstream node (ModelAttentionBackend,
            # another pack) chose a backend for sampling that may be quantised (int8) or have no backward.
            to["optimized_attention_override"] = _fused_attention
            try:
                comfy.samplers.calc_cond_batch(inner, [positive], leaf, ts, opts)
            except CaptureComplete:
                pass
            return store

        progress = _progress(run.registry)
        try:
            return run.engine.step(forward, xg, step, progress=progress)
        finally:
            if progress is not None:
                progress.finish()


def _fused_attention(func, *args, **kwargs):
    """Attention of the with-grad guidance forward: PyTorch's fused scaled_dot_product_attention (ComfyUI's own
    attention_pytorch, the default on NVIDIA), whatever the host or an upstream node chose for sampling. Its backward keeps only the
    log-sum-exp per query instead of the (heads, N, N) probabilities, which on CPU (where ComfyUI samples with
    sub-quadratic attention) cut the guided step's peak memory at 512 px from 2.44x to 1.72x a plain step for
    SynGen and from 1.79x to 0.97x for InfSplign (tools/benchmark.py, docs/benchmark.md). Same mathematics, so the gradient is unchanged up to rounding."""
    from comfy.ldm.modules.attention import attention_pytorch
    return attention_pytorch(*args, **kwargs)


def _predict_noise_wrapper(executor, x, timestep, model_options={}, seed=None, *args, **kwargs):
    run = model_options.get("transformer_options", {}).get(RUN_KEY)
    if run is None:
        return executor(x, timestep, model_options, seed, *args, **kwargs)
    if not run.prompts_checked:
        run.prompts_checked = True
        check_prompts(run.registry.prompts, getattr(executor.class_obj, "conds", {}).get("positive"))
    if run.engine is None:
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
    out = None
    try:
        if run.engine is not None and hasattr(sampler, "sampler_function"):
            check_sampler(sampler.sampler_function)  # dpm_fast / dpm_adaptive: a clear error before any step
            sampler = copy.copy(sampler)
            sampler.sampler_function = _GuidedSamplerFunction(sampler.sampler_function, run,
                                                              getattr(sampler, "extra_options", None))
            run.sampler_wrapped = True
        out = executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed, *args, **kwargs)
        return out
    finally:
        to.pop(RUN_KEY, None)
        run.close(out if isinstance(out, torch.Tensor) else None)
