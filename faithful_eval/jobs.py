"""Jobs of an evaluation: the methods file, seeds, folder slugs, and one job per (prompt, seed, method).

A job's key is ``<slug>/<method>_<seed>``, which is also where its picture goes (``out/<key>.png``). Standard
library only.
"""
from __future__ import annotations

import collections
import json
import os
import re
from dataclasses import dataclass, field

from . import prompts as _prompts
from .graph import WorkflowError, build_graph, graph_sha, load_workflow

_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]+$")


def load_methods(path: str | None) -> tuple[dict, dict, dict]:
    """(methods, bindings, per-method workflows) from a methods file; no file = one method 'default'."""
    if not path:
        return {"default": {}}, {}, {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if "methods" in data:
        methods, bindings = data["methods"], data.get("bindings", {})
    else:
        methods, bindings = {k: v for k, v in data.items() if k != "bindings"}, data.get("bindings", {})
    if not isinstance(methods, dict) or not methods:
        raise WorkflowError(f"{path}: no methods")
    workflows = {}
    for name, spec in methods.items():
        if not _NAME_OK.match(name):
            raise WorkflowError(f"method name '{name}' must use only letters, digits, '-', '_' and '.'")
        if not isinstance(spec, dict):
            raise WorkflowError(f"method '{name}' must be a mapping of input paths to values")
        for k in spec:
            if "." not in k and k not in ("bypass", "workflow"):
                raise WorkflowError(f"method '{name}': '{k}' is neither a path (<node>.<input>) nor 'bypass'/'workflow'")
        if "workflow" in spec:
            wp = spec["workflow"]
            workflows[name] = load_workflow(wp if os.path.isabs(wp) else os.path.join(os.path.dirname(os.path.abspath(path)), wp))
    return methods, bindings, workflows


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-63' or '0-3,10' -> ints (ranges inclusive), order kept, duplicates dropped."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        vals = range(int(m.group(1)), int(m.group(2)) + 1) if m else [int(part)]
        for v in vals:
            if v not in out:
                out.append(v)
    if not out:
        raise ValueError("no seeds given")
    return out


def slugify(text: str, max_len: int = 100) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s[:max_len].rstrip("_") or "prompt"


def assign_slugs(records: list[dict]) -> list[str]:
    """One folder name per record: the prompt slug, with the record id appended when two records collide."""
    base = [slugify(r["prompt"]) for r in records]
    counts = collections.Counter(base)
    out, used = [], set()
    for r, s in zip(records, base):
        if counts[s] > 1 or s in used:
            s = f"{s}__{slugify(str(r['id']), 40)}"
        k = 2
        s0 = s
        while s in used:
            s = f"{s0}_{k}"
            k += 1
        used.add(s)
        out.append(s)
    return out


def load_prompt_arg(arg: str) -> list[dict]:
    """A prompt file, or a set name with optional size and seed: 'dvmp', 'dvmp:50:0', 'visor:500', 'ae'."""
    if os.path.exists(arg):
        return _prompts.load_prompts(arg)
    name, *rest = arg.split(":")
    try:
        n = int(rest[0]) if rest and rest[0] else None
        seed = int(rest[1]) if len(rest) > 1 else 0
        return _prompts.generate(name, n, seed)
    except ValueError as e:
        raise FileNotFoundError(f"--prompts {arg}: no such file, and not a set name ({e})") from None


@dataclass
class Job:
    key: str
    record: dict
    slug: str
    method: str
    seed: int
    graph: dict
    sha: str
    attempts: int = 0
    tried: set = field(default_factory=set)

    def files_prefix(self) -> str:
        return f"{self.slug}/{self.method}_{self.seed}"


def make_jobs(workflow: dict, records: list[dict], seeds: list[int], methods: dict, bindings: dict,
              workflows: dict | None = None) -> list[Job]:
    workflows = workflows or {}
    slugs = assign_slugs(records)
    jobs = []
    checked = set()
    for rec, slug in zip(records, slugs):
        for seed in seeds:
            for mname, spec in methods.items():
                g, placed = build_graph(workflows.get(mname, workflow), rec, seed, mname, spec, bindings, slug)
                if mname not in checked:
                    missing = [f for f in ("prompt", "seed") if f not in placed]
                    if missing:
                        raise WorkflowError(
                            f"method '{mname}': the workflow has no place for the {' and the '.join(missing)}. Title "
                            "a node PROMPT / SEED, put '{prompt}' / '{seed}' in an input, or list paths under "
                            "\"bindings\" in the methods file (see python -m faithful_eval.runner --help).")
                    checked.add(mname)
                key = f"{slug}/{mname}_{seed}"
                jobs.append(Job(key, rec, slug, mname, int(seed), g, graph_sha(g)))
    return jobs
