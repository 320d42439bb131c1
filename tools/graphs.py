"""API-format graphs (the JSON that POST /prompt takes) for tests, the example runner and the benchmark."""
from __future__ import annotations


def base_graph(ckpt: str, prompt: str, negative: str = "", seed: int = 0, steps: int = 8, cfg: float = 7.5,
               width: int = 128, height: int = 128, sampler: str = "euler", scheduler: str = "normal",
               denoise: float = 1.0, prefix: str = "faithful", batch: int = 1) -> dict:
    """Load Checkpoint -> CLIPTextEncode x2 -> KSampler -> VAEDecode -> SaveImage. Node ids are fixed strings:
    ckpt, pos, neg, latent, sampler, decode, save. Guidance nodes are inserted with ``insert_model_patch``."""
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "sampler": {"class_type": "KSampler", "inputs": {
            "model": ["ckpt", 0], "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0],
            "denoise": denoise}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["ckpt", 2]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["decode", 0], "filename_prefix": prefix}},
    }


def insert_model_patch(graph: dict, node_id: str, class_type: str, inputs: dict, model_input: str = "model") -> dict:
    """Put a MODEL -> MODEL node between the sampler and whatever fed its model."""
    g = dict(graph)
    upstream = g["sampler"]["inputs"]["model"]
    g[node_id] = {"class_type": class_type, "inputs": dict(inputs, **{model_input: upstream})}
    g["sampler"] = {**g["sampler"], "inputs": {**g["sampler"]["inputs"], "model": [node_id, 0]}}
    return g


def excite_graph(ckpt: str, prompt: str = "a cat and a frog", subjects: str = "cat, frog", **kw) -> dict:
    opts = {k: kw.pop(k) for k in list(kw) if k in ("scale_factor", "attention_factor", "max_refinement_steps",
                                                   "iterative_refinement", "guided_fraction", "token_indices")}
    g = base_graph(ckpt, prompt, **kw)
    return insert_model_patch(g, "excite", "FaithfulExciteTokens",
                              dict({"clip": ["ckpt", 1], "prompt": prompt, "subjects": subjects}, **opts))


def spatial_graph(ckpt: str, prompt: str = "a car to the left of a dog", relations: str = "car left of dog",
                  **kw) -> dict:
    opts = {k: kw.pop(k) for k in list(kw) if k in ("guidance_scale", "alpha", "margin", "start", "end")}
    g = base_graph(ckpt, prompt, **kw)
    return insert_model_patch(g, "spatial", "FaithfulSpatialAlignment",
                              dict({"clip": ["ckpt", 1], "prompt": prompt, "relations": relations}, **opts))


def chain(graph: dict, node_id: str, class_type: str, inputs: dict) -> dict:
    """Add one more MODEL -> MODEL node in front of the sampler (after whatever is there)."""
    return insert_model_patch(graph, node_id, class_type, inputs)


def bind_graph(ckpt: str, prompt: str = "a pink sunflower and a yellow flamingo", edited_json: str = "",
               **kw) -> dict:
    """Parse Prompt Bindings -> Bind Attributes -> KSampler."""
    opts = {k: kw.pop(k) for k in list(kw) if k in ("step_size", "guided_fraction", "attention_factor")}
    g = base_graph(ckpt, prompt, **kw)
    g["parse"] = {"class_type": "FaithfulParsePromptBindings",
                  "inputs": {"clip": ["ckpt", 1], "prompt": prompt, "edited_json": edited_json}}
    return insert_model_patch(g, "bind", "FaithfulBindAttributes", dict({"bindings": ["parse", 0]}, **opts))


def layout_graph(ckpt: str, prompt: str = "a cat and a dog in a garden", layout: dict | None = None, **kw) -> dict:
    """Layout Regions -> KSampler, with the node's spliced CONDITIONING as the sampler's positive input."""
    import json as _json
    layout = layout or {"width": kw.get("width", 128), "height": kw.get("height", 128), "regions": [
        {"x": 0.0, "y": 0.0, "w": 0.5, "h": 1.0, "phrase": "a cat"},
        {"x": 0.5, "y": 0.0, "w": 0.5, "h": 1.0, "phrase": "a dog"}]}
    g = base_graph(ckpt, prompt, **kw)
    g = insert_model_patch(g, "layout", "FaithfulLayoutRegions",
                           {"clip": ["ckpt", 1], "prompt": prompt, "layout": _json.dumps(layout)})
    g["sampler"]["inputs"]["positive"] = ["layout", 1]
    return g


def comparison_graph(ckpt: str, prompt: str = "a cat and a frog", subjects: str = "cat, frog", factor: int = 4,
                     guidance: tuple[str, dict] | None = None, **kw) -> dict:
    """One prompt, two branches from one checkpoint: the plain model and the guided one (Excite Tokens by
    default), each with Record Attention, their own sampler and decode, saved as 'plain' and 'guided', and an
    Attention Map Preview of guided vs unguided (node id 'preview')."""
    g = base_graph(ckpt, prompt, prefix="guided", **kw)
    cls, inputs = guidance or ("FaithfulExciteTokens", {"clip": ["ckpt", 1], "prompt": prompt, "subjects": subjects,
                                                        "attention_factor": factor})
    g["guide"] = {"class_type": cls, "inputs": dict(inputs, model=["ckpt", 0])}
    rec = {"clip": ["ckpt", 1], "prompt": prompt, "words": subjects, "attention_factor": factor}
    g["rec_guided"] = {"class_type": "FaithfulRecordAttention", "inputs": dict(rec, model=["guide", 0])}
    g["rec_plain"] = {"class_type": "FaithfulRecordAttention", "inputs": dict(rec, model=["ckpt", 0])}
    g["sampler"]["inputs"]["model"] = ["rec_guided", 0]
    g["sampler_plain"] = {"class_type": "KSampler", "inputs": dict(g["sampler"]["inputs"], model=["rec_plain", 0])}
    g["decode_plain"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sampler_plain", 0], "vae": ["ckpt", 2]}}
    g["save_plain"] = {"class_type": "SaveImage", "inputs": {"images": ["decode_plain", 0], "filename_prefix": "plain"}}
    g["preview"] = {"class_type": "FaithfulAttentionMapPreview", "inputs": {
        "model": ["rec_guided", 0], "images": ["decode", 0], "compare_model": ["rec_plain", 0],
        "compare_images": ["decode_plain", 0], "label": "guided", "compare_label": "unguided"}}
    return g


def preview_graph(ckpt: str, prompt: str = "a cat and a frog", words: str = "cat, frog", factor: int = 2,
                  start: float = 0.0, end: float = 1.0, all_layers: bool = False, **kw) -> dict:
    """Load Checkpoint -> Record Attention -> KSampler -> VAE Decode -> Attention Map Preview (node id 'preview',
    fed the recorded model and the decoded images); the base graph's SaveImage stays."""
    g = base_graph(ckpt, prompt, **kw)
    g = insert_model_patch(g, "record", "FaithfulRecordAttention", {
        "clip": ["ckpt", 1], "prompt": prompt, "words": words, "start": start, "end": end,
        "attention_factor": factor, "all_layers": all_layers})
    g["preview"] = {"class_type": "FaithfulAttentionMapPreview",
                    "inputs": {"model": ["record", 0], "images": ["decode", 0]}}
    return g


def shapes_comparison_graph(prompt: str = "a red circle to the left of a blue square", subjects: str = "circle, square",
                            factor: int = 2, batch: int = 4, scale: int = 16, relations: str = "circle left of square",
                            spatial_scale: float = 300.0, **kw) -> dict:
    """``comparison_graph`` on the committed shapes-world model (Load Shapes World Model, Shapes Decode): plain
    and Spatial Alignment Loss branches from one seed, with the attention preview of ``subjects``; the 16x16
    pictures upscaled ``scale`` times. Its latent is 128 x 128 px in EmptyLatentImage terms (a 16 x 16 latent).
    The plain model draws both objects but on the named side only about half the time, which the guidance fixes
    (docs/shapes.md); its weight ``spatial_scale`` is the one the shapes sweep chose (the paper's 1000 is tuned
    for SD's 64x64 latent)."""
    kw.setdefault("cfg", 4.0)
    kw.setdefault("steps", 20)
    guidance = ("FaithfulSpatialAlignment", {"clip": ["ckpt", 1], "prompt": prompt, "relations": relations,
                                                 "guidance_scale": spatial_scale})
    g = comparison_graph("", prompt, subjects, factor, guidance=guidance, width=128, height=128, batch=batch, **kw)
    g["ckpt"] = {"class_type": "FaithfulLoadShapesModel", "inputs": {}}
    for d in ("decode", "decode_plain"):
        g[d] = {"class_type": "FaithfulShapesDecode", "inputs": {"samples": g[d]["inputs"]["samples"], "scale": scale}}
    return g
