"""CLIP text-image similarity, Attend-and-Excite's protocol (Chefer et al., SIGGRAPH 2023, Sec. 5).

For image embedding e and text embedding t (both L2-normalised, dimension d = the projection size):
``full = e . t(prompt)`` and ``min_part = min_k e . t(part_k)`` over the prompt split on every " and " /
" with ". With templates, t(x) = normalise(mean_j normalise(CLIP(template_j(x)))) over the 80 ImageNet
templates of the CLIP paper. Needs torch and transformers; models from local folders only.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from .local_models import load_image, local_model_dir

# The 80 ImageNet prompt templates of the CLIP paper's zero-shot ImageNet evaluation.
IMAGENET_TEMPLATES = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
]

_SPLIT = re.compile(r" and | with ")


def _features(out):
    """transformers 4 returns a tensor from get_*_features, 5 a model output with the projection in pooler_output."""
    import torch
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    """A CLIP model, its tokenizer and image processor from a local folder, on CPU by default."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 32):
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
        local_model_dir(path, "CLIP")
        self.torch = torch
        self.device = device
        self.batch_size = batch_size
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self._text_cache: dict[tuple, np.ndarray] = {}

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def _encode_raw_texts(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                f = _features(self.model.get_text_features(input_ids=tok["input_ids"],
                                                           attention_mask=tok.get("attention_mask")))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, self.model.config.projection_dim), np.float32)

    def encode_texts(self, texts: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """L2-normalised text embeddings (n, d). With ``templates``, each text is put in every template, the
        normalised embeddings are averaged and the average is renormalised."""
        key_t = tuple(templates) if templates else None
        todo = [t for t in dict.fromkeys(texts) if (t, key_t) not in self._text_cache]
        if todo:
            if templates:
                flat = [tpl.format(t) for t in todo for tpl in templates]
                emb = self._encode_raw_texts(flat).reshape(len(todo), len(templates), -1).mean(1)
                emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
            else:
                emb = self._encode_raw_texts(list(todo))
            for t, e in zip(todo, emb):
                self._text_cache[(t, key_t)] = e
        if not texts:
            return np.zeros((0, self.model.config.projection_dim), np.float32)
        return np.stack([self._text_cache[(t, key_t)] for t in texts])

    def encode_images(self, images: Sequence) -> np.ndarray:
        """L2-normalised image embeddings (n, d) for PIL images or file paths."""
        torch = self.torch
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = [load_image(im) for im in images[i:i + self.batch_size]]
            px = self.image_processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                f = _features(self.model.get_image_features(pixel_values=px))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, self.model.config.projection_dim), np.float32)


def load_clip(path: str, device: str = "cpu") -> ClipScorer:
    return ClipScorer(path, device)


# --------------------------------------------------------------------------------------------------------
# CLIP text-image similarity (Attend-and-Excite)
# --------------------------------------------------------------------------------------------------------

def split_parts(prompt: str) -> list[str]:
    """'a cat and a red chair' -> ['a cat', 'a red chair']; splits on every ' and ' / ' with ' (so a
    3-phrase DVMP prompt gives 3 parts); a prompt without either gives [prompt]."""
    parts = [p.strip() for p in _SPLIT.split(prompt) if p.strip()]
    return parts or [prompt]


def min_part(part_sims: Sequence[float]) -> float:
    return float(min(part_sims))


def clip_similarities(scorer: ClipScorer, images: Sequence, prompts: Sequence[str],
                      templates: Sequence[str] | None = None) -> list[dict]:
    """For image i and prompt i: {"full": cos(image, prompt), "parts": [cos(image, part)...], "min_part"}."""
    if len(images) != len(prompts):
        raise ValueError("one prompt per image")
    parts = [split_parts(p) for p in prompts]
    texts = list(dict.fromkeys(list(prompts) + [q for ps in parts for q in ps]))
    temb = dict(zip(texts, scorer.encode_texts(texts, templates)))
    iemb = scorer.encode_images(images)
    out = []
    for e, p, ps in zip(iemb, prompts, parts):
        sims = [float(e @ temb[q]) for q in ps]
        out.append({"full": float(e @ temb[p]), "parts": sims, "min_part": min_part(sims)})
    return out
