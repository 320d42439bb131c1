"""Reports of a scored run: per-image and per-method CSV, and an HTML contact sheet with inline SVG bar charts
(no plotting library needed)."""
from __future__ import annotations

import collections
import csv
import html
import json
import math
import os
from typing import Sequence

import numpy as np


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
