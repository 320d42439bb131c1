"""Record Attention and Attention Map Preview: what each word attends to, guided vs unguided, in the graph."""
from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..guidance_core.preview import AttentionRecorder, render_comparison, render_grid
from .runtime import REGISTRY_KEY, install
from .tokens import PromptTokens, parse_word_list


def _recorder(model):
    reg = model.model_options.get("transformer_options", {}).get(REGISTRY_KEY) if model is not None else None
    recs = [o for o in (reg.observers if reg else []) if isinstance(o, AttentionRecorder)]
    return recs[-1] if recs else None


class RecordAttention(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulRecordAttention",
            display_name="Record Attention",
            category="faithful/preview",
            description=(
                "Records, while the sampler runs, where each chosen word of the prompt attends (its cross-attention "
                "map, averaged over the layers of one resolution and over the chosen steps). It only reads attention: "
                "the image is exactly the same as without it. Show the maps with Attention Map Preview."),
            inputs=[
                io.Model.Input("model", tooltip="The model that goes to the sampler (plain or with Faithful guidance)."),
                io.Clip.Input("clip", tooltip="The CLIP of your CLIPTextEncode, to find the words in the prompt."),
                io.String.Input("prompt", multiline=True, default="a cat and a frog",
                                tooltip="The positive prompt, exactly as in the CLIPTextEncode that feeds the sampler."),
                io.String.Input("words", default="cat, frog", tooltip="Comma-separated words whose maps to record."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Record from this fraction of the steps."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Record until this fraction of the steps."),
                io.Int.Input("attention_factor", default=4, min=1, max=64, optional=True,
                             tooltip="Which maps: latent size / map size (4 = the 16x16 maps at 512 px that Attend-and-Excite reads)."),
            ],
            outputs=[io.Model.Output(tooltip="The same model with a recorder attached; connect it to the sampler AND to Attention Map Preview.")],
        )

    @classmethod
    def execute(cls, model, clip, prompt, words, start=0.0, end=1.0, attention_factor=4) -> io.NodeOutput:
        if end <= start:
            raise ValueError(f"Record Attention: end ({end}) must be after start ({start})")
        toks = PromptTokens(clip, prompt)
        ws = parse_word_list(words)
        if not ws:
            raise ValueError("Record Attention: no words given; list words of the prompt, e.g. 'cat, frog'")
        groups = []
        for w, pos in zip(ws, toks.locate(ws)):
            if pos is None:
                raise ValueError(f"Record Attention: '{w}' is not in the prompt '{prompt}'. Prompt tokens: {toks.describe()}")
            groups.append(pos)
        m, reg = install(model)
        reg.observers.append(AttentionRecorder(ws, groups, attention_factor, start, end))
        return io.NodeOutput(m)


class AttentionMapPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulAttentionMapPreview",
            display_name="Attention Map Preview",
            category="faithful/preview",
            description=(
                "Shows the maps Record Attention recorded, one per word, over the decoded image, with the word as a "
                "caption; give a second model and image (e.g. the unguided run) to see both side by side."),
            inputs=[
                io.Model.Input("model", tooltip="The model (from Record Attention) that the sampler used."),
                io.Image.Input("images", tooltip="The decoded images of that sampler run."),
                io.Model.Input("compare_model", optional=True, tooltip="Optional: the model of a second run (e.g. unguided)."),
                io.Image.Input("compare_images", optional=True, tooltip="Optional: the decoded images of the second run."),
                io.String.Input("label", default="guided", optional=True, tooltip="Caption of the first run."),
                io.String.Input("compare_label", default="unguided", optional=True, tooltip="Caption of the second run."),
            ],
            outputs=[io.Image.Output(tooltip="The grid: per image, the image then one heat map per word.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, images, compare_model=None, compare_images=None, label="guided",
                compare_label="unguided") -> io.NodeOutput:
        grids = [cls._grid(model, images, label, "model")]
        if compare_model is not None or compare_images is not None:
            if compare_model is None or compare_images is None:
                raise ValueError("Attention Map Preview: connect both compare_model and compare_images, or neither")
            grids.append(cls._grid(compare_model, compare_images, compare_label, "compare_model"))
        out = torch.from_numpy(render_comparison(grids))[None].float()
        return io.NodeOutput(out, ui=ui.PreviewImage(out, cls=cls))

    @staticmethod
    def _grid(model, images, label, where):
        rec = _recorder(model)
        if rec is None:
            raise ValueError(f"Attention Map Preview: the {where} carries no recording; put Record Attention before "
                             "the sampler and connect this input to the model the sampler used")
        if rec.result is None:
            raise ValueError(f"Attention Map Preview: the {where}'s recorder saw no attention at that resolution or "
                             "step range; check attention_factor (4 = 16x16 at 512 px) and start/end")
        return render_grid(images.float().cpu().numpy(), rec.result["maps"].numpy(), rec.result["words"], label)


NODES = [RecordAttention, AttentionMapPreview]
