"""Graph editing for the batch runner: put a prompt record, a seed and a method's overrides into an API graph.

An API-format graph maps node id -> ``{"class_type", "inputs", "_meta": {"title"}}``; a link is ``[node id,
output index]``. ``build_graph`` applies, in this order (later wins): placeholders in string inputs
(``{prompt}``, ``{seed}`` ...), node titles (``PROMPT``, ``SEED``, ``SUBJECTS``, ``RELATION``) and explicit
``bindings`` paths (``<node id or title>.<input>``); see ``python -m faithful_eval.runner --help``. Standard
library only.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

TITLE_FIELDS = {
    "PROMPT": ("prompt", ("text", "prompt", "string", "value", "text_g"), str),
    "SEED": ("seed", ("seed", "noise_seed", "value"), int),
    "SUBJECTS": ("subjects", ("subjects", "text", "string", "value"), str),
    "RELATION": ("relation", ("relation", "text", "string", "value"), str),
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class WorkflowError(ValueError):
    pass


def load_workflow(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        wf = json.load(f)
    return check_workflow(wf, path)


def check_workflow(wf: Any, name: str = "workflow") -> dict:
    if isinstance(wf, dict) and isinstance(wf.get("prompt"), dict) and "nodes" not in wf:
        wf = wf["prompt"]  # a saved /prompt request body
    if isinstance(wf, dict) and "nodes" in wf and "links" in wf:
        raise WorkflowError(f"{name} is a UI workflow; export it with Workflow > Export (API) and pass that file")
    if not isinstance(wf, dict) or not wf or not all(isinstance(v, dict) and "class_type" in v for v in wf.values()):
        raise WorkflowError(f"{name} is not an API-format graph (a mapping of node id -> {{class_type, inputs}})")
    return wf


def is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)


def _title(node: dict) -> str:
    return str(node.get("_meta", {}).get("title", ""))


def resolve_nodes(graph: dict, ref: str) -> list[str]:
    """Node ids for a node reference: an id, else every node whose title equals ``ref`` (case-insensitive)."""
    if ref in graph:
        return [ref]
    hits = [nid for nid, n in graph.items() if _title(n).lower() == ref.lower()]
    if not hits:
        raise WorkflowError(f"no node with id or title '{ref}' in the workflow (ids: {', '.join(sorted(graph))})")
    return hits


def split_path(path: str) -> tuple[str, str]:
    """'6.inputs.text' / '6.text' / 'My Title.text' -> (node ref, input name)."""
    if "." not in path:
        raise WorkflowError(f"'{path}' is not a path: write <node id or title>.<input>, e.g. '3.seed'")
    ref, _, name = path.rpartition(".")
    if ref.endswith(".inputs"):
        ref = ref[: -len(".inputs")]
    return ref, name


def set_input(graph: dict, path: str, value) -> list[str]:
    ref, name = split_path(path)
    ids = resolve_nodes(graph, ref)
    for nid in ids:
        graph[nid].setdefault("inputs", {})[name] = value
    return ids


def bypass(graph: dict, spec) -> None:
    """Remove nodes; consumers of node output k are rewired to the node's k-th linked input (or a named one)."""
    items = spec.items() if isinstance(spec, dict) else [(s, None) for s in (spec or [])]
    for ref, input_name in items:
        for nid in resolve_nodes(graph, str(ref)):
            node = graph.pop(nid)
            links = [(k, v) for k, v in node.get("inputs", {}).items() if is_link(v)]
            for other in graph.values():
                for k, v in list(other.get("inputs", {}).items()):
                    if is_link(v) and v[0] == nid:
                        if input_name is not None:
                            src = node.get("inputs", {}).get(input_name)
                            if not is_link(src):
                                raise WorkflowError(f"bypass {ref}: input '{input_name}' is not a link")
                        elif v[1] < len(links):
                            src = links[v[1]][1]
                        else:
                            raise WorkflowError(f"bypass {ref}: no linked input to stand in for output {v[1]}")
                        other["inputs"][k] = list(src)


def record_fields(record: dict, seed: int, method: str, slug: str) -> dict:
    objs = list(record.get("objects") or [])
    f = {k: v for k, v in record.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    f.update({"prompt": record["prompt"], "seed": int(seed), "method": method, "slug": slug,
              "subjects": ", ".join(objs), "relation": record.get("relation", ""), "id": record.get("id", ""),
              "kind": record.get("kind", "")})
    for i, o in enumerate(objs, 1):
        f[f"object{i}"] = o
    return f


def _fill(value: str, fields: dict, placed: set):
    m = _PLACEHOLDER.fullmatch(value)
    if m and m.group(1) in fields:
        placed.add(m.group(1))
        return fields[m.group(1)]

    def sub(mm):
        if mm.group(1) in fields:
            placed.add(mm.group(1))
            return str(fields[mm.group(1)])
        return mm.group(0)
    return _PLACEHOLDER.sub(sub, value)


def _title_input(node: dict, names, typ, nid: str) -> str:
    inputs = node.get("inputs", {})
    for n in names:
        if n in inputs and not is_link(inputs[n]):
            return n
    cands = [k for k, v in inputs.items() if not is_link(v) and isinstance(v, typ) and not isinstance(v, bool)]
    if len(cands) == 1:
        return cands[0]
    raise WorkflowError(f"node {nid} ('{_title(node)}', {node.get('class_type')}) has no input to take "
                        f"{typ.__name__} values among {list(inputs)}; give an explicit path in \"bindings\"")


def build_graph(base: dict, record: dict, seed: int, method: str, spec: dict, bindings: dict,
                slug: str) -> tuple[dict, set]:
    """The graph of one job, and the set of record fields that were placed in it."""
    g = copy.deepcopy(base)
    spec = dict(spec or {})
    bypass(g, spec.pop("bypass", None))
    spec.pop("workflow", None)
    for path, value in spec.items():
        set_input(g, path, value)
    fields = record_fields(record, seed, method, slug)
    placed: set = set()
    for node in g.values():
        for k, v in list(node.get("inputs", {}).items()):
            if isinstance(v, str) and "{" in v:
                node["inputs"][k] = _fill(v, fields, placed)
    for nid, node in g.items():
        t = _title(node).upper()
        if t in TITLE_FIELDS:
            fname, names, typ = TITLE_FIELDS[t]
            node["inputs"][_title_input(node, names, typ, nid)] = fields[fname]
            placed.add(fname)
    for fname, paths in (bindings or {}).items():
        if fname not in fields:
            raise WorkflowError(f"bindings: '{fname}' is not a field of the prompt records "
                                f"(fields: {', '.join(sorted(fields))})")
        for path in [paths] if isinstance(paths, str) else paths:
            set_input(g, path, fields[fname])
            placed.add(fname)
    return g, placed


def graph_sha(graph: dict) -> str:
    return hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:16]
