"""Excite Tokens: Attend-and-Excite (Chefer et al., SIGGRAPH 2023) as a MODEL patch for the stock samplers."""
from __future__ import annotations

from comfy_api.latest import io

from ..guidance_core.excite import ExciteSchedule, ExciteTerm
from .runtime import install
from .tokens import PromptTokens, parse_index_list, parse_word_list


def parse_thresholds(text: str) -> dict[float, float]:
    """``"0:0.05, 0.2:0.5, 0.4:0.8"`` -> {0.0: 0.05, 0.2: 0.5, 0.4: 0.8} (step fraction: attention threshold)."""
    out = {}
    for part in parse_word_list(text):
        try:
            a, b = part.split(":")
            f, t = float(a), float(b)
        except ValueError:
            raise ValueError(f"refinement_thresholds: '{part}' should look like 'fraction:threshold', e.g. '0.2:0.5'") from None
        if not (0.0 <= f < 1.0 and 0.0 <= t <= 1.0):
            raise ValueError(f"refinement_thresholds: '{part}': the step fraction must be in [0, 1) and the threshold in [0, 1]")
        out[f] = t
    return out


class ExciteTokens(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulExciteTokens",
            display_name="Excite Tokens (Attend-and-Excite)",
            category="faithful",
            description=(
                "Makes every subject you name appear. During the first half of sampling it reads how strongly each "
                "subject word is attended in the 16x16 cross-attention maps and nudges the latent until the most "
                "neglected subject is attended (Attend-and-Excite, Chefer et al. 2023). Connect the MODEL to a "
                "KSampler whose positive prompt is the same text as 'prompt'. Costs one extra forward and backward "
                "per guided step."),
            inputs=[
                io.Model.Input("model", tooltip="The model to guide (SD1.x, SD2.x or SDXL). It is cloned; the input model is not changed."),
                io.Clip.Input("clip", tooltip="The CLIP used by your CLIPTextEncode, to find where the subject words sit in the prompt."),
                io.String.Input("prompt", multiline=True, default="a cat and a frog",
                                tooltip="The positive prompt, exactly as typed in the CLIPTextEncode that feeds the sampler (weights like (cat:1.2) are fine)."),
                io.String.Input("subjects", default="cat, frog",
                                tooltip="Comma-separated subject words from the prompt that must appear (nouns such as 'cat, frog'; do not list colours or other attributes)."),
                io.Float.Input("scale_factor", default=20.0, min=0.0, max=200.0, step=0.5, optional=True,
                               tooltip="Step size of the latent update (the paper's 20). It decays as sqrt(linspace(1, 0.5)) over the steps."),
                io.Float.Input("guided_fraction", default=0.5, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Fraction of the sampler steps that are guided (the paper guides 25 of 50 steps = 0.5)."),
                io.Boolean.Input("iterative_refinement", default=True, optional=True,
                                 tooltip="At the refinement steps, keep updating the latent until every subject reaches its attention threshold (up to max_refinement_steps)."),
                io.String.Input("refinement_thresholds", default="0:0.05, 0.2:0.5, 0.4:0.8", optional=True,
                                tooltip="Refinement steps as 'step fraction:threshold' pairs; the paper's iterations 0, 10, 20 of 50 with thresholds 0.05, 0.5, 0.8."),
                io.Int.Input("max_refinement_steps", default=20, min=0, max=100, optional=True,
                             tooltip="Cap on extra updates per refinement step (the paper's 20). Each costs one forward and backward."),
                io.Boolean.Input("smoothing", default=True, optional=True,
                                 tooltip="Gaussian smoothing (3x3, sigma 0.5) of each subject's map before taking its peak, as in the paper."),
                io.Int.Input("attention_factor", default=4, min=1, max=64, optional=True,
                             tooltip="Which maps to read: latent size / map size. 4 reads the 16x16 maps at 512 px (the paper's choice) and 32x32 at 1024 px for SDXL."),
                io.Combo.Input("token_normalization", options=["reference", "prompt_tokens_only"], default="reference", optional=True,
                               tooltip="'reference' renormalises over every token but sot and the last slot (SD1.4 code); 'prompt_tokens_only' drops eot and padding too (the paper's SD2.1 fix, where eot attention is high)."),
                io.String.Input("token_indices", default="", optional=True,
                                tooltip="Advanced: raw CLIP positions instead of subject words, e.g. '2, 5' or '5+6' for a word split in two (sot = 0). Leave empty to use 'subjects'."),
            ],
            hidden=[io.Hidden.unique_id],
            outputs=[io.Model.Output(tooltip="The model with Attend-and-Excite guidance; chain more Faithful nodes or connect to a sampler.")],
        )

    @classmethod
    def execute(cls, model, clip, prompt, subjects, scale_factor=20.0, guided_fraction=0.5, iterative_refinement=True,
                refinement_thresholds="0:0.05, 0.2:0.5, 0.4:0.8", max_refinement_steps=20, smoothing=True,
                attention_factor=4, token_normalization="reference", token_indices="") -> io.NodeOutput:
        if not (prompt or "").strip():
            raise ValueError("Excite Tokens: the prompt is empty; type the same prompt as in your CLIPTextEncode")
        toks = PromptTokens(clip, prompt)
        if (token_indices or "").strip():
            groups = parse_index_list(token_indices)
            bad = [p for g in groups for p in g if not (0 < p < toks.n_tokens) or toks.pieces[p] is None]
            if bad:
                raise ValueError(f"Excite Tokens: token_indices {bad} are not prompt tokens. Prompt tokens: {toks.describe()}")
        else:
            words = parse_word_list(subjects)
            if not words:
                raise ValueError("Excite Tokens: no subjects given; list the nouns that must appear, e.g. 'cat, frog'")
            groups = toks.require(words, "Excite Tokens", "subject")
        schedule = ExciteSchedule(scale_factor=scale_factor, until=guided_fraction,
                                  refinement=parse_thresholds(refinement_thresholds),
                                  max_refinement_steps=max_refinement_steps)
        keep = toks.prompt_positions() if token_normalization == "prompt_tokens_only" else None
        term = ExciteTerm(groups, schedule, factor=attention_factor, smoothing=smoothing, keep_positions=keep,
                          refine=iterative_refinement)
        term.expected_tokens = toks.n_tokens
        m, reg = install(model)
        reg.terms.append(term)
        reg.owners[term] = cls.hidden.unique_id if cls.hidden is not None else None
        reg.prompts.append(toks.check("Excite Tokens", clip))
        return io.NodeOutput(m)


NODES = [ExciteTokens]
