"""Configuration of the shapes model (pure data; the ComfyUI classes are built in tools/shapes_model.py).

UNet: SD1 architecture in miniature (ComfyUI ``comfy.supported_models.SD15`` with this ``unet_config``), eps
prediction on SD's discrete schedule (scaled-linear betas 0.00085-0.012, 1000 steps). At the 32x32 latent the
levels sit at 32x32, 16x16 and 8x8 (attention factors 1, 2, 4); cross-attention exists at factors 2 and 4 in the
encoder, the middle (4x4) and the decoder, so Excite Tokens / Bind Attributes (factor 4 = 8x8 maps) and
Spatial Alignment Loss (decoder maps at factors 2 and 4) read their defaults.

Text encoder: ComfyUI's CLIPTextModel (``comfy.sd1_clip.SDClipModel``) with a small config over the real CLIP BPE
vocabulary of the host's SD1 tokenizer: 77 tokens, width 64 = the UNet's context_dim, causal like CLIP.
"""
from __future__ import annotations

import os

LATENT_SIZE = 16
CONTEXT_DIM = 64

UNET_CONFIG = dict(model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=[1, 1, 1], transformer_depth=[0, 1, 1],
                   transformer_depth_output=[0, 0, 1, 1, 1, 1], transformer_depth_middle=1,
                   context_dim=CONTEXT_DIM, num_heads=4, num_head_channels=-1, use_linear_in_transformer=False,
                   in_channels=4, out_channels=4, adm_in_channels=None, use_temporal_attention=False,
                   use_spatial_transformer=True, legacy=False, image_size=LATENT_SIZE)

CLIP_CONFIG = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 49407, "hidden_act": "quick_gelu", "hidden_size": CONTEXT_DIM, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 4 * CONTEXT_DIM, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 4,
    "num_hidden_layers": 2, "pad_token_id": 1, "projection_dim": CONTEXT_DIM, "torch_dtype": "float32",
    "vocab_size": 49408,
}

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "shapes_v2.safetensors")
WEIGHTS_SHA256 = "72137b8e2c47362beb877ac8ab3db46ea69a6cdce6d8dd8718e0ffdf172abbe6"  # checked on every load (tools/shapes_model.load_state)
