"""VISOR spatial check (Gokhale et al., "Benchmarking Spatial Relationships in Text-to-Image Generation", 2022).

From a detector hook ``detect(image) -> [(label, (x0, y0, x1, y1), score), ...]``: an image is correct if ANY
detected (A, B) box pair with scores >= threshold has centroids in the relation (left: x_A < x_B; right:
x_A > x_B; above: y_A < y_B; below: y_A > y_B, image y pointing down). OA, VISOR_cond, VISOR_uncond and
VISOR_n as in the paper. Relation phrases are read with the pack's one vocabulary
(``guidance_core.relations``); VISOR scores the four directional ones.
"""
from __future__ import annotations

import collections
from typing import Callable, Iterable, Sequence

from .local_models import load_image, local_model_dir

try:  # inside the pack (faithful.faithful_eval) ...
    from ..guidance_core import relations as _relations
except ImportError:  # ... or top-level, as ``python -m faithful_eval.scores`` from the pack's folder
    from guidance_core import relations as _relations

VISOR_RELATIONS = {"left_of": "left", "right_of": "right", "above": "above", "below": "below"}


def normalize_relation(rel: str) -> str:
    """A relation phrase ("to the left of", "on top of", "left_of" ...) -> left / right / above / below.
    The VISOR names themselves are accepted too; "next to" and unknown phrases raise ValueError."""
    r = " ".join(str(rel or "").lower().split())
    if r in VISOR_RELATIONS.values():
        return r
    canon = _relations.canonical_relation(r)
    if canon not in VISOR_RELATIONS:
        raise ValueError(f"VISOR scores left of, right of, above and below; '{rel}' is '{canon}'")
    return VISOR_RELATIONS[canon]


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
        res = visor_check(detect(load_image(it["image"])), a, b, it["relation"], threshold)
        out.append({k: v for k, v in it.items() if k != "image"} | res)
    return out


def owlvit_detector(path: str, labels: Sequence[str], threshold: float = 0.1, device: str = "cpu",
                    query: str = "a photo of a {}") -> Callable:
    """A detector hook from a local OWL-ViT folder: image -> [(label, (x0, y0, x1, y1), score)] in pixels,
    querying every label as "a photo of a {label}" (VISOR's setting, threshold 0.1)."""
    import torch
    from transformers import AutoProcessor, OwlViTForObjectDetection
    local_model_dir(path, "OWL-ViT")
    model = OwlViTForObjectDetection.from_pretrained(path, local_files_only=True).to(device).eval()
    proc = AutoProcessor.from_pretrained(path, local_files_only=True)
    labels = list(labels)
    queries = [query.format(lbl) for lbl in labels]

    def detect(image):
        image = load_image(image)
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
