"""The shapes model built through ComfyUI's own classes (host imports stay inside functions).

- ``build_unet()``: ``comfy.supported_models.SD15`` with ``faithful_eval.shapes.config.UNET_CONFIG`` -> BaseModel
  (eps prediction, ModelSamplingDiscrete on SD's scaled-linear schedule), with a latent format of scale 1 so
  the sampler's space is the world image itself (channels: RGB in [-1, 1] + occupancy, see world.py).
- ``build_text_encoder()``: ``comfy.sd1_clip.SDClipModel`` (ComfyUI's CLIPTextModel) with the small config;
  ``build_clip()`` wraps it in a real ``comfy.sd.CLIP`` over the host's SD1 BPE tokenizer, so the stock
  CLIPTextEncode node and every Faithful node's token alignment work unchanged.
- ``load()``: the committed weights, sha256 checked, -> (ModelPatcher, CLIP).
"""
from __future__ import annotations

import copy
import hashlib
import math
import os

import torch

try:  # inside the pack (faithful.tools.shapes_model, as the nodes import it)
    from ..faithful_eval.shapes import config as C
except ImportError:  # from a checkout (python -m tools....)
    from faithful_eval.shapes import config as C

UNET_PREFIX = "unet."
CLIP_PREFIX = "clip."


def _latent_format():
    import comfy.latent_formats

    class ShapesLatent(comfy.latent_formats.LatentFormat):
        """The latent is the image: no scaling; previews map channels 0-2 (RGB in [-1, 1]) to RGB."""
        latent_channels = 4
        scale_factor = 1.0
        latent_rgb_factors = [[0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0, 0, 0]]
        latent_rgb_factors_bias = [0.5, 0.5, 0.5]

    return ShapesLatent()


def init_weights(module: torch.nn.Module, seed: int = 0) -> None:
    """ComfyUI's ops leave weights uninitialised: scaled normal (variance 1/fan_in, 2/fan_in for convs), zero
    biases, unit norms, and zero for the layers the LDM code zero-initialises (each residual branch's last
    conv, each transformer's proj_out, the UNet's output conv) so training starts from identity blocks."""
    g = torch.Generator().manual_seed(seed)
    norms = {n + ".weight" for n, m in module.named_modules()
             if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))}  # ResBlocks name theirs in_layers.0
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name in norms:
                p.fill_(1.0)
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                gain = 2.0 if p.dim() == 4 else 1.0
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(gain / fan_in))
                if name.endswith(("out_layers.3.weight", "proj_out.weight")) or name == "out.2.weight":
                    p.zero_()
                if "embedding" in name:  # token/position embeddings: CLIP's scale
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
            else:
                p.zero_()


def build_unet(seed: int = 0):
    """A ComfyUI BaseModel (SD15 config class, eps, discrete schedule) with freshly initialised weights."""
    import comfy.supported_models as sm
    conf = sm.SD15(copy.deepcopy(C.UNET_CONFIG))
    conf.unet_config.update(num_heads=C.UNET_CONFIG["num_heads"], num_head_channels=-1)
    conf.latent_format = _latent_format()
    conf.set_inference_dtype(torch.float32, None)
    model = conf.get_model({})
    init_weights(model.diffusion_model, seed)
    return model


def _text_model_class():
    import comfy.sd1_clip

    class ShapesTextModel(comfy.sd1_clip.SDClipModel):
        """ComfyUI's CLIPTextModel with the shapes config (last layer, final layer norm), trainable."""

        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, textmodel_json_config=dict(C.CLIP_CONFIG),
                             model_options=model_options, layer="last", return_projected_pooled=False)

    class ShapesClip(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, clip_model=ShapesTextModel)

    return ShapesTextModel, ShapesClip


def build_text_encoder(seed: int = 0, dtype=torch.float32):
    """The bare text encoder module (for training): forward(list of token-id lists) -> (z (B, 77, 64), pooled)."""
    cls, _ = _text_model_class()
    te = cls(dtype=dtype)
    init_weights(te.transformer, seed)
    return te


def text_forward(te, ids) -> torch.Tensor:
    """The text encoder's last-layer output (B, 77, 64) for token ids ((B, 77) lists or tensor), differentiably.

    The same function as ``te(ids)[0]`` (SDClipModel: token + position embeddings, causal CLIP layers, final
    layer norm; no padding mask), through the same modules, written out because ComfyUI's CLIPLayer adds its
    residuals in place (fine for inference, fatal for a backward pass)."""
    from comfy.ldm.modules.attention import optimized_attention_for_device
    tm = te.transformer.text_model
    tokens = torch.as_tensor(ids, dtype=torch.long, device=tm.embeddings.token_embedding.weight.device)
    x = tm.embeddings.token_embedding(tokens) + tm.embeddings.position_embedding.weight[: tokens.shape[1]]
    n = x.shape[1]
    mask = torch.full((n, n), -torch.finfo(x.dtype).max, dtype=x.dtype, device=x.device).triu_(1)
    attn = optimized_attention_for_device(x.device, mask=True, small_input=True)
    for layer in tm.encoder.layers:
        x = x + layer.self_attn(layer.layer_norm1(x), mask, attn)
        x = x + layer.mlp(layer.layer_norm2(x))
    return tm.final_layer_norm(x)


def tokenizer():
    import comfy.sd1_clip
    return comfy.sd1_clip.SD1Tokenizer()


def token_ids(tok, caption: str) -> list:
    """The 77 token ids ComfyUI's SD1 tokenizer gives for the caption (start, BPE tokens, end padding)."""
    return [t for t, _w in tok.tokenize_with_weights(caption)["l"][0]]


def split_state(sd: dict):
    unet = {k[len(UNET_PREFIX):]: v for k, v in sd.items() if k.startswith(UNET_PREFIX)}
    clip = {k[len(CLIP_PREFIX):]: v for k, v in sd.items() if k.startswith(CLIP_PREFIX)}
    return unet, clip


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state(path: str | None = None, expected_sha256: str | None = None) -> dict:
    """The weights file as a state dict, after checking its sha256 (ValueError naming both hashes if not)."""
    import safetensors.torch
    path = path or C.WEIGHTS
    expected = expected_sha256 if expected_sha256 is not None else C.WEIGHTS_SHA256
    if not os.path.isfile(path):
        raise ValueError(f"shapes model weights not found at {path}: train them with python -m tools.train_shapes")
    if expected:
        got = sha256(path)
        if got != expected:
            raise ValueError(f"shapes model weights {path} have sha256 {got}, expected {expected}: the file is "
                             "damaged or not the committed one (git checkout it, or retrain and update config.py)")
    return safetensors.torch.load_file(path)


def load(path: str | None = None, expected_sha256: str | None = None, inference: bool = False):
    """(ModelPatcher, comfy.sd.CLIP) with the committed weights (float32 on CPU)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    unet_sd, clip_sd = split_state(load_state(path, expected_sha256))
    model = build_unet()
    model.diffusion_model.load_state_dict({k: v.float() for k, v in unet_sd.items()}, strict=True)
    if inference:
        with torch.inference_mode():
            sd = {k: v.clone() for k, v in model.diffusion_model.state_dict().items()}
            model.diffusion_model.load_state_dict(sd, assign=True)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    _, clip_cls = _text_model_class()

    class Target:
        params = {}
        clip = clip_cls
        tokenizer = type("ShapesTokenizer", (object,), {})

    import comfy.sd1_clip
    Target.tokenizer = comfy.sd1_clip.SD1Tokenizer
    clip = comfy.sd.CLIP(Target(), model_options={"dtype": torch.float32})
    missing, unexpected = clip.cond_stage_model.clip_l.transformer.load_state_dict(
        {k: v.float() for k, v in clip_sd.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"shapes text encoder weights do not match: missing {missing}, unexpected {unexpected}")
    return patcher, clip


def export(unet: torch.nn.Module, text: torch.nn.Module, path: str) -> str:
    """Write fp16 safetensors of the UNet and the text transformer; returns the sha256."""
    import safetensors.torch
    sd = {UNET_PREFIX + k: v.detach().to(torch.float16).contiguous() for k, v in unet.state_dict().items()}
    sd.update({CLIP_PREFIX + k: v.detach().to(torch.float16).contiguous() for k, v in text.transformer.state_dict().items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    safetensors.torch.save_file(sd, path)
    return sha256(path)
