"""Gallery of plain vs guided shapes-model pictures (same prompts, same seeds), from the committed weights.

    python -m tools.shapes_gallery [--out docs/images] [--n 6] [--seed 0]

For each method writes shapes_<method>.png: top row plain, bottom row guided, one column per prompt, each
picture enlarged 8x (nearest), with the prompt under each column; and prints each column's scores.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)



def grid(rows, captions, scale=8, label_h=26):
    import numpy as np
    from PIL import Image, ImageDraw
    from tools import shapes_run as R
    tiles = [[R.upscale(im, scale) for im in row] for row in rows]
    th, tw = tiles[0][0].shape[:2]
    pad = 4
    W = len(tiles[0]) * (tw + pad) + pad
    H = len(tiles) * (th + pad) + pad + label_h
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            canvas.paste(Image.fromarray(np.ascontiguousarray(t)), (pad + c * (tw + pad), pad + r * (th + pad)))
    d = ImageDraw.Draw(canvas)
    for c, cap in enumerate(captions):
        words = cap.split()
        half = (len(words) + 1) // 2
        d.text((pad + c * (tw + pad), H - label_h + 1), " ".join(words[:half]), fill=(0, 0, 0))
        d.text((pad + c * (tw + pad), H - label_h + 13), " ".join(words[half:]), fill=(0, 0, 0))
    return canvas


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "images"))
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="excite,bind,spatial,layout")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from tools import host
    host.bootstrap_host()
    host.load_pack()
    from tools import shapes_model as SM
    from tools import shapes_run as R
    model, clip = SM.load()
    os.makedirs(a.out, exist_ok=True)
    for method in [m.strip() for m in a.methods.split(",") if m.strip()]:
        scenes = R.prompt_set(R.KIND[method], a.n, seed=100)
        plain = R.run(model, clip, scenes, "plain", (a.seed,), 1, keep_images=True)
        guided = R.run(model, clip, scenes, method, (a.seed,), 1, keep_images=True)
        img = grid([[r["image"] for r in plain], [r["image"] for r in guided]], [s.caption for s in scenes])
        path = os.path.join(a.out, f"shapes_{method}.png")
        img.save(path)
        tgt = R.TARGET[method]
        print(f"{path}: {tgt} plain {[int(r[tgt]) for r in plain]} guided {[int(r[tgt]) for r in guided]}")


if __name__ == "__main__":
    main()
