"""Write a small random SD1.x checkpoint that ComfyUI's real loaders (CheckpointLoaderSimple) accept.

Model detection maps a state dict to SD1.x when the UNet has 320 model channels and a 768-wide context; the
rest of the architecture is read from the weights. This one has three resolution levels (channel_mult
[1, 1, 1], one res block and one transformer per level, a middle transformer) so that a 16x16 latent (128 px)
has cross-attention at 16x16, 8x8 and 4x4: the paper's "latent/4" maps exist. The text encoder is a full-size
random CLIP-L (the real tokenizer ships with the host), the VAE a random TAESD. About 190M parameters,
~380 MiB in fp16, written in a few seconds. Never commit the file: generate it.

Usage: python -m tools.checkpoint OUT.safetensors [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

UNET = dict(model_channels=320, channel_mult=[1, 1, 1], num_res_blocks=[1, 1, 1], transformer_depth=[1, 1, 1],
            transformer_depth_output=[1, 1, 1, 1, 1, 1], transformer_depth_middle=1, context_dim=768,
            num_heads=8, num_head_channels=-1, use_linear_in_transformer=False, in_channels=4, out_channels=4,
            adm_in_channels=None, use_temporal_attention=False, use_spatial_transformer=True, legacy=False,
            image_size=32)


def _fill(module: torch.nn.Module, g: torch.Generator) -> None:
    import math
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(1, p[0].numel())))
            elif "norm" in name and name.endswith("weight") or name.endswith("layer_norm1.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def build_state_dict(seed: int = 0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    from tools.host import bootstrap_host
    bootstrap_host()
    import copy
    import comfy.ldm.modules.diffusionmodules.openaimodel as oai
    import comfy.ops
    import comfy.sd1_clip
    import comfy.taesd.taesd
    g = torch.Generator().manual_seed(seed)
    sd = {}
    unet = oai.UNetModel(**copy.deepcopy(UNET), dtype=torch.float32, operations=comfy.ops.disable_weight_init)
    _fill(unet, g)
    sd.update({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})
    del unet
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    _fill(clip, g)
    for k, v in clip.state_dict().items():
        if k.startswith("transformer."):
            sd[f"cond_stage_model.{k}"] = v
    del clip
    vae = comfy.taesd.taesd.TAESD()
    _fill(vae, g)
    for k, v in vae.state_dict().items():
        if k.startswith("taesd_"):
            sd[f"first_stage_model.{k}"] = v
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


def write_checkpoint(path: str, seed: int = 0) -> str:
    """Create ``path`` unless it exists; returns the path."""
    if os.path.exists(path):
        return path
    from safetensors.torch import save_file
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".partial"
    save_file(build_state_dict(seed), tmp)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    print(write_checkpoint(a.out, a.seed))
