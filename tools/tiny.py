"""Tiny random-weight models built through ComfyUI's own classes, for fast in-process tests.

SD1-architecture: model_channels 32, channel_mult [1, 2, 2], one res block per level, transformer depth 1 at
every level and in the middle, context 64, 8 heads. At a 32x32 latent the cross-attention layers sit at 32x32,
16x16 and 8x8 (factors 1, 2, 4) plus the 4x4 middle. SDXL-architecture: linear transformers, two context
encoders concatenated (context 64 here), pooled ``y`` input (adm = pooled 32 + 6 x 256), depths [0, 1, 2] like SDXL's
[0, 2, 10] in miniature.
"""
from __future__ import annotations

import copy
import math

import torch

SD1_CONFIG = dict(model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=[1, 1, 1], transformer_depth=[1, 1, 1],
                  transformer_depth_output=[1, 1, 1, 1, 1, 1], transformer_depth_middle=1,
                  context_dim=64, num_heads=8, num_head_channels=-1, use_linear_in_transformer=False,
                  in_channels=4, out_channels=4, adm_in_channels=None, use_temporal_attention=False,
                  use_spatial_transformer=True, legacy=False, image_size=32)

SDXL_POOLED = 32  # pooled text width; SDXL's adm input = pooled + 6 size embeddings of 256

SDXL_CONFIG = dict(model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=[1, 1, 1], transformer_depth=[0, 1, 2],
                   transformer_depth_output=[0, 0, 1, 1, 2, 2], transformer_depth_middle=2,
                   context_dim=64, num_heads=-1, num_head_channels=8, use_linear_in_transformer=True,
                   in_channels=4, out_channels=4, adm_in_channels=SDXL_POOLED + 6 * 256, num_classes="sequential", use_temporal_attention=False,
                   use_spatial_transformer=True, legacy=False, image_size=32)


def init_weights(module: torch.nn.Module, seed: int = 0) -> None:
    """ComfyUI's ops leave weights uninitialised; fill them deterministically (scaled normal, zero biases,
    unit norms)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def build_model(family: str = "sd1", seed: int = 0, dtype=torch.float32, inference: bool = False):
    """A ModelPatcher around a tiny random model of ``family`` ("sd1", "sd2" v-prediction, "sdxl").

    With ``inference=True`` the weights are made inference tensors, as CheckpointLoaderSimple leaves them in the
    server (the case where a backward pass fails unless handled).
    """
    import comfy.model_patcher
    import comfy.supported_models as sm
    import comfy.model_management as mm
    if family == "sdxl":
        cfg = copy.deepcopy(SDXL_CONFIG)
        conf = sm.SDXL(cfg)
        conf.unet_config.update(num_heads=-1, num_head_channels=8)  # SDXL's own 64-channel heads are too wide here
    else:
        cfg = copy.deepcopy(SD1_CONFIG)
        conf = sm.SD15(cfg) if family == "sd1" else sm.SD20(cfg)
        conf.unet_config.update(num_heads=8, num_head_channels=-1)  # SD2's 64-channel heads are too wide here
    conf.set_inference_dtype(dtype, None)
    if family == "sd2":
        import comfy.model_base
        model = comfy.model_base.BaseModel(conf, model_type=comfy.model_base.ModelType.V_PREDICTION)
    elif family == "sdxl":
        model = conf.get_model({})
    else:
        model = conf.get_model({})
    init_weights(model.diffusion_model, seed)
    model.diffusion_model.to(dtype)
    if inference:
        with torch.inference_mode():
            sd = {k: v.clone() for k, v in model.diffusion_model.state_dict().items()}
            model.diffusion_model.load_state_dict(sd, assign=True)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())


class TokenizerClip:
    """The host's real SD1 CLIP tokenizer behind the two methods the nodes call (tokenize, tokenizer); the
    text encoder is not needed in-process because tests build their own embeddings."""

    def __init__(self, family: str = "sd1"):
        import comfy.sd1_clip
        if family == "sdxl":
            import comfy.sdxl_clip
            self.tokenizer = comfy.sdxl_clip.SDXLTokenizer()
        else:
            self.tokenizer = comfy.sd1_clip.SD1Tokenizer()

    def tokenize(self, text, return_word_ids=False, **kwargs):
        return self.tokenizer.tokenize_with_weights(text, return_word_ids, **kwargs)


def random_cond(batch: int = 1, tokens: int = 77, dim: int = 64, seed: int = 0, pooled: int | None = None):
    """A CONDITIONING list [[embedding (B, T, dim), {...}]] with seeded random embeddings."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, tokens, dim, generator=g)
    extra = {}
    if pooled:
        extra["pooled_output"] = torch.randn(batch, pooled, generator=g)
    return [[emb, extra]]


FLUX_CONFIG = dict(image_model="flux", guidance_embed=True, in_channels=16, out_channels=16, vec_in_dim=32,
                   context_in_dim=32, hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1,
                   axes_dim=[8, 12, 12], theta=10000, patch_size=2, qkv_bias=True)


def flux_config() -> dict:
    """FLUX_CONFIG completed for this host's ``FluxParams`` dataclass, read by feature: newer hosts (0.33) made
    ``txt_ids_dims`` (which text-id axes carry positions) a required field; Flux.1's own detection sets it to
    [] (comfy/model_detection.py), so the tiny Flux.1 does too. A required field this helper does not know is a
    clear error naming it."""
    import dataclasses
    from comfy.ldm.flux.model import FluxParams
    cfg = copy.deepcopy(FLUX_CONFIG)
    fields = {f.name: f for f in dataclasses.fields(FluxParams)}
    if "txt_ids_dims" in fields:
        cfg.setdefault("txt_ids_dims", [])
    missing = [n for n, f in fields.items() if n not in cfg and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"tools.tiny.FLUX_CONFIG lacks this host's required FluxParams fields {missing}: add them")
    return cfg


def build_flux(seed: int = 0):
    """A tiny random Flux (DiT, flow matching) through ComfyUI's classes: a family Faithful cannot guide."""
    import comfy.model_patcher
    import comfy.supported_models as sm
    import comfy.model_management as mm
    conf = sm.Flux(flux_config())
    conf.set_inference_dtype(torch.float32, None)
    model = conf.get_model({})
    init_weights(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
