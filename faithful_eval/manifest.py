"""The run's record on disk: an append-only manifest, which jobs are finished, and the runner's own partial files.

``out/manifest.jsonl`` holds one JSON event per line (``run``, ``submit``, ``done``, ``requeue``,
``server_down``, ``error``, ``end``); ``out/prompts.json`` the prompt records with their slugs. Standard
library only.
"""
from __future__ import annotations

import collections
import json
import os
import re
import threading

MANIFEST = "manifest.jsonl"
PROMPTS_INDEX = "prompts.json"


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
