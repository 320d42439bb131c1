"""The same random UNet weights in diffusers' UNet2DConditionModel and ComfyUI's UNetModel, and diffusers'
Attend-and-Excite pipeline around them: for the parity test and the benchmark's reference timings.

Key map: comfy.utils.unet_to_diffusers(unet_config) (ComfyUI key <- diffusers key). Traps (HOST.md): GroupNorm
has 32 groups, transformer_depth_output lists the decoder from the highest resolution down, diffusers'
attention_head_dim for SD1-style configs is the head count.
"""
from __future__ import annotations

import copy
import math

import torch

CONFIGS = {
    # a 2-level UNet with cross-attention at full latent resolution (fast; the parity test's model)
    "tiny": dict(
        diffusers=dict(block_out_channels=(32, 64), layers_per_block=1,
                       down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                       attention_head_dim=8),
        comfy=dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[1, 0],
                   transformer_depth_output=[1, 1, 0, 0], transformer_depth_middle=1, context_dim=64),
        factor=1),
    # 3 levels with cross-attention everywhere (every method has its layers; the benchmark's quick model)
    "small": dict(
        diffusers=dict(block_out_channels=(32, 64, 64), layers_per_block=1,
                       down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
                       cross_attention_dim=64, attention_head_dim=8),
        comfy=dict(model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=[1, 1, 1], transformer_depth=[1, 1, 1],
                   transformer_depth_output=[1, 1, 1, 1, 1, 1], transformer_depth_middle=1, context_dim=64),
        factor=2),
    # full-size SD1.5 architecture (860M UNet parameters), random weights
    "sd15": dict(
        diffusers=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                       down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                       up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
                       attention_head_dim=8),
        comfy=dict(model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2, 2, 2, 2],
                   transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                   transformer_depth_middle=1, context_dim=768),
        factor=4),
}
_COMMON = dict(num_heads=8, num_head_channels=-1, use_linear_in_transformer=False, in_channels=4, out_channels=4,
               adm_in_channels=None, use_temporal_attention=False, use_spatial_transformer=True, legacy=False,
               image_size=32)


def context_dim(size: str) -> int:
    return CONFIGS[size]["comfy"]["context_dim"]


def diffusers_unet(size: str = "tiny", seed: int = 0):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, norm_num_groups=32,
                                **CONFIGS[size]["diffusers"])
    with torch.no_grad():  # scaled normal weights (diffusers zero-inits some output convs)
        for p in unet.parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
    return unet.eval()


def comfy_model(dunet, size: str = "tiny"):
    """A ComfyUI ModelPatcher (SD15 config) holding exactly ``dunet``'s weights."""
    import comfy.model_patcher
    import comfy.supported_models as sm
    import comfy.utils
    cfg = dict(CONFIGS[size]["comfy"], **_COMMON)
    conf = sm.SD15(copy.deepcopy(cfg))
    conf.unet_config.update(num_heads=8, num_head_channels=-1)
    conf.set_inference_dtype(torch.float32, None)
    model = conf.get_model({})
    keymap = comfy.utils.unet_to_diffusers(copy.deepcopy(cfg))
    dsd = dunet.state_dict()
    model.diffusion_model.load_state_dict({c: dsd[d] for d, c in keymap.items() if d in dsd}, strict=True)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def ddim_scheduler():
    from diffusers import DDIMScheduler
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def _components(dunet, size):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel
    vae = AutoencoderKL(block_out_channels=(32,), down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",), latent_channels=4, norm_num_groups=32)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=context_dim(size), intermediate_size=64, num_attention_heads=2,
                                      num_hidden_layers=1, vocab_size=49408))
    return dict(vae=vae, text_encoder=te, tokenizer=None, unet=dunet, scheduler=ddim_scheduler(),
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def attend_and_excite_pipeline(dunet, size: str = "tiny"):
    from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite import StableDiffusionAttendAndExcitePipeline
    return StableDiffusionAttendAndExcitePipeline(**_components(dunet, size))


def plain_pipeline(dunet, size: str = "tiny"):
    from diffusers import StableDiffusionPipeline
    return StableDiffusionPipeline(**_components(dunet, size))
