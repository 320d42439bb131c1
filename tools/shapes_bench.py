"""Benchmark every Faithful method on the shapes model: what each one changes in the picture, exactly scored.

    python -m tools.shapes_bench [--prompts 32] [--seeds 2] [--batch 4] [--sweep] [--out bench_results/shapes]

Samples prompts x seeds x batch pictures per setting (default 32 x 2 x 4 = 256) in-process through ComfyUI's
stock sampler (euler, normal, 20 steps, cfg 4) with the pack's nodes called as the server calls them: plain,
Excite Tokens and Bind Attributes on three-object prompts; plain and Layout Regions on "A and B" prompts (each
object's box from the ground-truth scene); plain, Spatial Alignment Loss and all four chained on "A REL B"
prompts. Strengths: tools/shapes_run.DEFAULT_STRENGTH (tuned on this model by the sweep). For each setting it reports every metric of faithful_eval/shapes/evaluate.py with a
95% Wilson interval: presence (A&E's target), binding (SynGen's), relation (InfSplign's, VISOR), layout_inside and
layout_iou (DenseDiffusion's), and the guard (pictures with stray objects, specks or off-palette pixels).
--sweep adds each method's main strength on a small grid (A&E scale, SynGen step size, InfSplign weight,
DenseDiffusion w_cross with w_self = 0.3 w_cross), the papers' values among them. Writes results.json and results.md under --out.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

METRICS = ("presence", "binding", "relation", "layout_inside", "layout_iou", "guard_bad")
SWEEP = {"excite": [5.0, 20.0, 60.0], "bind": [2.0, 5.0, 20.0], "spatial": [100.0, 300.0, 1000.0, 3000.0],
         "layout": [1.0, 2.0, 4.0, 8.0]}


def summarise(rows):
    import numpy as np
    from tools import shapes_run as R
    out = {}
    for k in METRICS:
        v = [r[k] for r in rows if r.get(k) is not None]
        if not v:
            continue
        p = float(np.mean(v))
        if k == "layout_iou":  # a mean, not a proportion: normal interval
            h = 1.96 * float(np.std(v)) / max(1, len(v)) ** 0.5
            out[k] = {"mean": p, "ci": [p - h, p + h], "n": len(v)}
        else:
            out[k] = {"mean": p, "ci": list(R.wilson(p, len(v))), "n": len(v)}
    return out


def settings(sweep: bool):
    """(name, prompt kind, method, strength) for every setting measured."""
    from tools import shapes_run as R
    s = [("plain (three)", "three", "plain", None), ("excite", "three", "excite", None),
         ("bind", "three", "bind", None), ("plain (and)", "and", "plain", None), ("layout", "and", "layout", None),
         ("plain (relation)", "relation", "plain", None), ("spatial", "relation", "spatial", None),
         ("chained", "relation", "chained", None)]
    if sweep:
        for m, grid in SWEEP.items():
            s += [(f"{m} @ {g:g}", R.KIND[m], m, g) for g in grid if g != R.DEFAULT_STRENGTH[m]]
    return s


def table(results) -> str:
    head = "| setting | n | " + " | ".join(METRICS) + " |\n|---|---|" + "---|" * len(METRICS) + "\n"
    lines = []
    for name, res in results.items():
        n = max(v["n"] for v in res.values())
        cells = [f"{res[k]['mean']:.3f} [{res[k]['ci'][0]:.2f}, {res[k]['ci'][1]:.2f}]" if k in res else "-"
                 for k in METRICS]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", type=float, default=None, help="classifier-free guidance scale (default 4)")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated setting names to run (default all)")
    ap.add_argument("--weights", default=None, help="another weights file (sha256 not checked)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench_results", "shapes"))
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from tools import host
    host.bootstrap_host()
    host.load_pack()
    from tools import shapes_model as SM
    from tools import shapes_run as R
    model, clip = SM.load(a.weights, expected_sha256="" if a.weights else None)
    scenes = {k: R.prompt_set(k, a.prompts) for k in ("three", "and", "relation")}
    seeds = list(range(a.seeds))
    only = {s.strip() for s in a.only.split(",") if s.strip()}
    os.makedirs(a.out, exist_ok=True)
    results, timing = {}, {}
    for name, kind, method, strength in settings(a.sweep):
        if only and name not in only:
            continue
        t0 = time.time()
        rows = R.run(model, clip, scenes[kind], method, seeds, a.batch, strength, steps=a.steps, cfg=a.cfg or R.CFG)
        results[name] = summarise(rows)
        timing[name] = time.time() - t0
        tgt = R.TARGET[method]
        r = results[name][tgt]
        print(f"{name:>18}: {tgt} {r['mean']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]  guard_bad "
              f"{results[name]['guard_bad']['mean']:.3f}  (n={r['n']}, {timing[name]:.0f} s)", flush=True)
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump({"config": vars(a), "sampler": [R.SAMPLER, R.SCHEDULER, a.steps, a.cfg or R.CFG],
                       "results": results, "seconds": timing}, f, indent=1)
    md = table(results)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
