"""The main job: run a Faithful workflow through a headless ComfyUI server and write its pictures.

By default it runs the committed shapes-world model (faithful_eval/shapes: a small model trained here on pictures
of coloured shapes, whose pictures can be checked) on the pack's own ComfyUI host from scripts/setup.sh, a batch
of four seeds; ``--random-ckpt`` uses a generated random SD1.x checkpoint instead (its images are noise). With ``--ckpt`` it uses your checkpoint, and with
``--comfyui`` your ComfyUI folder (start it with the Python of that install via ``--python``).

Writes into --out: ``plain.png`` (the stock KSampler), ``guided.png`` (the same seed guided: Spatial Alignment
Loss on the shapes model, Excite Tokens on a checkpoint),
and ``attention.png`` (Attention Map Preview: each subject's cross-attention over the image, guided above
unguided), all from one prompt with two branches (tools.graphs.comparison_graph).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools import graphs  # noqa: E402
from tools.host import TINY_CKPT_NAME, host_python  # noqa: E402
from tools.server import Server, execution_error, make_base_dir  # noqa: E402


def write_tiny_checkpoint(path: str, python: str) -> str:
    """The generated random SD1.x checkpoint at ``path`` (kept if already there), built with ComfyUI's classes
    under ``python``, the interpreter that runs the host: another one may lack the host's dependencies."""
    if os.path.exists(path):
        return path
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        from tools.checkpoint import write_checkpoint
        return write_checkpoint(path)
    subprocess.run([python, "-m", "tools.checkpoint", path], cwd=ROOT, check=True)
    return path


def write_row(pngs: list[bytes], path: str) -> None:
    """One PNG: the batch's images side by side (a single image as it is)."""
    if len(pngs) == 1:
        with open(path, "wb") as f:
            f.write(pngs[0])
        return
    import io
    from PIL import Image
    ims = [Image.open(io.BytesIO(b)).convert("RGB") for b in pngs]
    row = Image.new("RGB", (sum(i.width for i in ims) + 4 * (len(ims) - 1), max(i.height for i in ims)), (128, 128, 128))
    x = 0
    for im in ims:
        row.paste(im, (x, 0))
        x += im.width + 4
    row.save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run a Faithful example through a headless ComfyUI server.")
    ap.add_argument("--ckpt", help="your SD1.x/SD2.x/SDXL checkpoint (.safetensors); default: a generated random one")
    ap.add_argument("--comfyui", help="your ComfyUI folder (default: the host made by scripts/setup.sh)")
    ap.add_argument("--python", help="the Python that runs your ComfyUI (default: this one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "faithful_output"), help="where the pictures go")
    ap.add_argument("--random-ckpt", action="store_true", help="a generated random SD1.x checkpoint instead of the shapes model")
    ap.add_argument("--prompt", default=None,
                    help="default: 'a red circle to the left of a blue square' (shapes), else 'a cat and a frog'")
    ap.add_argument("--relations", default="circle left of square",
                    help="shapes model: the relations Spatial Alignment Loss enforces")
    ap.add_argument("--subjects", default=None, help="words Excite Tokens must make appear (default: the prompt's nouns)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default 8 generated, 30 with --ckpt)")
    ap.add_argument("--size", type=int, default=None, help="image size in px (default 128 generated, 512 with --ckpt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cfg", type=float, default=None, help="default 4 (shapes), 7.5 otherwise")
    a = ap.parse_args(argv)

    os.makedirs(a.out, exist_ok=True)
    # Select the host first: generating the checkpoint already imports ComfyUI's classes from it (on a fresh
    # clone with --comfyui there is no .host/ComfyUI to fall back on).
    if a.comfyui:
        os.environ["FAITHFUL_COMFYUI"] = os.path.abspath(a.comfyui)
    python = a.python or host_python()
    shapes = not a.ckpt and not a.random_ckpt
    if shapes:
        prompt, subjects = a.prompt or "a red circle to the left of a blue square", a.subjects or "circle, square"
        name, steps = None, a.steps or 20
    elif a.ckpt:
        ckpt_path, steps, size, factor = os.path.abspath(a.ckpt), a.steps or 30, a.size or 512, 4
    else:
        cache = os.environ.get("FAITHFUL_CACHE", os.path.join(ROOT, ".host", "cache"))
        ckpt_path = write_tiny_checkpoint(os.path.join(cache, TINY_CKPT_NAME), python)
        steps, size, factor = a.steps or 8, a.size or 128, 2
    if not shapes:
        prompt, subjects = a.prompt or "a cat and a frog", a.subjects or "cat, frog"
        name = os.path.basename(ckpt_path)
    base = make_base_dir(os.path.join(ROOT, ".host", "run-base"), {name: ckpt_path} if name else {})
    srv = Server(base, python=python)
    t0 = time.time()
    with srv:
        info = srv.object_info()
        print(f"ComfyUI up in {time.time() - t0:.1f}s at {srv.url}; Faithful nodes: "
              + ", ".join(sorted(k for k in info if k.startswith("Faithful"))))
        if shapes:
            graph = graphs.shapes_comparison_graph(prompt, subjects, relations=a.relations, seed=a.seed, steps=steps,
                                                   cfg=a.cfg or 4.0)
        else:
            common = dict(seed=a.seed, steps=steps, cfg=a.cfg or 7.5, width=size, height=size)
            graph = graphs.comparison_graph(name, prompt, subjects, factor, **common)
        t1 = time.time()
        entry = srv.run(graph, timeout=3600)
        err = execution_error(entry)
        if err:
            print(f"{err['node_type']} failed: {err['exception_message']}", file=sys.stderr)
            return 1
        print(f"plain and guided runs with attention maps: {time.time() - t1:.1f}s")
        names = {"save": "guided.png", "save_plain": "plain.png", "preview": "attention.png"}
        for node_id, fname in names.items():
            out = entry.get("outputs", {}).get(node_id)
            if not out:
                continue
            path = os.path.join(a.out, fname)
            write_row(srv.images({"outputs": {node_id: out}}), path)
            print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
