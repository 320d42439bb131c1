"""Batch runner: render every (prompt, method, seed) of an evaluation through one or more ComfyUI servers.

    python -m faithful_eval.runner --workflow wf_api.json --prompts set.json --seeds 0,1,2 \\
        --methods methods.json --servers http://127.0.0.1:8188,http://127.0.0.1:8189 --out results/

Images land in ``out/<prompt_slug>/<method>_<seed>.png`` (the layout of the reference evaluations; a job
that saves several images adds ``_1``, ``_2`` ...). ``out/manifest.jsonl`` records every submission and
every finished job; run the same command again to resume: finished jobs whose files exist and whose graph
did not change are skipped, everything else is (re)done. ``out/prompts.json`` lists the prompt records with
their slugs (the scorers read it).

The workflow
------------
An API-format graph (ComfyUI: Workflow > Export (API)). The runner puts the prompt, the seed and other
fields of a prompt record into it in three ways, applied in this order (later wins):

1. **Placeholders** in any string input: ``{prompt}``, ``{seed}``, ``{subjects}`` (the objects joined by
   ", "), ``{object1}``, ``{object2}`` ..., ``{relation}``, ``{id}``, ``{kind}``, ``{slug}``, ``{method}``
   and any other scalar field of the record. A value that is exactly ``"{seed}"`` becomes the integer.
   Unknown ``{names}`` are left alone.
2. **Node titles**: a node titled ``PROMPT`` gets the prompt in its ``text`` (or ``prompt``/``string``/
   ``value``) input; ``SEED`` sets ``seed`` (or ``noise_seed``/``value``); ``SUBJECTS`` and ``RELATION``
   likewise (``subjects``/``text``, ``relation``/``text``). When none of those names exists the node's only
   input of the right type is used. Titles are matched case-insensitively.
3. **Explicit paths** in the methods file, under ``"bindings"``: ``{"prompt": ["6.inputs.text",
   "10.prompt"], "seed": "3.seed", "subjects": "10.subjects"}``. A path is ``<node>.<input>`` or
   ``<node>.inputs.<input>`` where ``<node>`` is a node id or a node title (every node with that title).

The prompt and the seed must each land somewhere, or the runner refuses to start.

Methods
-------
A JSON file ``{"bindings": {...}, "methods": {"<name>": {<path>: <value>, ...}, ...}}`` (or just the
``methods`` mapping). Each method is a set of input overrides using the same paths, e.g.
``{"baseline": {"10.scale_factor": 0}, "excite": {}}``. Two reserved keys in a method: ``"bypass"``, a
list of nodes to remove, whose consumers are rewired to the node's k-th linked input for its output k (or
``{"<node>": "<input name>"}`` to name the input: ``{"bypass": {"10": "model"}}`` turns a MODEL->MODEL
patch off), and ``"workflow"``, another API graph for this method (a path relative to the methods file).
Override values may contain placeholders. Method names become file names: letters, digits, ``-_.``.

Servers
-------
Jobs are spread over the servers with ``--per-server`` jobs in flight on each (default 1). A job whose
server stops answering is put back at the front of the queue and the server is retired for the rest of
the run; a job ComfyUI rejects or fails is logged as an error (rerun the command to retry errors). When
every server is gone the run stops with the remaining jobs pending (exit code 2).
"""
from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import json
import os
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

from . import prompts as _prompts

MANIFEST = "manifest.jsonl"
PROMPTS_INDEX = "prompts.json"

TITLE_FIELDS = {
    "PROMPT": ("prompt", ("text", "prompt", "string", "value", "text_g"), str),
    "SEED": ("seed", ("seed", "noise_seed", "value"), int),
    "SUBJECTS": ("subjects", ("subjects", "text", "string", "value"), str),
    "RELATION": ("relation", ("relation", "text", "string", "value"), str),
}
_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]+$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


# --------------------------------------------------------------------------------------------------------
# Graph editing
# --------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------
# Methods file, seeds, slugs
# --------------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------------
# Jobs and the manifest
# --------------------------------------------------------------------------------------------------------

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


class Manifest:
    """Append-only JSON Lines log; every line is flushed and fsynced before the writer goes on."""

    def __init__(self, path: str):
        self.path = path
        self.lock = threading.Lock()
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            if torn:  # a killed writer left half a line: end it so the next event stays readable
                with open(path, "ab") as f:
                    f.write(b"\n")

    def write(self, event: dict):
        line = json.dumps(event, ensure_ascii=False) + "\n"
        with self.lock:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    @staticmethod
    def read(path: str) -> list[dict]:
        out = []
        if not os.path.exists(path):
            return out
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a torn line from a killed run
        return out


_OWN_KEY = re.compile(r"[a-z0-9_]+/[A-Za-z0-9_.\-]+_\d+")  # <slug>/<method>_<seed>, as make_jobs writes it
_OWN_PART = re.compile(r"(?:_\d+)?\.[A-Za-z0-9]+\.part")   # what _save appends: [_k].<ext>.part


def own_partials(out_dir: str, events: list[dict]) -> list[str]:
    """The partial files an interrupted run of this runner left in ``out_dir``, and nothing else.

    A file counts as the runner's own only when its name is one the runner writes for a job that the
    manifest says was submitted (``<slug>/<method>_<seed>[_k].<ext>.part``), or when it is the prompt
    index's partial in a folder that has a manifest. Any other ``*.part`` (a browser's partial download in
    ``--out ~``, say) is left alone.
    """
    if not events:
        return []
    found = []
    index_part = os.path.join(out_dir, PROMPTS_INDEX + ".part")
    if os.path.isfile(index_part):
        found.append(index_part)
    names = collections.defaultdict(set)
    for e in events:
        key = e.get("key")
        if e.get("event") in ("submit", "done") and isinstance(key, str) and _OWN_KEY.fullmatch(key):
            slug, name = key.split("/")
            names[slug].add(name)
    for slug, stems in names.items():
        folder = os.path.join(out_dir, slug)
        if not os.path.isdir(folder):
            continue
        for fn in os.listdir(folder):
            path = os.path.join(folder, fn)
            if fn.endswith(".part") and os.path.isfile(path) and not os.path.islink(path) and any(
                    fn.startswith(stem) and _OWN_PART.fullmatch(fn[len(stem):]) for stem in stems):
                found.append(path)
    return found


def finished(events: list[dict], out_dir: str) -> dict[str, dict]:
    """The last 'done' event of every key whose files all still exist."""
    done = {}
    for e in events:
        if e.get("event") == "done":
            done[e["key"]] = e
    return {k: e for k, e in done.items()
            if e.get("files") and all(os.path.isfile(os.path.join(out_dir, p)) for p in e["files"])}


# --------------------------------------------------------------------------------------------------------
# Talking to ComfyUI
# --------------------------------------------------------------------------------------------------------

class ServerDown(Exception):
    pass


class JobFailed(Exception):
    pass


class JobLost(Exception):
    pass


def _get(session, url, **kw):
    try:
        r = session.get(url, timeout=kw.pop("timeout", 30), **kw)
    except requests.RequestException as e:
        raise ServerDown(f"{type(e).__name__}: {e}") from None
    if r.status_code >= 500:
        raise ServerDown(f"GET {url} answered {r.status_code}")
    return r


def server_alive(url: str, tries: int = 3, gap: float = 1.0) -> bool:
    for i in range(tries):
        try:
            if requests.get(url + "/system_stats", timeout=5).ok:
                return True
        except requests.RequestException:
            pass
        if i + 1 < tries:
            time.sleep(gap)
    return False


def history_images(entry: dict, output_nodes: list[str] | None = None) -> list[dict]:
    def order(k):
        return (0, int(k), "") if k.isdigit() else (1, 0, k)
    imgs = []
    for nid in sorted(entry.get("outputs", {}), key=order):
        if output_nodes and nid not in output_nodes:
            continue
        for im in entry["outputs"][nid].get("images", []) or []:
            imgs.append(im)
    saved = [im for im in imgs if im.get("type", "output") == "output"]
    return saved or imgs


def execution_error(entry: dict) -> str | None:
    st = entry.get("status", {})
    for kind, data in st.get("messages", []) or []:
        if kind == "execution_error":
            return f"{data.get('node_type')} (node {data.get('node_id')}): {data.get('exception_message', '').strip()}"
    if st.get("status_str") == "error":
        return "execution failed"
    return None


def run_on_server(session, url: str, job: Job, client_id: str, timeout: float, poll: float,
                  on_submit: Callable[[str], None], output_nodes=None) -> tuple[str, list[tuple[dict, bytes]]]:
    """Queue one job and wait for it; returns (prompt_id, [(image info, bytes)])."""
    try:
        r = session.post(url + "/prompt", json={"prompt": job.graph, "client_id": client_id}, timeout=60)
    except requests.RequestException as e:
        raise ServerDown(f"{type(e).__name__}: {e}") from None
    if r.status_code >= 500:
        raise ServerDown(f"POST /prompt answered {r.status_code}")
    if r.status_code != 200:
        try:
            body = r.json()
            msg = body.get("error", {}).get("message", "") + " " + json.dumps(body.get("node_errors", {}))[:1500]
        except ValueError:
            msg = r.text[:1500]
        raise JobFailed(f"rejected ({r.status_code}): {msg.strip()}")
    pid = r.json()["prompt_id"]
    on_submit(pid)
    t0 = time.time()
    last_queue_check = t0
    while True:
        time.sleep(poll)  # nothing finishes instantly; also keeps a fleet of runners from hammering a server
        h = _get(session, f"{url}/history/{pid}").json()
        entry = h.get(pid)
        if entry is not None:
            st = entry.get("status", {})
            if st.get("completed") is not None or st.get("status_str") in ("success", "error"):
                err = execution_error(entry)
                if err:
                    raise JobFailed(err)
                break
        now = time.time()
        if now - t0 > timeout:
            try:
                session.post(url + "/queue", json={"delete": [pid]}, timeout=10)
                session.post(url + "/interrupt", json={"prompt_id": pid}, timeout=10)
            except requests.RequestException:
                pass
            raise JobFailed(f"timed out after {timeout:.0f}s")
        if now - last_queue_check > 5.0:
            last_queue_check = now
            q = _get(session, url + "/queue").json()
            ids = {item[1] for item in q.get("queue_running", []) + q.get("queue_pending", [])}
            if pid not in ids and pid not in _get(session, f"{url}/history/{pid}").json():
                raise JobLost(f"prompt {pid} vanished from the server's queue")
    imgs = history_images(entry, output_nodes)
    if not imgs:
        raise JobFailed("the workflow finished without any image output (add a SaveImage node)")
    out = []
    for im in imgs:
        rr = _get(session, url + "/view", params={"filename": im["filename"], "subfolder": im.get("subfolder", ""),
                                                   "type": im.get("type", "output")}, timeout=120)
        if rr.status_code != 200:
            raise JobFailed(f"/view {im['filename']} answered {rr.status_code}")
        out.append((im, rr.content))
    return pid, out


# --------------------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------------------

class Runner:
    def __init__(self, jobs: list[Job], servers: list[str], out_dir: str, per_server: int = 1,
                 timeout: float = 1800.0, poll: float = 0.25, max_attempts: int = 3, output_nodes=None,
                 on_event: Callable[[dict], None] | None = None, progress: bool = True, stream=None):
        if not servers:
            raise ValueError("no servers")
        self.jobs = jobs
        self.servers = [s.rstrip("/") for s in servers]
        self.out_dir = out_dir
        self.per_server = max(1, int(per_server))
        self.timeout = timeout
        self.poll = poll
        self.max_attempts = max_attempts
        self.output_nodes = output_nodes
        self.on_event = on_event
        self.progress = progress
        self.stream = stream or sys.stderr
        self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.client_id = uuid.uuid4().hex
        self.manifest = Manifest(os.path.join(out_dir, MANIFEST))
        self.cv = threading.Condition()
        self.queue: collections.deque[Job] = collections.deque()
        self.inflight = 0
        self.dead: set[str] = set()
        self.stop_flag = threading.Event()
        self.n_done = self.n_err = 0
        self.errors: dict[str, str] = {}
        self.t0 = time.time()
        self.total = 0

    # events ---------------------------------------------------------------------------------------------
    def event(self, kind: str, **kw):
        ev = {"event": kind, "run": self.run_id, "time": round(time.time(), 3), **kw}
        self.manifest.write(ev)
        if self.on_event:
            self.on_event(ev)
        return ev

    def say(self, msg: str):
        if self.progress:
            print(msg, file=self.stream, flush=True)

    # main -----------------------------------------------------------------------------------------------
    def pending_jobs(self) -> tuple[list[Job], int]:
        done = finished(Manifest.read(self.manifest.path), self.out_dir)
        todo, skipped = [], 0
        for j in self.jobs:
            e = done.get(j.key)
            if e is not None and e.get("graph_sha") == j.sha:
                skipped += 1
            else:
                todo.append(j)
        return todo, skipped

    def _clean_partials(self):
        for path in own_partials(self.out_dir, Manifest.read(self.manifest.path)):
            os.remove(path)

    def _write_index(self):
        path = os.path.join(self.out_dir, PROMPTS_INDEX)
        index = {}
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    index = {r["slug"]: r for r in json.load(f)}
            except (ValueError, KeyError, TypeError):
                index = {}
        for j in self.jobs:
            index[j.slug] = dict(j.record, slug=j.slug)
        tmp = path + ".part"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(list(index.values()), f, indent=1, ensure_ascii=False)
        os.replace(tmp, path)

    def run(self) -> dict:
        os.makedirs(self.out_dir, exist_ok=True)
        self._clean_partials()
        todo, skipped = self.pending_jobs()
        self.total = len(todo)
        self._write_index()
        alive = [s for s in self.servers if server_alive(s, tries=2, gap=0.5)]
        self.event("run", servers=self.servers, jobs=len(self.jobs), skipped=skipped, pending=len(todo))
        for s in self.servers:
            if s not in alive:
                self.dead.add(s)
                self.event("server_down", server=s, reason="not answering at start")
        self.say(f"faithful_eval.runner: {len(self.jobs)} jobs, {skipped} already done, {len(todo)} to run "
                 f"on {len(alive)} server(s) x {self.per_server}")
        self.queue.extend(todo)
        if todo and not alive:
            self.say("no server answers; nothing was run")
        threads = [threading.Thread(target=self._worker, args=(s, k), daemon=True, name=f"runner-{s}-{k}")
                   for s in alive for k in range(self.per_server)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except KeyboardInterrupt:
            self.stop_flag.set()
            self.say("interrupted: waiting for the jobs in flight (Ctrl-C again to abandon them)")
            for t in threads:
                t.join()
        pending = [j.key for j in self.queue]
        summary = {"run": self.run_id, "jobs": len(self.jobs), "skipped": skipped, "done": self.n_done,
                   "errors": self.n_err, "pending": len(pending), "dead_servers": sorted(self.dead),
                   "seconds": round(time.time() - self.t0, 2)}
        self.event("end", **summary)
        self.say(f"done {self.n_done}, errors {self.n_err}, pending {len(pending)}, skipped {skipped} "
                 f"in {summary['seconds']:.1f}s" + (f"; dead servers: {', '.join(sorted(self.dead))}" if self.dead else ""))
        summary["error_messages"] = dict(self.errors)
        summary["pending_keys"] = pending
        return summary

    def _take(self, server: str) -> Job | None:
        with self.cv:
            while True:
                if self.stop_flag.is_set() or server in self.dead:
                    return None
                if self.queue:
                    self.inflight += 1
                    return self.queue.popleft()
                if self.inflight == 0:
                    self.cv.notify_all()
                    return None
                self.cv.wait(0.5)

    def _release(self, job: Job | None = None, requeue: bool = False):
        with self.cv:
            self.inflight -= 1
            if requeue and job is not None:
                self.queue.appendleft(job)
            self.cv.notify_all()

    def _worker(self, server: str, slot: int):
        session = requests.Session()
        while True:
            job = self._take(server)
            if job is None:
                return
            job.attempts += 1
            job.tried.add(server)
            t0 = time.time()
            try:
                pid, images = run_on_server(
                    session, server, job, self.client_id, self.timeout, self.poll,
                    lambda p: self.event("submit", key=job.key, server=server, prompt_id=p, attempt=job.attempts),
                    self.output_nodes)
                files = self._save(job, images)
            except (ServerDown, JobLost, requests.RequestException) as e:
                lost = isinstance(e, JobLost)
                down = not lost and not server_alive(server)
                self.event("requeue", key=job.key, server=server, reason=str(e)[:500])
                if down:
                    with self.cv:
                        self.dead.add(server)
                    self.event("server_down", server=server, reason=str(e)[:500])
                    self.say(f"server {server} is down ({str(e)[:120]}); its job {job.key} goes back to the queue")
                    job.attempts -= 1  # not the job's fault
                if job.attempts >= self.max_attempts:
                    self._fail(job, server, f"gave up after {job.attempts} attempts: {e}")
                    self._release()
                else:
                    self._release(job, requeue=True)
                if down:
                    return
                continue
            except JobFailed as e:
                self._fail(job, server, str(e))
                self._release()
                continue
            except Exception as e:  # noqa: BLE001  (a bug or a disk problem: record it, keep the run going)
                self._fail(job, server, f"{type(e).__name__}: {e}")
                self._release()
                continue
            dt = time.time() - t0
            self.event("done", key=job.key, id=job.record.get("id"), prompt=job.record["prompt"], slug=job.slug,
                       method=job.method, seed=job.seed, files=files, server=server, prompt_id=pid,
                       graph_sha=job.sha, seconds=round(dt, 3))
            with self.cv:
                self.n_done += 1
                n = self.n_done + self.n_err
            self._release()
            el = time.time() - self.t0
            eta = el / n * (self.total - n) if n else 0
            self.say(f"[{n:>{len(str(self.total))}}/{self.total}] {files[0]}  ({dt:.1f}s on {server}; "
                     f"eta {eta:.0f}s)")

    def _fail(self, job: Job, server: str, msg: str):
        with self.cv:
            self.n_err += 1
            self.errors[job.key] = msg
        self.event("error", key=job.key, server=server, message=msg[:2000])
        self.say(f"error {job.key} on {server}: {msg[:300]}")

    def _save(self, job: Job, images: list[tuple[dict, bytes]]) -> list[str]:
        folder = os.path.join(self.out_dir, job.slug)
        os.makedirs(folder, exist_ok=True)
        rels = []
        for k, (info, data) in enumerate(images):
            ext = os.path.splitext(info.get("filename", ""))[1].lower() or ".png"
            rel = f"{job.files_prefix()}{'' if k == 0 else f'_{k}'}{ext}"
            path = os.path.join(self.out_dir, rel)
            tmp = path + ".part"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            rels.append(rel)
        return rels


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m faithful_eval.runner", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workflow", required=True, help="API-format workflow JSON (Workflow > Export (API))")
    p.add_argument("--prompts", required=True,
                   help="prompt records (.json/.jsonl/.csv/.txt), or a set name: dvmp[:N[:SEED]], attend_and_excite, visor[:N[:SEED]]")
    p.add_argument("--seeds", default="0", help="image seeds: '0,1,2' or '0-63' (default 0)")
    p.add_argument("--methods", default=None, help="methods JSON (see above); default: one method 'default', no overrides")
    p.add_argument("--servers", default="http://127.0.0.1:8188", help="comma-separated ComfyUI base URLs")
    p.add_argument("--out", required=True, help="output folder (images, manifest.jsonl, prompts.json)")
    p.add_argument("--per-server", type=int, default=1, help="jobs in flight per server (default 1)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one job may take (default 1800)")
    p.add_argument("--poll", type=float, default=0.25, help="seconds between history polls (default 0.25)")
    p.add_argument("--max-attempts", type=int, default=3, help="tries per job on live servers (default 3)")
    p.add_argument("--output-node", action="append", default=None,
                   help="only keep images from this node id (repeatable); default: every SaveImage-type output")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--dry-run", action="store_true", help="print the jobs and the first graph, queue nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    a = p.parse_args(argv)

    try:
        workflow = load_workflow(a.workflow)
        records = load_prompt_arg(a.prompts)
        if a.limit:
            records = records[: a.limit]
        methods, bindings, workflows = load_methods(a.methods)
        jobs = make_jobs(workflow, records, parse_seeds(a.seeds), methods, bindings, workflows)
    except (WorkflowError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 64
    if a.dry_run:
        for j in jobs:
            print(f"{j.key}\t{j.sha}")
        print(json.dumps(jobs[0].graph, indent=1) if jobs else "no jobs")
        return 0
    servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    summary = Runner(jobs, servers, a.out, per_server=a.per_server, timeout=a.timeout, poll=a.poll,
                     max_attempts=a.max_attempts, output_nodes=a.output_node, progress=not a.quiet).run()
    if summary["pending"]:
        return 2
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
