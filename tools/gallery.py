"""The README gallery: what each node changes, shown as Attention Map Preview grids (guided above unguided).

Each method runs once through a headless ComfyUI server in one comparison graph (tools.graphs.comparison_graph):
the same prompt, seed and sampler, one branch plain and one with the method, both recorded; the preview grid
is written to docs/images/gallery_<method>.png. On the generated random checkpoint the decoded images are noise,
but the attention maps show what the method does to where each word attends; with ``--ckpt`` the same script
makes the gallery on a real model.

    python -m tools.gallery [--ckpt model.safetensors --size 512 --steps 30 --factor 4]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools import graphs  # noqa: E402
from tools.server import Server, execution_error, make_base_dir  # noqa: E402


def method_graphs(ckpt: str, size: int, factor: int, **common) -> dict:
    """method name -> API graph comparing it with the plain model (preview node id 'preview')."""
    clip = ["ckpt", 1]
    out = {}
    p = "a cat and a frog"
    out["excite"] = graphs.comparison_graph(ckpt, p, "cat, frog", factor, width=size, height=size, **common)

    p = "a pink sunflower and a yellow flamingo"
    g = graphs.comparison_graph(ckpt, p, "pink, sunflower, yellow, flamingo", factor,
                                guidance=("FaithfulBindAttributes", {"bindings": ["parse", 0]}),
                                width=size, height=size, **common)
    g["parse"] = {"class_type": "FaithfulParsePromptBindings", "inputs": {"clip": clip, "prompt": p}}
    out["bind"] = g

    p = "a car to the left of a dog"
    out["spatial"] = graphs.comparison_graph(
        ckpt, p, "car, dog", factor, width=size, height=size,
        guidance=("FaithfulSpatialAlignment", {"clip": clip, "prompt": p, "relations": "car left of dog"}), **common)

    p = "a cat and a dog in a garden"
    layout = {"width": size, "height": size, "regions": [
        {"x": 0.0, "y": 0.25, "w": 0.45, "h": 0.5, "phrase": "a cat"},
        {"x": 0.55, "y": 0.0, "w": 0.45, "h": 1.0, "phrase": "a dog"}]}
    g = graphs.comparison_graph(
        ckpt, p, "cat, dog", factor, width=size, height=size,
        guidance=("FaithfulLayoutRegions", {"clip": clip, "prompt": p, "layout": json.dumps(layout)}), **common)
    g["sampler"]["inputs"]["positive"] = ["guide", 1]
    for rec in ("rec_guided", "rec_plain"):  # the modulated steps: the paper's first 30%
        g[rec]["inputs"]["end"] = 0.3
    out["layout"] = g
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write the README gallery of attention-map previews.")
    ap.add_argument("--ckpt", help="a real checkpoint (default: the generated random SD1.x one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "images"))
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--factor", type=int, default=2, help="attention_factor of the recorded maps")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="methods to run (default all)")
    a = ap.parse_args(argv)

    if a.ckpt:
        ckpt_path = os.path.abspath(a.ckpt)
    else:
        from tools.checkpoint import write_checkpoint
        ckpt_path = write_checkpoint(os.path.join(ROOT, ".host", "cache", "faithful_tiny_sd1.safetensors"))
    name = os.path.basename(ckpt_path)
    base = make_base_dir(os.path.join(ROOT, ".host", "run-base"), {name: ckpt_path})
    os.makedirs(a.out, exist_ok=True)
    todo = method_graphs(name, a.size, a.factor, seed=a.seed, steps=a.steps, cfg=7.5)
    with Server(base) as srv:
        for method, graph in todo.items():
            if a.only and method not in a.only:
                continue
            entry = srv.run(graph, timeout=3600)
            err = execution_error(entry)
            if err:
                print(f"{method}: {err['node_type']} failed: {err['exception_message']}", file=sys.stderr)
                return 1
            path = os.path.join(a.out, f"gallery_{method}.png")
            with open(path, "wb") as f:
                f.write(srv.images({"outputs": {"preview": entry["outputs"]["preview"]}})[0])
            print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
