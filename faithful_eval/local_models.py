"""Reading the scorers' inputs: local model folders only (nothing is ever downloaded), and images."""
from __future__ import annotations

import os


def local_model_dir(path: str, what: str) -> str:
    if not path or not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{what}: '{path}' is not a local model folder (it needs config.json and weights). "
                                "Faithful never downloads models: save one with save_pretrained() or copy a "
                                "Hugging Face snapshot folder, and pass its path.")
    return path


def load_image(im):
    from PIL import Image
    if isinstance(im, (str, os.PathLike)):
        with Image.open(im) as f:
            return f.convert("RGB")
    return im.convert("RGB")
