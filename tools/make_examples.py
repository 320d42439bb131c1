"""Write example_workflows/*.json (UI format, loadable from the template browser) from compact descriptions.

Usage: python -m tools.make_examples   (starts a headless server for the node definitions, writes the files)
Each example uses only core nodes plus this pack. A single PrimitiveStringMultiline holds the prompt and feeds
both the positive CLIPTextEncode and the Faithful node, so the two can never disagree.
"""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "example_workflows")

SD15 = dict(ckpt="v1-5-pruned-emaonly.safetensors", size=512, steps=30, factor=4)
SDXL = dict(ckpt="sd_xl_base_1.0.safetensors", size=1024, steps=30, factor=4)


def _base(model_cfg, prompt, negative="blurry, low quality", seed=42, cfg=7.5):
    """Nodes 1-8: checkpoint, prompt primitive, encoders, latent, sampler, decode, save. The sampler's model
    input is left for the caller (set 'model' in node 6's inputs)."""
    s = model_cfg["size"]
    return [
        {"id": 1, "type": "CheckpointLoaderSimple", "pos": [20, 280], "widgets": {"ckpt_name": model_cfg["ckpt"]}},
        {"id": 2, "type": "PrimitiveStringMultiline", "pos": [20, 20], "title": "Prompt", "widgets": {"value": prompt}},
        {"id": 3, "type": "CLIPTextEncode", "pos": [420, 20], "title": "Positive",
         "widgets": {"text": prompt}, "inputs": {"clip": (1, 1), "text": (2, 0)}},
        {"id": 4, "type": "CLIPTextEncode", "pos": [420, 260], "title": "Negative",
         "widgets": {"text": negative}, "inputs": {"clip": (1, 1)}},
        {"id": 5, "type": "EmptyLatentImage", "pos": [420, 480], "widgets": {"width": s, "height": s, "batch_size": 1}},
        {"id": 6, "type": "KSampler", "pos": [1180, 100], "size": [320, 270],
         "widgets": {"seed": seed, "steps": model_cfg["steps"], "cfg": cfg, "sampler_name": "euler",
                     "scheduler": "normal", "denoise": 1.0},
         "inputs": {"positive": (3, 0), "negative": (4, 0), "latent_image": (5, 0)}},
        {"id": 7, "type": "VAEDecode", "pos": [1540, 100], "inputs": {"samples": (6, 0), "vae": (1, 2)}},
        {"id": 8, "type": "SaveImage", "pos": [1900, 100], "size": [400, 450], "widgets": {"filename_prefix": "faithful"},
         "inputs": {"images": (7, 0)}},
    ]


def _set_model(spec, model_src):
    for n in spec:
        if n["id"] == 6:
            n["inputs"]["model"] = model_src
    return spec


def excite(model_cfg):
    prompt = "a cat and a frog"
    spec = _base(model_cfg, prompt)
    spec.append({"id": 10, "type": "FaithfulExciteTokens", "pos": [820, 20], "size": [340, 420],
                 "widgets": {"prompt": prompt, "subjects": "cat, frog", "attention_factor": model_cfg["factor"]},
                 "inputs": {"model": (1, 0), "clip": (1, 1), "prompt": (2, 0)}})
    return _set_model(spec, (10, 0))


def bind(model_cfg):
    prompt = "a pink sunflower and a yellow flamingo"
    spec = _base(model_cfg, prompt)
    spec.append({"id": 11, "type": "FaithfulParsePromptBindings", "pos": [420, 700], "size": [340, 300],
                 "widgets": {"prompt": prompt}, "inputs": {"clip": (1, 1), "prompt": (2, 0)}})
    spec.append({"id": 12, "type": "FaithfulBindAttributes", "pos": [820, 20], "size": [320, 200],
                 "widgets": {"attention_factor": model_cfg["factor"]}, "inputs": {"model": (1, 0), "bindings": (11, 0)}})
    return _set_model(spec, (12, 0))


def spatial(model_cfg):
    prompt = "a red car to the left of a blue dog"
    spec = _base(model_cfg, prompt)
    spec.append({"id": 13, "type": "FaithfulSpatialAlignment", "pos": [820, 20], "size": [340, 420],
                 "widgets": {"prompt": prompt, "relations": "car left of dog"},
                 "inputs": {"model": (1, 0), "clip": (1, 1), "prompt": (2, 0)}})
    return _set_model(spec, (13, 0))


def combined(model_cfg):
    """Excite Tokens -> Bind Attributes -> Spatial Alignment Loss on one model: one loss, one backward."""
    prompt = "a red car to the left of a blue dog"
    spec = _base(model_cfg, prompt)
    spec.append({"id": 10, "type": "FaithfulExciteTokens", "pos": [820, 20], "size": [340, 420],
                 "widgets": {"prompt": prompt, "subjects": "car, dog", "attention_factor": model_cfg["factor"]},
                 "inputs": {"model": (1, 0), "clip": (1, 1), "prompt": (2, 0)}})
    spec.append({"id": 11, "type": "FaithfulParsePromptBindings", "pos": [420, 700], "size": [340, 300],
                 "widgets": {"prompt": prompt}, "inputs": {"clip": (1, 1), "prompt": (2, 0)}})
    spec.append({"id": 12, "type": "FaithfulBindAttributes", "pos": [820, 480], "size": [320, 200],
                 "widgets": {"attention_factor": model_cfg["factor"]}, "inputs": {"model": (10, 0), "bindings": (11, 0)}})
    spec.append({"id": 13, "type": "FaithfulSpatialAlignment", "pos": [820, 720], "size": [340, 420],
                 "widgets": {"prompt": prompt, "relations": ""},
                 "inputs": {"model": (12, 0), "clip": (1, 1), "prompt": (2, 0), "bindings": (11, 0)}})
    for n in spec:
        if n["id"] == 6:
            n["pos"] = [1220, 100]
    return _set_model(spec, (13, 0))


def layout(model_cfg):
    """Layout Regions: its CONDITIONING replaces the positive CLIPTextEncode at the sampler."""
    import json as _json
    prompt = "a cat and a dog in a garden"
    spec = _base(model_cfg, prompt)
    lay = {"width": model_cfg["size"], "height": model_cfg["size"], "regions": [
        {"x": 0.02, "y": 0.3, "w": 0.46, "h": 0.6, "phrase": "a cat"},
        {"x": 0.52, "y": 0.3, "w": 0.46, "h": 0.6, "phrase": "a dog"}]}
    spec.append({"id": 14, "type": "FaithfulLayoutRegions", "pos": [820, 20], "size": [420, 760],
                 "widgets": {"prompt": prompt, "layout": _json.dumps(lay)},
                 "inputs": {"model": (1, 0), "clip": (1, 1), "prompt": (2, 0)}})
    for n in spec:
        if n["id"] == 6:
            n["inputs"]["positive"] = (14, 1)
            n["pos"] = [1300, 100]
    return _set_model(spec, (14, 0))


EXAMPLES_SPEC = {
    "faithful_excite_tokens_sd15": (excite, SD15, {"FaithfulExciteTokens"}),
    "faithful_excite_tokens_sdxl": (excite, SDXL, {"FaithfulExciteTokens"}),
    "faithful_bind_attributes_sd15": (bind, SD15, {"FaithfulParsePromptBindings", "FaithfulBindAttributes"}),
    "faithful_spatial_alignment_sd15": (spatial, SD15, {"FaithfulSpatialAlignment"}),
    "faithful_spatial_alignment_sdxl": (spatial, SDXL, {"FaithfulSpatialAlignment"}),
    "faithful_layout_regions_sd15": (layout, SD15, {"FaithfulLayoutRegions"}),
    "faithful_layout_regions_sdxl": (layout, SDXL, {"FaithfulLayoutRegions"}),
    "faithful_combined_sd15": (combined, SD15, {"FaithfulExciteTokens", "FaithfulBindAttributes",
                                               "FaithfulSpatialAlignment"}),
}


def write_all(object_info: dict, out_dir: str = EXAMPLES) -> list[str]:
    from tools.workflows import build_ui
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, (fn, cfg, needs) in EXAMPLES_SPEC.items():
        if not needs <= set(object_info):
            print(f"skip {name}: nodes {sorted(needs - set(object_info))} not available")
            continue
        wf = build_ui(fn(cfg), object_info)
        path = os.path.join(out_dir, name + ".json")
        with open(path, "w") as f:
            json.dump(wf, f, indent=1)
        written.append(path)
    return written


def thumbnail(url: str, workflow_path: str) -> str:
    """<name>.jpg beside the workflow: a screenshot of the graph in the page, for the template browser."""
    from PIL import Image
    from tools import page
    png = workflow_path[:-5] + ".png"
    errors = page.screenshot_workflow(url, workflow_path, png)
    if errors:
        raise RuntimeError(f"page errors while loading {workflow_path}: {errors}")
    im = Image.open(png).convert("RGB")
    im.thumbnail((768, 768))
    jpg = workflow_path[:-5] + ".jpg"
    im.save(jpg, quality=85)
    os.remove(png)
    return jpg


def main():
    sys.path.insert(0, ROOT)
    from tools.server import Server, make_base_dir
    import tempfile
    with Server(make_base_dir(tempfile.mkdtemp(prefix="faithful-examples-"))) as srv:
        for p in write_all(srv.object_info()):
            print("wrote", p)
            if "--no-thumbnails" not in sys.argv:
                print("wrote", thumbnail(srv.url, p))


if __name__ == "__main__":
    main()
