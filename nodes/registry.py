"""The Faithful registry on a model clone: what the nodes chained on it asked for, and what its runs reported.

Lives at ``model_options["transformer_options"]["faithful_registry"]``. Pure bookkeeping; the runtime
(nodes/runtime.py) reads it at each sampling run.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .tokens import PromptCheck  # noqa: F401  (the registry holds them)

REGISTRY_KEY = "faithful_registry"


@dataclass
class Registry:
    """What the Faithful nodes chained on this model asked for, and what its runs reported.

    Every node that adds to it works on its own copy (``derive``), never on the upstream model's: ComfyUI 0.3.x
    deep-copies model_options in ModelPatcher.clone, but 0.33+ copies only dicts and lists
    (``comfy.utils.deepcopy_list_dict``) and passes this object by reference, so relying on the host's copy would
    let a downstream node's terms leak into the upstream model and into every later prompt that reuses it.
    The terms, modulations and observers themselves are shared between copies and hold no per-run state.
    """
    terms: list = field(default_factory=list)
    modulations: list = field(default_factory=list)
    observers: list = field(default_factory=list)
    # The prompts the nodes were given, checked against the sampler's positive conditioning at each run's start.
    prompts: list = field(default_factory=list)
    # term -> the id of the node that added it (for the summary shown on that node after a run)
    owners: dict = field(default_factory=dict)
    # Stop the with-grad forward after the last layer a loss reads (False: run it to the end; the benchmark
    # measures the saving that way).
    early_stop: bool = True
    # Per-run reports (losses, refinement counts, backward passes per guided step), keyed by the run's output
    # (see ``run_key``), newest last, at most MAX_RUNS. Read-only for later runs: nothing feeds back into sampling.
    runs: "OrderedDict[str, list]" = field(default_factory=OrderedDict)

    MAX_RUNS = 16

    def derive(self) -> "Registry":
        """A copy for a new node's clone: the same terms, own lists, no run reports."""
        return Registry(list(self.terms), list(self.modulations), list(self.observers), list(self.prompts),
                        dict(self.owners), early_stop=self.early_stop)

    @property
    def empty(self) -> bool:
        return not (self.terms or self.modulations or self.observers)

    def store_report(self, key: str, report: list) -> None:
        self.runs.pop(key, None)
        self.runs[key] = report
        while len(self.runs) > self.MAX_RUNS:
            self.runs.popitem(last=False)

    def report_for(self, samples: torch.Tensor | None = None) -> list:
        """The report of the run whose output latent is ``samples`` (the sampler's LATENT["samples"]), or of the
        newest run when ``samples`` is None; [] when there is none."""
        if samples is None:
            return next(reversed(self.runs.values())) if self.runs else []
        return self.runs.get(run_key(samples), [])

    @property
    def last_report(self) -> list:
        return self.report_for(None)


def positive_contexts(positive) -> list[torch.Tensor]:
    """The cross-attention contexts (B, T, C) of a sampler's processed positive conditionings."""
    out = []
    for c in positive or []:
        mc = c.get("model_conds", {}) if isinstance(c, dict) else {}
        ca = mc.get("c_crossattn")
        t = getattr(ca, "cond", None)
        if isinstance(t, torch.Tensor):
            out.append(t)
    return out


def check_prompts(checks: list, positive) -> None:
    """Raise a clear ValueError when a node's prompt is not the sampler's positive prompt (its token positions
    would point at the wrong words and guide the wrong thing). Several positive conditionings (areas,
    combinations) are fine when one of them matches."""
    ctxs = positive_contexts(positive)
    if not ctxs:
        return
    for chk in checks:
        if any(chk.matches(c) for c in ctxs):
            continue
        lens = sorted({int(c.shape[1]) for c in ctxs})
        raise ValueError(
            f"{chk.node}: its prompt '{chk.text[:120]}' is not the prompt of the sampler's positive conditioning "
            f"(it has {chk.n_tokens} tokens, the sampler's positive has {', '.join(map(str, lens))}, and the "
            "encodings differ). Type exactly the same prompt as in the CLIPTextEncode that feeds the sampler's "
            "positive input, and connect the same CLIP to both.")


def run_key(samples: torch.Tensor) -> str:
    """A fingerprint of a sampler run's output latent (B, C, H, W): what the OUTER_SAMPLE wrapper returns is
    exactly the LATENT["samples"] the sampler node outputs, so a preview or report given that latent finds its
    own run even when two samplers share one guided model."""
    t = samples.detach().float().cpu().contiguous()
    return hashlib.sha1(str(tuple(t.shape)).encode() + t.numpy().tobytes()).hexdigest()
