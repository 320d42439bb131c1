"""The main job: run a Faithful workflow through a headless ComfyUI server and write its pictures.

By default it generates a small random SD1.x checkpoint (the images are noise-like: the weights are random)
and runs the pack's own ComfyUI host from scripts/setup.sh. With ``--ckpt`` it uses your checkpoint, and with
``--comfyui`` your ComfyUI folder (start it with the Python of that install via ``--python``).

Writes into --out: ``plain.png`` (the stock KSampler), ``guided.png`` (the same seed with the guidance node),
and ``attention.png`` (the attention-map grid of both runs, when the pack's preview node is available).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tools import graphs  # noqa: E402
from tools.server import Server, execution_error, make_base_dir  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run a Faithful example through a headless ComfyUI server.")
    ap.add_argument("--ckpt", help="your SD1.x/SD2.x/SDXL checkpoint (.safetensors); default: a generated random one")
    ap.add_argument("--comfyui", help="your ComfyUI folder (default: the host made by scripts/setup.sh)")
    ap.add_argument("--python", help="the Python that runs your ComfyUI (default: this one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "faithful_output"), help="where the pictures go")
    ap.add_argument("--prompt", default="a cat and a frog")
    ap.add_argument("--subjects", default="cat, frog", help="words Excite Tokens must make appear")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default 8 generated, 30 with --ckpt)")
    ap.add_argument("--size", type=int, default=None, help="image size in px (default 128 generated, 512 with --ckpt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cfg", type=float, default=7.5)
    a = ap.parse_args(argv)

    os.makedirs(a.out, exist_ok=True)
    if a.ckpt:
        ckpt_path, steps, size, factor = os.path.abspath(a.ckpt), a.steps or 30, a.size or 512, 4
    else:
        from tools.checkpoint import write_checkpoint
        ckpt_path = write_checkpoint(os.path.join(ROOT, ".host", "cache", "faithful_tiny_sd1.safetensors"))
        steps, size, factor = a.steps or 8, a.size or 128, 2
    name = os.path.basename(ckpt_path)
    base = make_base_dir(os.path.join(ROOT, ".host", "run-base"), {name: ckpt_path})
    if a.comfyui:
        os.environ["FAITHFUL_COMFYUI"] = os.path.abspath(a.comfyui)
    srv = Server(base, python=a.python or sys.executable)
    t0 = time.time()
    with srv:
        info = srv.object_info()
        print(f"ComfyUI up in {time.time() - t0:.1f}s at {srv.url}; Faithful nodes: "
              + ", ".join(sorted(k for k in info if k.startswith("Faithful"))))
        common = dict(seed=a.seed, steps=steps, cfg=a.cfg, width=size, height=size)
        plain = graphs.base_graph(name, a.prompt, prefix="plain", **common)
        guided = graphs.excite_graph(name, a.prompt, a.subjects, prefix="guided", attention_factor=factor, **common)
        have_preview = "FaithfulAttentionMapPreview" in info and hasattr(graphs, "with_attention_preview")
        if have_preview:
            plain, guided = graphs.with_attention_preview(plain, guided, a.prompt, a.subjects, factor)
        results = {}
        for label, g in (("plain", plain), ("guided", guided)):
            t1 = time.time()
            entry = srv.run(g, timeout=3600)
            err = execution_error(entry)
            if err:
                print(f"{label}: {err['node_type']} failed: {err['exception_message']}", file=sys.stderr)
                return 1
            results[label] = entry
            print(f"{label}: {time.time() - t1:.1f}s")
        written = []
        for label, entry in results.items():
            for node_id, out in entry.get("outputs", {}).items():
                imgs = out.get("images", [])
                if not imgs:
                    continue
                kind = "attention" if "preview" in node_id else label
                data = srv.images({"outputs": {node_id: out}})[0]
                path = os.path.join(a.out, f"{kind}.png")
                with open(path, "wb") as f:
                    f.write(data)
                written.append(path)
        for p in written:
            print("wrote", p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
