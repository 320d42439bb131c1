"""Write example_workflows/faithful_shapes_demo.json: the shapes model, plain vs Spatial Alignment Loss on the
same seed, side by side (UI format, from the running server's node definitions). The plain model draws both
shapes but on the named side only about half the time; the guidance (weight 300, the shapes sweep's) fixes it.

Usage: python -m tools.make_shapes_example   (starts a headless server for the node definitions)
"""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "example_workflows", "faithful_shapes_demo.json")
PROMPT = "a red circle to the left of a blue square"


def spec(prompt: str = PROMPT, seed: int = 3):
    ks = {"seed": seed, "steps": 20, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    return [
        {"id": 1, "type": "FaithfulLoadShapesModel", "pos": [20, 280]},
        {"id": 2, "type": "PrimitiveStringMultiline", "pos": [20, 20], "title": "Prompt", "widgets": {"value": prompt}},
        {"id": 3, "type": "CLIPTextEncode", "pos": [420, 20], "title": "Positive", "widgets": {"text": prompt},
         "inputs": {"clip": (1, 1), "text": (2, 0)}},
        {"id": 4, "type": "CLIPTextEncode", "pos": [420, 260], "title": "Negative (empty)", "widgets": {"text": ""},
         "inputs": {"clip": (1, 1)}},
        {"id": 5, "type": "EmptyLatentImage", "pos": [420, 480], "widgets": {"width": 128, "height": 128, "batch_size": 4}},
        {"id": 10, "type": "FaithfulSpatialAlignment", "pos": [820, 20], "size": [340, 420],
         "widgets": {"prompt": prompt, "relations": "circle left of square", "guidance_scale": 300.0},
         "inputs": {"model": (1, 0), "clip": (1, 1), "prompt": (2, 0)}},
        {"id": 6, "type": "KSampler", "pos": [1180, 60], "size": [320, 270], "title": "KSampler (guided)", "widgets": ks,
         "inputs": {"model": (10, 0), "positive": (3, 0), "negative": (4, 0), "latent_image": (5, 0)}},
        {"id": 7, "type": "FaithfulShapesDecode", "pos": [1540, 60], "inputs": {"samples": (6, 0)}},
        {"id": 8, "type": "SaveImage", "pos": [1860, 60], "size": [400, 300], "title": "Guided",
         "widgets": {"filename_prefix": "shapes_guided"}, "inputs": {"images": (7, 0)}},
        {"id": 11, "type": "KSampler", "pos": [1180, 420], "size": [320, 270], "title": "KSampler (plain)", "widgets": ks,
         "inputs": {"model": (1, 0), "positive": (3, 0), "negative": (4, 0), "latent_image": (5, 0)}},
        {"id": 12, "type": "FaithfulShapesDecode", "pos": [1540, 420], "inputs": {"samples": (11, 0)}},
        {"id": 13, "type": "SaveImage", "pos": [1860, 420], "size": [400, 300], "title": "Plain",
         "widgets": {"filename_prefix": "shapes_plain"}, "inputs": {"images": (12, 0)}},
    ]


def main():
    sys.path.insert(0, ROOT)
    import tempfile
    from tools.server import Server, make_base_dir
    from tools.workflows import build_ui
    with Server(make_base_dir(tempfile.mkdtemp(prefix="faithful-shapes-example-"))) as srv:
        wf = build_ui(spec(), srv.object_info())
    with open(OUT, "w") as f:
        json.dump(wf, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
