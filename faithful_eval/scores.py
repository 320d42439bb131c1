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

It writes ``scores.csv``, ``summary.csv`` and ``index.html`` into the results folder.
"""
from __future__ import annotations

import argparse
import collections
import csv
import html
import importlib
import json
import math
import os
import re
import sys
from typing import Callable, Iterable, Sequence

import numpy as np

# The 80 ImageNet prompt templates of the CLIP paper's zero-shot ImageNet evaluation.
IMAGENET_TEMPLATES = [
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
]

_SPLIT = re.compile(r" and | with ")


# --------------------------------------------------------------------------------------------------------
# Loading local models
# --------------------------------------------------------------------------------------------------------

def _local_dir(path: str, what: str) -> str:
    if not path or not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{what}: '{path}' is not a local model folder (it needs config.json and weights). "
                                "Faithful never downloads models: save one with save_pretrained() or copy a "
                                "Hugging Face snapshot folder, and pass its path.")
    return path


def _load_image(im):
    from PIL import Image
    if isinstance(im, (str, os.PathLike)):
        with Image.open(im) as f:
            return f.convert("RGB")
    return im.convert("RGB")


def _features(out):
    """transformers 4 returns a tensor from get_*_features, 5 a model output with the projection in pooler_output."""
    import torch
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipScorer:
    """A CLIP model, its tokenizer and image processor from a local folder, on CPU by default."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 32):
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
        _local_dir(path, "CLIP")
        self.torch = torch
        self.device = device
        self.batch_size = batch_size
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self._text_cache: dict[tuple, np.ndarray] = {}

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def _encode_raw_texts(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                f = _features(self.model.get_text_features(input_ids=tok["input_ids"],
                                                           attention_mask=tok.get("attention_mask")))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, self.model.config.projection_dim), np.float32)

    def encode_texts(self, texts: Sequence[str], templates: Sequence[str] | None = None) -> np.ndarray:
        """L2-normalised text embeddings (n, d). With ``templates``, each text is put in every template, the
        normalised embeddings are averaged and the average is renormalised."""
        key_t = tuple(templates) if templates else None
        todo = [t for t in dict.fromkeys(texts) if (t, key_t) not in self._text_cache]
        if todo:
            if templates:
                flat = [tpl.format(t) for t in todo for tpl in templates]
                emb = self._encode_raw_texts(flat).reshape(len(todo), len(templates), -1).mean(1)
                emb = emb / np.linalg.norm(emb, axis=-1, keepdims=True)
            else:
                emb = self._encode_raw_texts(list(todo))
            for t, e in zip(todo, emb):
                self._text_cache[(t, key_t)] = e
        if not texts:
            return np.zeros((0, self.model.config.projection_dim), np.float32)
        return np.stack([self._text_cache[(t, key_t)] for t in texts])

    def encode_images(self, images: Sequence) -> np.ndarray:
        """L2-normalised image embeddings (n, d) for PIL images or file paths."""
        torch = self.torch
        out = []
        for i in range(0, len(images), self.batch_size):
            batch = [_load_image(im) for im in images[i:i + self.batch_size]]
            px = self.image_processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                f = _features(self.model.get_image_features(pixel_values=px))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, self.model.config.projection_dim), np.float32)


def load_clip(path: str, device: str = "cpu") -> ClipScorer:
    return ClipScorer(path, device)


# --------------------------------------------------------------------------------------------------------
# CLIP text-image similarity (Attend-and-Excite)
# --------------------------------------------------------------------------------------------------------

def split_parts(prompt: str) -> list[str]:
    """'a cat and a red chair' -> ['a cat', 'a red chair']; splits on every ' and ' / ' with ' (so a
    3-phrase DVMP prompt gives 3 parts); a prompt without either gives [prompt]."""
    parts = [p.strip() for p in _SPLIT.split(prompt) if p.strip()]
    return parts or [prompt]


def min_part(part_sims: Sequence[float]) -> float:
    return float(min(part_sims))


def clip_similarities(scorer: ClipScorer, images: Sequence, prompts: Sequence[str],
                      templates: Sequence[str] | None = None) -> list[dict]:
    """For image i and prompt i: {"full": cos(image, prompt), "parts": [cos(image, part)...], "min_part"}."""
    if len(images) != len(prompts):
        raise ValueError("one prompt per image")
    parts = [split_parts(p) for p in prompts]
    texts = list(dict.fromkeys(list(prompts) + [q for ps in parts for q in ps]))
    temb = dict(zip(texts, scorer.encode_texts(texts, templates)))
    iemb = scorer.encode_images(images)
    out = []
    for e, p, ps in zip(iemb, prompts, parts):
        sims = [float(e @ temb[q]) for q in ps]
        out.append({"full": float(e @ temb[p]), "parts": sims, "min_part": min_part(sims)})
    return out


# --------------------------------------------------------------------------------------------------------
# SynGen's relative segment metric
# --------------------------------------------------------------------------------------------------------

def segment_scores(logits_per_image) -> np.ndarray:
    """(n_images, n_segments) logits -> per-image score: softmax ACROSS IMAGES (axis 0), mean over segments."""
    x = np.asarray(logits_per_image, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"logits must be (n_images, n_segments), got {x.shape}")
    x = x - x.max(axis=0, keepdims=True)
    p = np.exp(x)
    p = p / p.sum(axis=0, keepdims=True)
    return p.mean(axis=1)


def winner(methods: Sequence[str], scores: Sequence[float]) -> str:
    """The method with the highest score; a tie goes to the method listed first."""
    return methods[int(np.argmax(np.asarray(scores)))]


def count_wins(groups: Iterable[tuple[Sequence[str], Sequence[float]]], methods: Sequence[str] | None = None) -> dict:
    """Wins per method over groups of (methods, scores); every method of ``methods`` appears, with 0 wins."""
    c = collections.Counter()
    for ms, sc in groups:
        c[winner(ms, sc)] += 1
    out = {m: 0 for m in (methods or [])}
    out.update(c)
    return out


def syngen_compare(scorer: ClipScorer, items: Sequence[dict],
                   segments: Callable[[str], list[str]] | None = None) -> tuple[list[dict], dict]:
    """items: [{"prompt": str, "images": {method: image or path}, "segments"?: [...]}, ...], one item per
    (prompt, seed). Segments: ``segments(prompt)`` when given, else the item's "segments".
    Returns (per-item {"scores": {method: score}, "winner": method}, wins per method)."""
    results, groups, all_methods = [], [], []
    for it in items:
        segs = segments(it["prompt"]) if segments else it.get("segments")
        if not segs:
            raise ValueError(f"no segments for '{it['prompt']}': pass segments= or give records a 'segments' list")
        ms = list(it["images"])
        for m in ms:
            if m not in all_methods:
                all_methods.append(m)
        iemb = scorer.encode_images([it["images"][m] for m in ms])
        temb = scorer.encode_texts(list(segs))
        logits = scorer.logit_scale * iemb @ temb.T
        sc = segment_scores(logits)
        groups.append((ms, sc))
        results.append({"prompt": it["prompt"], "scores": dict(zip(ms, map(float, sc))), "winner": winner(ms, sc),
                        **({"key": it["key"]} if "key" in it else {})})
    return results, count_wins(groups, all_methods)


# --------------------------------------------------------------------------------------------------------
# VISOR
# --------------------------------------------------------------------------------------------------------

def normalize_relation(rel: str) -> str:
    r = (rel or "").lower().strip()
    for key in ("left", "right", "above", "below"):
        if key in r:
            return key
    if "top" in r or "over" in r:
        return "above"
    if "bottom" in r or "under" in r or "beneath" in r:
        return "below"
    raise ValueError(f"unknown spatial relation '{rel}' (VISOR knows left of, right of, above, below)")


def centroid(box) -> tuple[float, float]:
    x0, y0, x1, y1 = map(float, box)
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def relation_holds(rel: str, box_a, box_b) -> bool:
    (xa, ya), (xb, yb) = centroid(box_a), centroid(box_b)
    r = normalize_relation(rel)
    return {"left": xa < xb, "right": xa > xb, "above": ya < yb, "below": ya > yb}[r]


def _label(lbl: str) -> str:
    s = str(lbl).lower().strip()
    for pre in ("a photo of an ", "a photo of a ", "a photo of "):
        if s.startswith(pre):
            s = s[len(pre):]
    return s.rstrip(".").strip()


def visor_check(detections, obj_a: str, obj_b: str, relation: str, threshold: float = 0.1) -> dict:
    """One image: are both objects detected (score >= threshold), and does any (A, B) pair obey the relation?"""
    a, b = _label(obj_a), _label(obj_b)
    boxes_a = [box for lbl, box, s in detections if _label(lbl) == a and s >= threshold]
    boxes_b = [box for lbl, box, s in detections if _label(lbl) == b and s >= threshold]
    both = bool(boxes_a and boxes_b)
    correct = both and any(relation_holds(relation, ba, bb) for ba in boxes_a for bb in boxes_b)
    return {"both": both, "correct": bool(correct), "n_a": len(boxes_a), "n_b": len(boxes_b)}


def visor_metrics(results: Iterable[dict], n_max: int = 4) -> dict:
    """results: per image {"prompt": key, "both": bool, "correct": bool}. Percentages:
    OA = images with both objects / images; VISOR_cond = correct / images with both; VISOR_uncond =
    correct / images (= VISOR_cond * OA / 100); VISOR_n = prompts with at least n correct images / prompts."""
    results = list(results)
    n = len(results)
    both = sum(1 for r in results if r["both"])
    correct = sum(1 for r in results if r["correct"])
    per_prompt = collections.Counter()
    prompts = []
    for r in results:
        if r["prompt"] not in per_prompt:
            prompts.append(r["prompt"])
        per_prompt[r["prompt"]] += int(bool(r["correct"]))
    out = {"images": n, "prompts": len(prompts),
           "OA": 100.0 * both / n if n else float("nan"),
           "VISOR_cond": 100.0 * correct / both if both else float("nan"),
           "VISOR_uncond": 100.0 * correct / n if n else float("nan")}
    for k in range(1, n_max + 1):
        out[f"VISOR_{k}"] = 100.0 * sum(1 for p in prompts if per_prompt[p] >= k) / len(prompts) if prompts else float("nan")
    return out


def visor_evaluate(detect: Callable, items: Iterable[dict], threshold: float = 0.1) -> list[dict]:
    """items: {"prompt": key, "image": image or path, "objects": [A, B], "relation": rel, ...} -> results
    rows (the item's other fields kept) with both/correct, ready for ``visor_metrics``."""
    out = []
    for it in items:
        a, b = it["objects"][:2]
        res = visor_check(detect(_load_image(it["image"])), a, b, it["relation"], threshold)
        out.append({k: v for k, v in it.items() if k != "image"} | res)
    return out


def owlvit_detector(path: str, labels: Sequence[str], threshold: float = 0.1, device: str = "cpu",
                    query: str = "a photo of a {}") -> Callable:
    """A detector hook from a local OWL-ViT folder: image -> [(label, (x0, y0, x1, y1), score)] in pixels,
    querying every label as "a photo of a {label}" (VISOR's setting, threshold 0.1)."""
    import torch
    from transformers import AutoProcessor, OwlViTForObjectDetection
    _local_dir(path, "OWL-ViT")
    model = OwlViTForObjectDetection.from_pretrained(path, local_files_only=True).to(device).eval()
    proc = AutoProcessor.from_pretrained(path, local_files_only=True)
    labels = list(labels)
    queries = [query.format(lbl) for lbl in labels]

    def detect(image):
        image = _load_image(image)
        inp = proc(text=[queries], images=image, return_tensors="pt", padding=True, truncation=True).to(device)
        with torch.inference_mode():
            out = model(**inp)
        sizes = torch.tensor([[image.height, image.width]])
        if hasattr(proc, "post_process_grounded_object_detection"):
            res = proc.post_process_grounded_object_detection(out, threshold=threshold, target_sizes=sizes)[0]
        else:  # older transformers
            res = proc.post_process_object_detection(out, threshold=threshold, target_sizes=sizes)[0]
        lab = res["labels"].tolist()
        return [(labels[int(i)], tuple(float(v) for v in box), float(s))
                for i, box, s in zip(lab, res["boxes"].tolist(), res["scores"].tolist())]
    detect.labels = labels
    return detect


# --------------------------------------------------------------------------------------------------------
# Reports: CSV, summary, HTML contact sheet with inline SVG charts
# --------------------------------------------------------------------------------------------------------

def _cell(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.10g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return "" if v is None else v


def write_csv(rows: Sequence[dict], path: str) -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in cols])
    return path


def summarize(rows: Sequence[dict], keys: Sequence[str] = ("clip_full", "clip_min_part")) -> dict[str, dict]:
    """Mean (and std) of numeric per-image columns per method: {method: {"n":, "clip_full": , ...}}."""
    by = collections.defaultdict(list)
    for r in rows:
        by[r["method"]].append(r)
    out = {}
    for m, rs in by.items():
        d = {"n": len(rs)}
        for k in keys:
            vals = [float(r[k]) for r in rs if isinstance(r.get(k), (int, float)) and not math.isnan(float(r[k]))]
            if vals:
                d[k] = float(np.mean(vals))
                d[k + "_std"] = float(np.std(vals))
        out[m] = d
    return out


def svg_bar_chart(values: dict[str, float], title: str, width: int = 360, bar_h: int = 22, fmt: str = "{:.3f}") -> str:
    """A horizontal bar chart as an inline SVG string (no plotting library needed)."""
    vals = {k: float(v) for k, v in values.items() if v is not None and not math.isnan(float(v))}
    lab_w, pad = 110, 6
    height = 28 + bar_h * max(1, len(vals)) + pad
    lo = min(0.0, min(vals.values(), default=0.0))
    hi = max(0.0, max(vals.values(), default=1.0))
    span = (hi - lo) or 1.0
    plot_w = width - lab_w - 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}" style="font:12px sans-serif">',
             f'<text x="4" y="16" font-weight="bold">{html.escape(title)}</text>']
    palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"]
    for i, (k, v) in enumerate(vals.items()):
        y = 26 + i * bar_h
        x0 = lab_w + (0 - lo) / span * plot_w
        x1 = lab_w + (v - lo) / span * plot_w
        parts.append(f'<text x="{lab_w - 4}" y="{y + bar_h * 0.65:.1f}" text-anchor="end">{html.escape(str(k))}</text>')
        parts.append(f'<rect x="{min(x0, x1):.1f}" y="{y + 2}" width="{max(abs(x1 - x0), 1):.1f}" height="{bar_h - 6}" '
                     f'fill="{palette[i % len(palette)]}"/>')
        parts.append(f'<text x="{max(x0, x1) + 4:.1f}" y="{y + bar_h * 0.65:.1f}">{html.escape(fmt.format(v))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_contact_sheet(path: str, rows: Sequence[dict], title: str = "Faithful evaluation",
                        charts: Sequence[str] = (), score_keys: Sequence[str] = ("clip_full", "clip_min_part"),
                        thumb: int = 160) -> str:
    """HTML page: the charts, then one table row per prompt with one cell per (seed, method) image (linked
    with a path relative to the page) and its scores. rows need "file" (relative to the results folder or
    absolute), "prompt", "method", "seed"; a "slug" groups rows by prompt."""
    base = os.path.dirname(os.path.abspath(path))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    seeds = sorted(dict.fromkeys(r["seed"] for r in rows), key=lambda s: (str(type(s)), s))
    by_prompt: dict[str, dict] = {}
    for r in rows:
        g = by_prompt.setdefault(r.get("slug", r["prompt"]), {"prompt": r["prompt"], "cells": {}})
        g["cells"][(r["seed"], r["method"])] = r
    h = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
         "<style>body{font:13px sans-serif;margin:16px}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
         "padding:3px;vertical-align:top;text-align:center}td.p{text-align:left;max-width:220px}"
         ".s{font-size:11px;color:#333}.w{outline:3px solid #59a14f}.charts svg{margin:0 16px 12px 0}</style>",
         "</head><body>", f"<h1>{html.escape(title)}</h1>", "<div class='charts'>", *charts, "</div>",
         "<table><tr><th>prompt</th>"]
    for s in seeds:
        for m in methods:
            h.append(f"<th>{html.escape(str(m))}<br><span class='s'>seed {html.escape(str(s))}</span></th>")
    h.append("</tr>")
    for slug, g in by_prompt.items():
        h.append(f"<tr><td class='p'>{html.escape(g['prompt'])}</td>")
        for s in seeds:
            for m in methods:
                r = g["cells"].get((s, m))
                if r is None:
                    h.append("<td></td>")
                    continue
                f = r["file"]
                absf = f if os.path.isabs(f) else os.path.join(r.get("root", base), f)
                rel = os.path.relpath(absf, base).replace(os.sep, "/")
                sc = " ".join(f"{k.replace('clip_', '')}={r[k]:.3f}" for k in score_keys
                              if isinstance(r.get(k), (int, float)) and not math.isnan(r[k]))
                extra = []
                if "visor_correct" in r:
                    extra.append("visor " + ("ok" if r["visor_correct"] else ("both" if r.get("visor_both") else "miss")))
                cls = " class='w'" if r.get("syngen_win") else ""
                h.append(f"<td><a href='{html.escape(rel)}'><img{cls} src='{html.escape(rel)}' width='{thumb}' "
                         f"loading='lazy' alt='{html.escape(m)} {html.escape(str(s))}'></a>"
                         f"<div class='s'>{html.escape(' '.join([sc] + extra).strip())}</div></td>")
        h.append("</tr>")
    h.append("</table></body></html>")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(h))
    return path


# --------------------------------------------------------------------------------------------------------
# Scoring a runner folder
# --------------------------------------------------------------------------------------------------------

def runner_rows(results_dir: str) -> list[dict]:
    """One row per finished image of a ``faithful_eval.runner`` folder, joined with its prompt record."""
    from .runner import MANIFEST, PROMPTS_INDEX, Manifest, finished
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
