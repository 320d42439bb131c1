"""Record Attention and Attention Map Preview: what each word attends to, guided vs unguided, in the graph."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..guidance_core.preview import ALL, AttentionRecorder, render_runs
from .runtime import REGISTRY_KEY, install, run_key
from .tokens import PromptTokens, parse_word_list

CONNECT = ("connect Record Attention before the sampler, and this node's model input to the model the sampler used "
           "(the MODEL that goes into the KSampler)")


def _recorder(model):
    """The last AttentionRecorder on ``model``'s Faithful registry, or None."""
    opts = getattr(model, "model_options", None) or {}
    reg = opts.get("transformer_options", {}).get(REGISTRY_KEY)
    recs = [o for o in (getattr(reg, "observers", None) or []) if isinstance(o, AttentionRecorder)]
    return recs[-1] if recs else None


class RecordAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulRecordAttention",
            display_name="Record Attention",
            category="faithful/preview",
            description=(
                "Records, while the sampler runs, where each chosen word of the prompt attends: its cross-attention "
                "probability map on the positive prompt, averaged over the heads, over the layers of one resolution "
                "(or all layers) and over the chosen steps. It only reads attention: the sampled image is bit-for-bit "
                "the same as without it. Connect its MODEL to the sampler and to Attention Map Preview."),
            inputs=[
                io.Model.Input("model", tooltip="The model that goes to the sampler (plain, or with Faithful guidance). It is cloned; the input model is not changed."),
                io.Clip.Input("clip", tooltip="The CLIP of your CLIPTextEncode, to find where the words sit in the prompt."),
                io.String.Input("prompt", multiline=True, default="a cat and a frog",
                                tooltip="The positive prompt, exactly as typed in the CLIPTextEncode that feeds the sampler."),
                io.String.Input("words", default="cat, frog",
                                tooltip="Comma-separated words of the prompt whose maps to record (one column of the preview each)."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Record from this fraction of the sampler steps (0 = the first step)."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Record until this fraction of the sampler steps (1 = through the last step; 0.5 = the first half)."),
                io.Int.Input("attention_factor", default=4, min=1, max=64, optional=True,
                             tooltip="Which maps: latent size / map size. 4 = the 16x16 maps at 512 px that Attend-and-Excite reads (32x32 for SDXL at 1024 px)."),
                io.Boolean.Input("all_layers", default=False, optional=True,
                                 tooltip="Average every cross-attention layer instead, each map resized to the latent size (attention_factor is then ignored)."),
            ],
            outputs=[io.Model.Output(tooltip="The same model with a recorder attached; connect it to the sampler AND to Attention Map Preview's model input.")],
        )

    @classmethod
    def execute(cls, model, clip, prompt, words, start=0.0, end=1.0, attention_factor=4,
                all_layers=False) -> io.NodeOutput:
        if not (0.0 <= start < end <= 1.0):
            raise ValueError(f"Record Attention: end ({end}) must be after start ({start}), both between 0 and 1")
        if not (prompt or "").strip():
            raise ValueError("Record Attention: the prompt is empty; type the same prompt as in your CLIPTextEncode")
        ws = parse_word_list(words)
        if not ws:
            raise ValueError("Record Attention: no words given; list words of the prompt, e.g. 'cat, frog'")
        toks = PromptTokens(clip, prompt)
        groups = toks.require(ws, "Record Attention", "word")
        rec = AttentionRecorder(ws, groups, ALL if all_layers else attention_factor, start, end)
        m, reg = install(model)
        reg.observers.append(rec)
        reg.prompts.append(toks.check("Record Attention", clip))
        return io.NodeOutput(m)


class AttentionMapPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulAttentionMapPreview",
            display_name="Attention Map Preview",
            category="faithful/preview",
            description=(
                "Shows the maps Record Attention recorded: one row per image, the image and then one heat map per "
                "word over it (each map scaled to its own range, red = most attended), captioned with the word. Give "
                "a second model and its images (e.g. the same seed unguided) to see both runs one above the other."),
            inputs=[
                io.Model.Input("model", tooltip="The model the sampler used, carrying Record Attention (its output, or the model after it that went into the sampler)."),
                io.Image.Input("images", tooltip="The decoded images of that sampler run (VAE Decode of its latent)."),
                io.Model.Input("compare_model", optional=True, tooltip="Optional: the model of a second run with its own Record Attention (e.g. unguided)."),
                io.Image.Input("compare_images", optional=True, tooltip="Optional: the decoded images of the second run."),
                io.String.Input("label", default="", optional=True,
                                tooltip="Caption of the first run's rows; empty = 'image', or 'guided' when a second run is shown."),
                io.String.Input("compare_label", default="unguided", optional=True, tooltip="Caption of the second run's rows."),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional: the sampler's LATENT output for 'images'. It picks that run's maps when "
                                        "one model feeds several samplers; without it the model's newest run is shown."),
                io.Latent.Input("compare_latent", optional=True, tooltip="Optional: the LATENT of the second run."),
            ],
            outputs=[io.Image.Output(tooltip="The grid as one image: per image of the batch, the image then one captioned heat map per word; the second run below.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, images, compare_model=None, compare_images=None, label="",
                compare_label="unguided", latent=None, compare_latent=None) -> io.NodeOutput:
        compare = compare_model is not None or compare_images is not None
        if compare and (compare_model is None or compare_images is None):
            raise ValueError("Attention Map Preview: connect both compare_model and compare_images, or neither")
        runs = [cls._run(model, images, label or ("guided" if compare else ""), "model", latent)]
        if compare:
            runs.append(cls._run(compare_model, compare_images, compare_label or "unguided", "compare_model",
                                 compare_latent))
        out = torch.from_numpy(render_runs(runs))[None].float()
        return io.NodeOutput(out, ui=ui.PreviewImage(out, cls=cls))

    @staticmethod
    def _run(model, images, label, where, latent=None):
        rec = _recorder(model)
        if rec is None:
            raise ValueError(f"Attention Map Preview: the {where} input carries no attention recorder; {CONNECT}")
        if latent is not None:
            samples = latent.get("samples") if isinstance(latent, dict) else None
            if not isinstance(samples, torch.Tensor):
                raise ValueError(f"Attention Map Preview: the latent for the {where} is not a sampler's LATENT output")
            res = rec.result_for(run_key(samples))
            if res is None and rec.runs:
                raise ValueError(f"Attention Map Preview: no recorded run of the {where} produced the connected "
                                 "latent; connect the LATENT output of the sampler that used this model")
        else:
            res = rec.result
        if res is None:
            raise ValueError(
                f"Attention Map Preview: the {where}'s recorder has no maps: either the sampler did not run on this "
                f"model ({CONNECT}), or no attention layer matched attention_factor {rec.factor} (4 = 16x16 at "
                f"512 px) during steps {rec.start:g}..{rec.end:g} of the run")
        maps = res["maps"]
        if images.shape[0] != maps.shape[0]:
            raise ValueError(f"Attention Map Preview: {images.shape[0]} {where.replace('model', 'images')} but the "
                             f"recorded run had a batch of {maps.shape[0]}; connect the decoded images of the sampler "
                             "that used this model")
        return label, images.float().cpu().numpy(), maps.numpy(), res["words"]


NODES = [RecordAttention, AttentionMapPreview]
