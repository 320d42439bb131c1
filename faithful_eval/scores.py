"""Scorers for prompt faithfulness, from LOCAL model folders only (nothing is ever downloaded).

* CLIP text-image similarity (Attend-and-Excite's protocol): cosine similarity of each image to its full
  prompt, and the minimum over the prompt's parts split on " and " / " with " ("minimum object
  similarity"); optionally each text embedding is the average of the L2-normalised embeddings of the 80
  ImageNet prompt templates ("a bad photo of a {}." ...), renormalised.
* SynGen's relative CLIP metric: for one prompt and seed, the competing images (one per method) against each
  noun-phrase segment; ``logits_per_image`` softmaxed across the images, averaged over segments; the best
  image wins; wins are counted per method. Segments come from the caller (a list or a function), so no
  parser is needed; the generated prompt sets carry them in ``segments``.
* VISOR spatial check from a detector hook ``detect(image) -> [(label, (x0, y0, x1, y1), score), ...]``:
  an image is correct if ANY detected (A, B) box pair has centroids in the relation (left: x_A < x_B;
  right: x_A > x_B; above: y_A < y_B; below: y_A > y_B, image y pointing down). OA, VISOR_cond,
  VISOR_uncond and VISOR_n. ``owlvit_detector`` makes such a hook from a local OWL-ViT folder.
* A per-image CSV, a per-method summary CSV and an HTML contact sheet with inline SVG bar charts.

CLI, on a folder written by ``faithful_eval.runner``::

    python -m faithful_eval.scores results/ --clip /models/clip-vit-base-patch16 --templates
    python -m faithful_eval.scores results/ --clip /models/clip-vit-base-patch32 --syngen
    python -m faithful_eval.scores results/ --detector mypackage.detect:detect      # VISOR
    python -m faithful_eval.scores results/ --owlvit /models/owlvit-base-patch32    # VISOR with OWL-ViT

It writes ``scores.csv``, ``summary.csv`` and ``index.html`` into the results folder. The scorers live in
``clip_scores``, ``syngen_metric``, ``visor`` and ``report``; this module joins them to a runner folder.
"""
from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import sys
from typing import Callable

# The scorers, importable from here as before the split (faithful_eval.scores.load_clip ...).
from .clip_scores import IMAGENET_TEMPLATES, ClipScorer, clip_similarities, load_clip, min_part, split_parts
from .manifest import MANIFEST, PROMPTS_INDEX, Manifest, finished
from .report import summarize, svg_bar_chart, write_contact_sheet, write_csv
from .syngen_metric import count_wins, segment_scores, syngen_compare, winner
from .visor import (centroid, normalize_relation, owlvit_detector, relation_holds, visor_check, visor_evaluate,
                    visor_metrics)

__all__ = ["IMAGENET_TEMPLATES", "ClipScorer", "clip_similarities", "load_clip", "min_part", "split_parts",
           "summarize", "svg_bar_chart", "write_contact_sheet", "write_csv", "count_wins", "segment_scores",
           "syngen_compare", "winner", "centroid", "normalize_relation", "owlvit_detector", "relation_holds",
           "visor_check", "visor_evaluate", "visor_metrics", "runner_rows", "score_folder", "main"]


def runner_rows(results_dir: str) -> list[dict]:
    """One row per finished image of a ``faithful_eval.runner`` folder, joined with its prompt record."""
    done = finished(Manifest.read(os.path.join(results_dir, MANIFEST)), results_dir)
    recs = {}
    ip = os.path.join(results_dir, PROMPTS_INDEX)
    if os.path.exists(ip):
        with open(ip, encoding="utf-8") as f:
            recs = {r["slug"]: r for r in json.load(f)}
    rows = []
    for key, e in done.items():
        rec = recs.get(e["slug"], {})
        rows.append({"key": key, "slug": e["slug"], "id": e.get("id") or rec.get("id", ""), "prompt": e["prompt"],
                     "kind": rec.get("kind", ""), "method": e["method"], "seed": e["seed"], "file": e["files"][0],
                     "objects": rec.get("objects", []), "relation": rec.get("relation", ""),
                     "segments": rec.get("segments", [])})
    rows.sort(key=lambda r: (r["slug"], r["seed"], r["method"]))
    return rows


def score_folder(results_dir: str, clip: str | None = None, templates: bool = False, syngen: bool = False,
                 detect: Callable | None = None, threshold: float = 0.1, keep_animal_animal: bool = False,
                 html_path: str | None = None, log=print) -> dict:
    rows = runner_rows(results_dir)
    if not rows:
        raise ValueError(f"{results_dir}: no finished images (is it a faithful_eval.runner output folder?)")
    paths = [os.path.join(results_dir, r["file"]) for r in rows]
    charts, summary_keys = [], []
    scorer = None
    if clip:
        scorer = ClipScorer(clip)
        log(f"CLIP similarity of {len(rows)} images{' (80 templates)' if templates else ''} ...")
        sims = clip_similarities(scorer, paths, [r["prompt"] for r in rows], IMAGENET_TEMPLATES if templates else None)
        for r, s in zip(rows, sims):
            r["clip_full"], r["clip_min_part"], r["clip_parts"] = s["full"], s["min_part"], s["parts"]
        summary_keys += ["clip_full", "clip_min_part"]
    wins = None
    if syngen:
        if scorer is None:
            raise ValueError("--syngen needs --clip")
        groups = collections.defaultdict(dict)
        for r, p in zip(rows, paths):
            if r["kind"] == "animal_animal" and not keep_animal_animal:
                continue  # as SynGen's evaluation does: these prompts have no modifiers to bind
            groups[(r["slug"], r["seed"])][r["method"]] = (p, r)
        items = [{"prompt": next(iter(g.values()))[1]["prompt"], "key": k,
                  "segments": next(iter(g.values()))[1]["segments"] or split_parts(next(iter(g.values()))[1]["prompt"]),
                  "images": {m: p for m, (p, _) in g.items()}} for k, g in groups.items() if len(g) > 1]
        log(f"SynGen segment metric over {len(items)} prompt/seed groups ...")
        res, wins = syngen_compare(scorer, items)
        by_key = {(r["slug"], r["seed"], r["method"]): r for r in rows}
        for it in res:
            for m, sc in it["scores"].items():
                row = by_key[(it["key"][0], it["key"][1], m)]
                row["syngen_score"] = sc
                row["syngen_win"] = int(m == it["winner"])
        summary_keys.append("syngen_score")
    vis = {}
    if detect is not None:
        items = [dict(prompt=r["slug"], image=p, objects=r["objects"], relation=r["relation"], method=r["method"], idx=i)
                 for i, (r, p) in enumerate(zip(rows, paths)) if r["relation"] and len(r["objects"]) >= 2]
        log(f"VISOR check of {len(items)} images ...")
        res = visor_evaluate(detect, items, threshold)
        for x in res:
            rows[x["idx"]]["visor_both"], rows[x["idx"]]["visor_correct"] = int(x["both"]), int(x["correct"])
        n_max = max(collections.Counter((r["slug"], r["method"]) for r in rows).values())
        for m in dict.fromkeys(x["method"] for x in res):
            vis[m] = visor_metrics([x for x in res if x["method"] == m], n_max=max(4, n_max))
    summary = summarize(rows, summary_keys)
    for m in summary:
        if wins is not None:
            summary[m]["syngen_wins"] = wins.get(m, 0)
        summary[m].update(vis.get(m, {}))
    if clip:
        charts.append(svg_bar_chart({m: s.get("clip_full", float("nan")) for m, s in summary.items()}, "CLIP full prompt"))
        charts.append(svg_bar_chart({m: s.get("clip_min_part", float("nan")) for m, s in summary.items()}, "CLIP min part"))
    if wins is not None:
        charts.append(svg_bar_chart(wins, "SynGen segment wins", fmt="{:.0f}"))
    if vis:
        for k in ("OA", "VISOR_uncond", "VISOR_cond"):
            charts.append(svg_bar_chart({m: v[k] for m, v in vis.items()}, k, fmt="{:.1f}"))
    out_rows = [{k: v for k, v in r.items() if k not in ("segments",)} for r in rows]
    write_csv(out_rows, os.path.join(results_dir, "scores.csv"))
    write_csv([{"method": m, **s} for m, s in summary.items()], os.path.join(results_dir, "summary.csv"))
    html_path = html_path or os.path.join(results_dir, "index.html")
    for r in rows:
        r["root"] = os.path.abspath(results_dir)
    write_contact_sheet(html_path, rows, charts=charts, score_keys=[k for k in ("clip_full", "clip_min_part", "syngen_score") if k in summary_keys])
    return {"rows": len(rows), "summary": summary, "wins": wins, "html": html_path}


def _import_hook(spec: str) -> Callable:
    mod, _, fn = spec.partition(":")
    if not fn:
        raise ValueError("--detector wants module:function, e.g. mydet:detect")
    return getattr(importlib.import_module(mod), fn)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m faithful_eval.scores", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="CLI, on" + __doc__.split("CLI, on")[1])
    p.add_argument("results", help="a folder written by faithful_eval.runner")
    p.add_argument("--clip", help="local CLIP folder (e.g. a saved openai/clip-vit-base-patch16)")
    p.add_argument("--templates", action="store_true", help="average the text embeddings over the 80 ImageNet templates")
    p.add_argument("--syngen", action="store_true", help="SynGen's relative segment metric and win counts (needs --clip)")
    p.add_argument("--keep-animal-animal", action="store_true", help="do not drop A&E animal-animal prompts from --syngen")
    p.add_argument("--detector", help="VISOR: a detector hook module:function, image -> [(label, box, score)]")
    p.add_argument("--owlvit", help="VISOR: a local OWL-ViT folder to use as the detector")
    p.add_argument("--threshold", type=float, default=0.1, help="detection score threshold (VISOR: 0.1)")
    p.add_argument("--html", help="contact sheet path (default RESULTS/index.html)")
    a = p.parse_args(argv)
    detect = None
    if a.detector:
        sys.path.append(os.getcwd())  # after everything else: a hook module must not shadow installed ones
        detect = _import_hook(a.detector)
    elif a.owlvit:
        labels = sorted({o for r in runner_rows(a.results) for o in r["objects"]})
        detect = owlvit_detector(a.owlvit, labels, threshold=a.threshold)
    if not (a.clip or detect):
        p.error("nothing to score: give --clip and/or --detector/--owlvit")

    def log(msg):
        print(msg, file=sys.stderr)
    res = score_folder(a.results, a.clip, a.templates, a.syngen, detect, a.threshold, a.keep_animal_animal, a.html, log)
    for m, s in res["summary"].items():
        log(f"{m}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items()))
    log(f"wrote scores.csv, summary.csv and {res['html']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
