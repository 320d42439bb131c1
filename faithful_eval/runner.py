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
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
import time
import uuid
from typing import Callable

from .client import ComfyClient, ComfyError, JobFailed, JobLost, ServerDown, failure_message  # noqa: F401
# The runner's parts, importable from here as before the split (faithful_eval.runner.make_jobs ...).
from .graph import (TITLE_FIELDS, WorkflowError, build_graph, bypass, check_workflow, graph_sha,  # noqa: F401
                    is_link, load_workflow, record_fields, resolve_nodes, set_input, split_path)
from .jobs import Job, assign_slugs, load_methods, load_prompt_arg, make_jobs, parse_seeds, slugify  # noqa: F401
from .manifest import MANIFEST, PROMPTS_INDEX, Manifest, finished, own_partials  # noqa: F401

__all__ = ["Runner", "run_job", "main", "ComfyClient", "ComfyError", "JobFailed", "JobLost", "ServerDown",
           "TITLE_FIELDS", "WorkflowError", "build_graph", "bypass", "check_workflow", "graph_sha", "is_link",
           "load_workflow", "record_fields", "resolve_nodes", "set_input", "split_path", "Job", "assign_slugs",
           "load_methods", "load_prompt_arg", "make_jobs", "parse_seeds", "slugify", "MANIFEST", "PROMPTS_INDEX",
           "Manifest", "finished", "own_partials"]


def run_job(client: ComfyClient, job: Job, timeout: float, poll: float, on_submit: Callable[[str], None],
            output_nodes=None) -> tuple[str, list[tuple[dict, bytes]]]:
    """Queue one job and wait for it; returns (prompt_id, [(image info, bytes)]). A job that ran and failed
    or saved nothing raises JobFailed; the client's other errors pass through."""
    pid = client.submit(job.graph)
    on_submit(pid)
    entry = client.wait(pid, timeout, poll)
    err = failure_message(entry)
    if err:
        raise JobFailed(err)
    images = client.images(entry, output_nodes)
    if not images:
        raise JobFailed("the workflow finished without any image output (add a SaveImage node)")
    return pid, images


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
        alive = [s for s in self.servers if ComfyClient(s).alive(tries=2, gap=0.5)]
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
        client = ComfyClient(server, self.client_id)
        while True:
            job = self._take(server)
            if job is None:
                return
            job.attempts += 1
            job.tried.add(server)
            t0 = time.time()
            try:
                pid, images = run_job(
                    client, job, self.timeout, self.poll,
                    lambda p: self.event("submit", key=job.key, server=server, prompt_id=p, attempt=job.attempts),
                    self.output_nodes)
                files = self._save(job, images)
            except (ServerDown, JobLost) as e:
                lost = isinstance(e, JobLost)
                down = not lost and not client.alive(tries=3)
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
            except ComfyError as e:  # failed, rejected, or an answer that is not ComfyUI's
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
