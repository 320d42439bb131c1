"""ComfyUI workflow files: build UI-format workflows (what the page saves and the template browser loads) from a
compact description, and convert UI format to the API format POST /prompt takes.

Both directions need the node definitions (``/object_info``) to know which inputs are widgets and in what order
their values are stored in ``widgets_values``.
"""
from __future__ import annotations

import json

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _inputs(defn: dict) -> list[tuple[str, object, dict]]:
    order = defn.get("input_order") or {}
    out = []
    for section in ("required", "optional"):
        specs = defn.get("input", {}).get(section, {}) or {}
        names = order.get(section) or list(specs)
        for name in names:
            spec = specs[name]
            typ = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out.append((name, typ, opts))
    return out


def is_widget(typ, opts) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES


def widget_names(defn: dict) -> list[tuple[str, bool]]:
    """(name, has_control_after_generate) of the widget inputs, in widgets_values order."""
    return [(n, bool(o.get("control_after_generate"))) for n, t, o in _inputs(defn) if is_widget(t, o)]


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a saved UI workflow to an API graph. Muted/bypassed nodes and notes are dropped (bypassed nodes
    pass their first matching input through)."""
    links = {l[0]: l for l in workflow.get("links", [])}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    api = {}
    for n in workflow["nodes"]:
        t = n["type"]
        if t not in object_info or n.get("mode", 0) in (2, 4):
            continue
        defn = object_info[t]
        inputs = {}
        linked = {}
        for inp in n.get("inputs", []) or []:
            if inp.get("link") is not None:
                l = links[inp["link"]]
                linked[inp["name"]] = [str(l[1]), l[2]]
        values = list(n.get("widgets_values") or [])
        if isinstance(n.get("widgets_values"), dict):
            values = [n["widgets_values"].get(name) for name, _ in widget_names(defn)]
        i = 0
        for name, control in widget_names(defn):
            if i < len(values):
                inputs[name] = values[i]
            i += 1 + (1 if control else 0)
        inputs.update(linked)
        api[str(n["id"])] = {"class_type": t, "inputs": inputs, "_meta": {"title": n.get("title", t)}}
    return api


def build_ui(spec: list[dict], object_info: dict, extra: dict | None = None) -> dict:
    """A UI workflow from a compact description.

    spec: [{"id": 1, "type": "KSampler", "pos": [x, y], "widgets": {"seed": 0, ...}, "inputs": {"model": [4, 0]},
    "title": optional}]. Widgets not given take their defaults; links are made from "inputs".
    """
    nodes, links = [], []
    by_id = {s["id"]: s for s in spec}
    out_links: dict[tuple[int, int], list[int]] = {}
    link_id = 0
    pending = []
    for s in spec:
        for name, (src, slot) in s.get("inputs", {}).items():
            link_id += 1
            pending.append((link_id, src, slot, s["id"], name))
            out_links.setdefault((src, slot), []).append(link_id)
    for s in spec:
        defn = object_info[s["type"]]
        w = s.get("widgets", {})
        values = []
        for name, control in widget_names(defn):
            spec_opts = next(o for n, t, o in _inputs(defn) if n == name)
            typ = next(t for n, t, o in _inputs(defn) if n == name)
            default = spec_opts.get("default")
            if default is None and isinstance(typ, list) and typ:
                default = typ[0]
            if default is None and typ == "COMBO":
                default = (spec_opts.get("options") or [None])[0]
            values.append(w.get(name, default))
            if control:
                values.append("fixed")
        inputs = []
        widget_set = {n for n, _ in widget_names(defn)}
        for name, typ, o in _inputs(defn):
            if name in widget_set and name not in s.get("inputs", {}):
                continue
            link = next((lid for lid, src, slot, dst, nm in pending if dst == s["id"] and nm == name), None)
            if name in widget_set or link is not None or not o.get("optional") and not is_widget(typ, o):
                entry = {"name": name, "type": typ if isinstance(typ, str) else "COMBO", "link": link}
                if name in widget_set:
                    entry["widget"] = {"name": name}
                inputs.append(entry)
        outputs = []
        for slot, (typ, oname) in enumerate(zip(defn.get("output", []), defn.get("output_name", []))):
            outputs.append({"name": oname, "type": typ, "links": out_links.get((s["id"], slot), []), "slot_index": slot})
        node = {"id": s["id"], "type": s["type"], "pos": s.get("pos", [0, 0]), "size": s.get("size", [320, 160]),
                "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": s["type"]}, "widgets_values": values}
        if s.get("title"):
            node["title"] = s["title"]
        nodes.append(node)
    for lid, src, slot, dst, name in pending:
        typ = object_info[by_id[src]["type"]]["output"][slot]
        dst_defn = object_info[by_id[dst]["type"]]
        dst_slot = [e["name"] for e in next(n for n in nodes if n["id"] == dst)["inputs"]].index(name)
        links.append([lid, src, slot, dst, dst_slot, typ])
    wf = {"last_node_id": max(s["id"] for s in spec), "last_link_id": link_id, "nodes": nodes, "links": links,
          "groups": [], "config": {}, "extra": extra or {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}
    return wf


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
