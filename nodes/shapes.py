"""Shapes world demo nodes: load the small model trained on the shapes world, and decode its latents.

The shapes model (faithful_eval/shapes, docs/shapes.md) is an SD1-architecture UNet built through ComfyUI's
own classes (eps prediction, SD's discrete schedule) with a small CLIP text encoder over the real SD1 BPE
tokens, so the stock CLIPTextEncode, KSampler and every Faithful guidance node run on it unchanged. Its latent
IS the picture: (B, 4, 16, 16), channels 0-2 RGB in [-1, 1], channel 3 object occupancy; use an
EmptyLatentImage of 128 x 128 (latent = pixels / 8 = 16).
"""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..tools import shapes_model as SM

_CACHE = {}


class LoadShapesModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulLoadShapesModel",
            display_name="Load Shapes World Model",
            category="faithful/demo",
            description=(
                "Loads the small text-to-image model trained on the shapes world (circles, squares and triangles in "
                "six colours and two sizes on a grey background, captions like 'a red circle to the left of a blue "
                "square'). It ships with the pack (about 10 MB, sha256 checked), runs on CPU in a fraction of a "
                "second per image, and its pictures can be checked exactly, so the effect of each Faithful node "
                "on what is drawn is visible. Use a 128 x 128 EmptyLatentImage and Shapes Decode instead of a VAE."),
            inputs=[],
            outputs=[io.Model.Output("MODEL", display_name="MODEL"), io.Clip.Output("CLIP", display_name="CLIP")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        if "model" not in _CACHE:
            with torch.inference_mode(False):
                _CACHE["model"] = SM.load()
        model, clip = _CACHE["model"]
        return io.NodeOutput(model.clone(), clip.clone())


class ShapesDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FaithfulShapesDecode",
            display_name="Shapes Decode",
            category="faithful/demo",
            description=("Turns a shapes-model LATENT (its channels 0-2 are the picture's RGB in [-1, 1]) into an "
                         "IMAGE, enlarged with nearest-neighbour pixels so the 16 x 16 picture can be seen."),
            inputs=[
                io.Latent.Input("samples"),
                io.Int.Input("scale", default=16, min=1, max=64, step=1,
                             tooltip="Enlargement factor (nearest neighbour): 16 makes a 16 x 16 latent 256 x 256."),
            ],
            outputs=[io.Image.Output("IMAGE", display_name="IMAGE")],
        )

    @classmethod
    def execute(cls, samples, scale=16) -> io.NodeOutput:
        x = samples["samples"] if isinstance(samples, dict) else None
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 4:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"Shapes Decode: expected a shapes-model latent (batch, 4, H, W), got {shape}; connect "
                             "the sampler that ran Load Shapes World Model's MODEL")
        scale = int(scale)
        if not 1 <= scale <= 64:
            raise ValueError(f"Shapes Decode: scale must be 1-64, not {scale}")
        rgb = ((x[:, :3].float() + 1) / 2).clamp(0, 1)
        rgb = rgb.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        return io.NodeOutput(rgb.permute(0, 2, 3, 1).contiguous().cpu())


NODES = [LoadShapesModel, ShapesDecode]
