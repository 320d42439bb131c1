"""Prompt sets used to evaluate prompt-faithfulness methods, generated from their published grammars.

Three sets (see docs in METHODS sections 8.1-8.3; written from the grammars, not from the reference code):

* ``dvmp``  -- SynGen's "diverse visual modifier prompts": 1-3 noun phrases joined by " and ", each an
  animal, fruit or object with 1-3 modifiers (category modifiers and/or one colour). Seeded; N prompts.
* ``attend_and_excite`` -- the 276 Attend-and-Excite prompts: animal-animal (66), animal-object (144),
  object-object (66). The seed only drives the colour choices.
* ``visor`` -- VISOR/SR2D spatial prompts "{a/an A} {relation} {a/an B}" over the 80 COCO classes, every
  unordered pair, four relations, both orders: 25,280 prompts (optionally also the "A and B" prompts and
  the single objects: 31,680 records). A seeded sample of N prompts is available.

Every record is a dict with at least ``id``, ``prompt``, ``kind``, ``objects`` (the subject nouns, in prompt
order) and ``segments`` (the noun phrases, e.g. ["a red car", "a furry dog"], usable as SynGen evaluation
segments); spatial records add ``relation``; records with attributes add ``modifiers`` (one list per object).
DVMP records also carry ``num_modifiers``, ``num_phrases`` and ``nouns``.

CLI::

    python -m faithful_eval.prompts dvmp --n 200 --seed 0 --out dvmp.csv
    python -m faithful_eval.prompts attend_and_excite --seed 0 --out ae.json
    python -m faithful_eval.prompts visor --n 500 --seed 0 --out visor500.jsonl
    python -m faithful_eval.prompts visor --all-kinds --out visor_all.json

The output format follows the extension: .csv, .json (a list) or .jsonl (one record a line).
"""
from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import os
import random
import sys
from typing import Iterable

# --------------------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------------------

DVMP_ANIMALS = ["cat", "dog", "bird", "bear", "lion", "horse", "elephant", "monkey", "frog", "turtle", "rabbit",
                "mouse", "panda", "zebra", "gorilla", "penguin"]
DVMP_OBJECTS = ["backpack", "crown", "suitcase", "chair", "balloon", "bow", "car", "bowl", "bench", "clock",
                "camera", "umbrella", "guitar", "shoe", "hat", "surfboard", "skateboard", "bicycle"]
DVMP_FRUIT = ["apple", "tomato", "banana", "strawberry"]
DVMP_COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "gray", "black", "white",
               "beige", "teal"]
DVMP_MODIFIERS = {
    "animal": ["furry", "baby", "spotted", "sleepy"],
    "object": ["modern", "spotted", "wooden", "metal", "curved", "spiky", "checkered"],
    "fruit": ["sliced", "skewered"],
}
DVMP_NOUNS = {"animal": DVMP_ANIMALS, "object": DVMP_OBJECTS, "fruit": DVMP_FRUIT}
# how many category modifiers a phrase may get (drawn uniformly)
DVMP_MODIFIER_COUNTS = {"animal": (0, 1, 2), "object": (0, 1, 2), "fruit": (0, 1)}

AE_ANIMALS = ["cat", "dog", "bird", "bear", "lion", "horse", "elephant", "monkey", "frog", "turtle", "rabbit", "mouse"]
AE_OBJECTS = ["backpack", "crown", "suitcase", "chair", "balloon", "bow", "car", "bowl", "bench", "clock", "glasses",
              "apple"]
AE_COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "gray", "black", "white"]
AE_WEARABLES = ("glasses", "bow", "crown")  # "a {animal} with a {object}", no colour

COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
]
VISOR_RELATIONS = ["to the left of", "to the right of", "above", "below"]

SETS = ("attend_and_excite", "dvmp", "visor")
DEFAULT_SIZES = {"attend_and_excite": 276, "dvmp": 200, "visor": 25280}


def article(word: str) -> str:
    """'an' before a vowel letter, else 'a' (spelling rule only, as the reference sets do)."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def with_article(noun: str) -> str:
    return f"{article(noun)} {noun}"


# --------------------------------------------------------------------------------------------------------
# DVMP
# --------------------------------------------------------------------------------------------------------

def _dvmp_phrase(rng: random.Random) -> tuple[str, str, list[str]]:
    """One DVMP noun phrase: (text, noun, modifiers in order). Resampled until it has a modifier."""
    while True:
        category = rng.choice(("animal", "fruit", "object"))
        noun = rng.choice(DVMP_NOUNS[category])
        k = rng.choice(DVMP_MODIFIER_COUNTS[category])
        mods = rng.sample(DVMP_MODIFIERS[category], k)
        if rng.random() < 1.0 / 3.0:
            mods = [rng.choice(DVMP_COLORS)] + mods
        if mods:
            return f"{article(mods[0])} {' '.join(mods)} {noun}", noun, mods


def dvmp_prompts(n: int = 200, seed: int = 0) -> list[dict]:
    """``n`` distinct DVMP prompts, reproducible from ``seed``.

    A prompt has 1-3 phrases (uniform); a phrase that repeats one already in the prompt is redrawn, and so is
    a prompt already generated. The article follows the first modifier ("an orange ...", "a sleepy ...").
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(f"dvmp:{seed}")
    records, seen = [], set()
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise RuntimeError(f"could not draw {n} distinct DVMP prompts")
        k = rng.randint(1, 3)
        phrases: list[tuple[str, str, list[str]]] = []
        while len(phrases) < k:
            ph = _dvmp_phrase(rng)
            if all(ph[0] != p[0] for p in phrases):
                phrases.append(ph)
        prompt = " and ".join(p[0] for p in phrases)
        if prompt in seen:
            continue
        seen.add(prompt)
        nouns = [p[1] for p in phrases]
        mods = [list(p[2]) for p in phrases]
        records.append({
            "id": f"dvmp_{len(records):04d}", "prompt": prompt, "kind": "dvmp", "objects": nouns,
            "modifiers": mods, "segments": [p[0] for p in phrases],
            "num_modifiers": sum(len(m) for m in mods), "num_phrases": len(phrases), "nouns": list(nouns),
        })
    return records


# --------------------------------------------------------------------------------------------------------
# Attend-and-Excite
# --------------------------------------------------------------------------------------------------------

def attend_and_excite_prompts(seed: int = 0) -> list[dict]:
    """The 276 Attend-and-Excite prompts; ``seed`` chooses the colours. Articles are literally "a" (as
    published: "a elephant", "a orange chair"). Kinds: animal_animal, animal_object, object_object."""
    rng = random.Random(f"attend_and_excite:{seed}")
    out: list[dict] = []

    def add(kind, prompt, objects, modifiers, segments):
        out.append({"id": f"ae_{len(out):03d}", "prompt": prompt, "kind": kind, "objects": objects,
                    "modifiers": modifiers, "segments": segments})

    for a1, a2 in itertools.combinations(AE_ANIMALS, 2):
        add("animal_animal", f"a {a1} and a {a2}", [a1, a2], [[], []], [f"a {a1}", f"a {a2}"])
    for a in AE_ANIMALS:
        for o in AE_OBJECTS:
            if o in AE_WEARABLES:
                add("animal_object", f"a {a} with a {o}", [a, o], [[], []], [f"a {a}", f"a {o}"])
            else:
                c = rng.choice(AE_COLORS)
                add("animal_object", f"a {a} and a {c} {o}", [a, o], [[], [c]], [f"a {a}", f"a {c} {o}"])
    for o1, o2 in itertools.combinations(AE_OBJECTS, 2):
        c1, c2 = rng.choice(AE_COLORS), rng.choice(AE_COLORS)
        add("object_object", f"a {c1} {o1} and a {c2} {o2}", [o1, o2], [[c1], [c2]], [f"a {c1} {o1}", f"a {c2} {o2}"])
    return out


# --------------------------------------------------------------------------------------------------------
# VISOR / SR2D
# --------------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _visor_full(include_all: bool) -> tuple[dict, ...]:
    out: list[dict] = []

    def add(kind, prompt, objects, relation=None):
        rec = {"id": f"visor_{len(out):05d}", "prompt": prompt, "kind": kind, "objects": objects,
               "segments": [with_article(o) for o in objects]}
        if relation is not None:
            rec["relation"] = relation
        out.append(rec)

    pairs = list(itertools.combinations(COCO_CLASSES, 2))
    for a, b in pairs:
        for rel in VISOR_RELATIONS:
            for x, y in ((a, b), (b, a)):
                add("spatial", f"{with_article(x)} {rel} {with_article(y)}", [x, y], rel)
    if include_all:
        for a, b in pairs:
            for x, y in ((a, b), (b, a)):
                add("and", f"{with_article(x)} and {with_article(y)}", [x, y])
        for a in COCO_CLASSES:
            add("single", with_article(a), [a])
    return tuple(out)


def visor_prompts(n: int | None = None, seed: int = 0, include_all: bool = False) -> list[dict]:
    """VISOR spatial prompts. All 25,280 when ``n`` is None (31,680 records with ``include_all``: also the
    "A and B" prompts and single objects); else a seeded sample of ``n`` of them, in set order. Ids are the
    position in the full list, so a sample's ids match the full set's."""
    full = _visor_full(bool(include_all))
    if n is None or n >= len(full):
        return [dict(r) for r in full]
    if n < 0:
        raise ValueError("n must be >= 0")
    idx = sorted(random.Random(f"visor:{seed}").sample(range(len(full)), n))
    return [dict(full[i]) for i in idx]


# --------------------------------------------------------------------------------------------------------
# Access by name (the node and the runner use these)
# --------------------------------------------------------------------------------------------------------

def generate(name: str, n: int | None = None, seed: int = 0, include_all: bool = False) -> list[dict]:
    """A set by name: "dvmp" (n prompts, default 200), "attend_and_excite" (276; n truncates) or "visor"
    (all, or a seeded sample of n)."""
    name = {"ae": "attend_and_excite", "a&e": "attend_and_excite", "sr2d": "visor"}.get(name.lower(), name.lower())
    if name == "dvmp":
        return dvmp_prompts(DEFAULT_SIZES["dvmp"] if not n else n, seed)
    if name == "attend_and_excite":
        recs = attend_and_excite_prompts(seed)
        return recs[:n] if n else recs
    if name == "visor":
        return visor_prompts(n or None, seed, include_all)
    raise ValueError(f"unknown prompt set '{name}'; choose one of {', '.join(SETS)}")


@functools.lru_cache(maxsize=16)
def _cached(name: str, n: int, seed: int) -> tuple[dict, ...]:
    return tuple(generate(name, n or None, seed))


def pick(name: str, index: int, seed: int = 0, n: int = 0) -> tuple[dict, int]:
    """(record, set size) for ``index`` in the named set; the index wraps around the set size."""
    recs = _cached(name, int(n), int(seed))
    if not recs:
        raise ValueError(f"prompt set '{name}' is empty")
    return dict(recs[int(index) % len(recs)]), len(recs)


# --------------------------------------------------------------------------------------------------------
# Reading and writing
# --------------------------------------------------------------------------------------------------------

BASE_COLUMNS = ["id", "prompt", "kind", "objects", "relation", "modifiers"]


def _columns(records: list[dict]) -> list[str]:
    cols = [c for c in BASE_COLUMNS if any(c in r for r in records)]
    for r in records:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def write_csv(records: Iterable[dict], path: str) -> str:
    """CSV with one column per field; list/dict fields are JSON-encoded (``load_prompts`` decodes them)."""
    records = list(records)
    cols = _columns(records)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in records:
            row = []
            for c in cols:
                v = r.get(c, "")
                row.append(json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v))
            w.writerow(row)
    return path


def write_json(records: Iterable[dict], path: str, lines: bool | None = None) -> str:
    """A JSON list (``lines=False``) or JSON Lines (``lines=True``; default: by the .jsonl extension)."""
    records = list(records)
    if lines is None:
        lines = path.endswith(".jsonl")
    with open(path, "w", encoding="utf-8") as f:
        if lines:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            json.dump(records, f, indent=1, ensure_ascii=False)
            f.write("\n")
    return path


def write(records: Iterable[dict], path: str) -> str:
    return write_csv(records, path) if path.lower().endswith(".csv") else write_json(records, path)


def _decode_cell(v: str):
    s = v.strip()
    if s[:1] in "[{":
        try:
            return json.loads(s)
        except ValueError:
            return v
    return v


def normalize_record(r: dict | str, i: int = 0) -> dict:
    """Fill the required fields of a record read from a file (a bare string becomes a prompt)."""
    if isinstance(r, str):
        r = {"prompt": r}
    r = dict(r)
    if "prompt" not in r:
        for alt in ("text", "caption"):
            if alt in r:
                r["prompt"] = r[alt]
                break
        else:
            raise ValueError(f"record {i} has no 'prompt' field: {r}")
    r.setdefault("id", r.get("unique_id") or f"p{i:05d}")
    r["id"] = str(r["id"])
    r.setdefault("kind", r.get("caption_type") or "custom")
    objs = r.get("objects", r.get("nouns", r.get("subjects")))
    if isinstance(objs, str):
        objs = [o.strip() for o in objs.replace(";", ",").split(",") if o.strip()]
    r["objects"] = list(objs or [])
    for k in ("num_modifiers", "num_phrases"):
        if isinstance(r.get(k), str) and r[k].strip().lstrip("-").isdigit():
            r[k] = int(r[k])
    if r.get("relation") == "":
        del r["relation"]
    return r


def load_prompts(path: str) -> list[dict]:
    """Records from .json (list, or {"prompts": [...]}), .jsonl, .csv (as written by ``write_csv``; a
    ``caption`` or ``text`` column also works) or .txt (one prompt a line)."""
    low = path.lower()
    with open(path, encoding="utf-8", newline="" if low.endswith(".csv") else None) as f:
        if low.endswith(".csv"):
            raw = [{k: _decode_cell(v) for k, v in row.items() if k is not None and v not in (None, "")}
                   for row in csv.DictReader(f)]
        elif low.endswith(".jsonl"):
            raw = [json.loads(line) for line in f if line.strip()]
        elif low.endswith(".json"):
            raw = json.load(f)
            if isinstance(raw, dict):
                raw = raw.get("prompts") or raw.get("records") or list(raw.values())
        else:
            raw = [line.strip() for line in f if line.strip()]
    return [normalize_record(r, i) for i, r in enumerate(raw)]


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m faithful_eval.prompts", description=__doc__.split("\n\n")[0])
    p.add_argument("set", choices=list(SETS) + ["ae"], help="which prompt set")
    p.add_argument("--n", type=int, default=None,
                   help="number of prompts (dvmp: default 200; visor: a seeded sample, default all 25,280; "
                        "attend_and_excite: the first n of 276)")
    p.add_argument("--seed", type=int, default=0, help="random seed (dvmp draws, A&E colours, VISOR sample)")
    p.add_argument("--all-kinds", action="store_true",
                   help="visor only: also the 'A and B' prompts and the single objects (31,680 records)")
    p.add_argument("--out", default="-", help="output file (.csv, .json or .jsonl); '-' prints JSON Lines")
    a = p.parse_args(argv)
    recs = generate(a.set, a.n, a.seed, include_all=a.all_kinds)
    if a.out == "-":
        for r in recs:
            sys.stdout.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        d = os.path.dirname(os.path.abspath(a.out))
        os.makedirs(d, exist_ok=True)
        write(recs, a.out)
        kinds: dict[str, int] = {}
        for r in recs:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        print(f"wrote {len(recs)} prompts to {a.out} ({', '.join(f'{k}: {v}' for k, v in kinds.items())})",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
