"""The one HTTP client for a ComfyUI server: queue an API graph, wait for it, fetch its images.

Used by the batch runner (``faithful_eval.runner``, one client per worker thread) and by the test and
example tools (``tools.server.Server.client``). Every failure it reports is a ``ComfyError``:

* ``ServerDown``: the server cannot be reached, or answered 5xx (the job is not at fault; try elsewhere);
* ``PromptRejected`` (a ``JobFailed``): ``POST /prompt`` answered 4xx, e.g. a graph that fails validation;
  ``status``, ``text`` and ``body`` (parsed JSON or None) hold the answer;
* ``JobFailed``: the job ran and failed, timed out, or its images could not be fetched;
* ``JobLost``: the prompt vanished from both the queue and the history (the server restarted);
* ``ComfyError`` itself: an answer that is not ComfyUI's (not JSON, no ``prompt_id``).

ComfyUI's HTTP API (server.py of the host): ``POST /prompt {"prompt": graph, "client_id"}`` ->
``{"prompt_id"}``; ``GET /history/<id>`` -> ``{id: {"status": {"status_str", "completed", "messages"},
"outputs": {node id: {"images": [{"filename", "subfolder", "type"}]}}}}`` once it ran; ``GET /queue`` ->
``{"queue_running", "queue_pending"}`` (items ``[number, prompt_id, ...]``); ``GET /view`` the file bytes.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Callable

import requests


class ComfyError(Exception):
    """Every error of this client."""


class ServerDown(ComfyError):
    pass


class JobFailed(ComfyError):
    pass


class JobLost(ComfyError):
    pass


class PromptRejected(JobFailed):
    def __init__(self, status: int, text: str):
        self.status, self.text = status, text
        try:
            self.body = json.loads(text)
        except ValueError:
            self.body = None
        if isinstance(self.body, dict):
            err = self.body.get("error")
            msg = (err.get("message", "") if isinstance(err, dict) else str(err or "")) + " " + \
                json.dumps(self.body.get("node_errors", {}))[:1500]
        else:
            msg = text[:1500]
        super().__init__(f"rejected ({status}): {msg.strip()}")


def execution_error(entry: dict) -> dict | None:
    """The ``execution_error`` message of a history entry (node_id, node_type, exception_message ...), or None."""
    for kind, data in entry.get("status", {}).get("messages", []) or []:
        if kind == "execution_error":
            return data
    return None


def failure_message(entry: dict) -> str | None:
    """One line saying why a finished prompt failed, or None when it succeeded."""
    data = execution_error(entry)
    if data is not None:
        return f"{data.get('node_type')} (node {data.get('node_id')}): {data.get('exception_message', '').strip()}"
    if entry.get("status", {}).get("status_str") == "error":
        return "execution failed"
    return None


def cached_nodes(entry: dict) -> list[str]:
    """Node ids the server took from its cache for this prompt."""
    for kind, data in entry.get("status", {}).get("messages", []) or []:
        if kind == "execution_cached":
            return list(data.get("nodes", []))
    return []


def history_images(entry: dict, output_nodes: list[str] | None = None, prefer_saved: bool = True) -> list[dict]:
    """Image records of a history entry, node ids in numeric order (then named ids). With ``prefer_saved``
    only the saved ones (type "output") when there are any, so a PreviewImage beside a SaveImage is skipped."""
    def order(k):
        return (0, int(k), "") if k.isdigit() else (1, 0, k)
    imgs = []
    for nid in sorted(entry.get("outputs", {}), key=order):
        if output_nodes and nid not in output_nodes:
            continue
        imgs.extend(entry["outputs"][nid].get("images", []) or [])
    saved = [im for im in imgs if im.get("type", "output") == "output"]
    return saved if prefer_saved and saved else imgs


def _finished(entry: dict | None) -> bool:
    st = (entry or {}).get("status", {})
    return entry is not None and (st.get("completed") is not None or st.get("status_str") in ("success", "error"))


class ComfyClient:
    """HTTP client of one ComfyUI server at ``url`` (one per thread: a requests.Session is not thread-safe)."""

    def __init__(self, url: str, client_id: str | None = None, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.session = session or requests.Session()

    def _request(self, method: str, path: str, timeout: float = 30, **kw) -> requests.Response:
        try:
            r = self.session.request(method, self.url + path, timeout=timeout, **kw)
        except requests.RequestException as e:
            raise ServerDown(f"{method} {self.url}{path}: {type(e).__name__}: {e}") from None
        if r.status_code >= 500:
            raise ServerDown(f"{method} {self.url}{path} answered {r.status_code}")
        return r

    def _json(self, method: str, path: str, timeout: float = 30, **kw):
        r = self._request(method, path, timeout, **kw)
        try:
            return r.json()
        except ValueError:
            raise ComfyError(f"{method} {self.url}{path} answered {r.status_code} without JSON: {r.text[:300]}") from None

    def alive(self, tries: int = 1, gap: float = 1.0, timeout: float = 5) -> bool:
        """Whether ``/system_stats`` answers, trying ``tries`` times ``gap`` seconds apart."""
        for i in range(tries):
            try:
                if self._request("GET", "/system_stats", timeout).ok:
                    return True
            except ServerDown:
                pass
            if i + 1 < tries:
                time.sleep(gap)
        return False

    def object_info(self) -> dict:
        return self._json("GET", "/object_info", timeout=60)

    def submit(self, graph: dict) -> str:
        """Queue an API graph; returns its prompt id. A graph the server refuses raises PromptRejected."""
        r = self._request("POST", "/prompt", timeout=60, json={"prompt": graph, "client_id": self.client_id})
        if r.status_code != 200:
            raise PromptRejected(r.status_code, r.text)
        try:
            return r.json()["prompt_id"]
        except (ValueError, KeyError, TypeError):
            raise ComfyError(f"POST {self.url}/prompt answered without a prompt_id: {r.text[:300]}") from None

    def history(self, prompt_id: str) -> dict | None:
        return self._json("GET", f"/history/{prompt_id}").get(prompt_id)

    def queued(self) -> set[str]:
        """Prompt ids running or pending on the server."""
        q = self._json("GET", "/queue")
        return {item[1] for item in q.get("queue_running", []) + q.get("queue_pending", [])}

    def cancel(self, prompt_id: str) -> None:
        """Best effort: drop the prompt from the queue and interrupt it if it runs."""
        try:
            self._request("POST", "/queue", timeout=10, json={"delete": [prompt_id]})
            self._request("POST", "/interrupt", timeout=10, json={"prompt_id": prompt_id})
        except ServerDown:
            pass

    def wait(self, prompt_id: str, timeout: float = 600, poll: float = 0.3,
             check: Callable[[], None] | None = None, lost_check: float = 5.0) -> dict:
        """The history entry once the prompt finished (successfully or not: see ``failure_message``).

        Polls every ``poll`` seconds (first poll after ``poll``: nothing finishes instantly, and a fleet of
        runners must not hammer a server); ``check()`` runs between polls and may raise (e.g. the server
        process died). Past ``timeout`` the prompt is cancelled and JobFailed raised; a prompt in neither the
        queue nor the history (looked at every ``lost_check`` seconds) raises JobLost.
        """
        t0 = last_queue_check = time.time()
        while True:
            time.sleep(poll)
            entry = self.history(prompt_id)
            if _finished(entry):
                return entry
            if check is not None:
                check()
            now = time.time()
            if now - t0 > timeout:
                self.cancel(prompt_id)
                raise JobFailed(f"timed out after {timeout:.0f}s (prompt {prompt_id})")
            if now - last_queue_check > lost_check:
                last_queue_check = now
                if prompt_id not in self.queued() and self.history(prompt_id) is None:
                    raise JobLost(f"prompt {prompt_id} vanished from the server's queue")

    def run(self, graph: dict, timeout: float = 600, poll: float = 0.3, check: Callable[[], None] | None = None) -> dict:
        """Submit and wait: the finished history entry."""
        return self.wait(self.submit(graph), timeout, poll, check)

    def view(self, image: dict, timeout: float = 120) -> bytes:
        """The bytes of one image record of a history entry."""
        r = self._request("GET", "/view", timeout, params={"filename": image["filename"],
                                                           "subfolder": image.get("subfolder", ""),
                                                           "type": image.get("type", "output")})
        if r.status_code != 200:
            raise JobFailed(f"/view {image['filename']} answered {r.status_code}")
        return r.content

    def images(self, entry: dict, output_nodes: list[str] | None = None,
               prefer_saved: bool = True) -> list[tuple[dict, bytes]]:
        """(image record, bytes) for the images of a history entry (see ``history_images``)."""
        return [(im, self.view(im)) for im in history_images(entry, output_nodes, prefer_saved)]
