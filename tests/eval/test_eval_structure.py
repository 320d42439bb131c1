"""faithful_eval's shape: modules of one job under 400 lines, one ComfyUI HTTP client, the old import paths."""
from __future__ import annotations

import ast
import glob
import os

import pytest

from faithful_eval import client as C
from faithful_eval import runner as R
from faithful_eval import scores as S

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = sorted(glob.glob(os.path.join(ROOT, "faithful_eval", "*.py")))


def _imports(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("path", MODULES, ids=os.path.basename)
def test_module_is_small_and_free_of_comfy(path):
    with open(path, encoding="utf-8") as f:
        n = sum(1 for _ in f)
    assert n <= 400, f"{os.path.basename(path)} has {n} lines"
    assert not _imports(path) & {"comfy", "comfy_api", "comfy_extras", "nodes", "folder_paths"}


def test_one_http_client():
    """Only faithful_eval/client.py talks HTTP; the runner and tools/server.py go through it."""
    users = [p for p in MODULES + [os.path.join(ROOT, "tools", "server.py")] if "requests" in _imports(p)]
    assert [os.path.relpath(p, ROOT) for p in users] == [os.path.join("faithful_eval", "client.py")]
    from tools import server as T
    assert T.PromptRejected is C.PromptRejected and T.execution_error is C.execution_error
    for err in (C.ServerDown, C.JobFailed, C.JobLost, C.PromptRejected):
        assert issubclass(err, C.ComfyError)


def test_old_import_paths_still_work():
    from faithful_eval import clip_scores, graph, jobs, manifest, report, syngen_metric, visor
    homes = [graph, jobs, manifest, C, clip_scores, syngen_metric, visor, report]
    for facade in (R, S):
        for name in facade.__all__:
            obj = getattr(facade, name)
            home = [m for m in homes if getattr(m, name, None) is obj]
            assert home or obj.__module__ == facade.__name__, f"{facade.__name__}.{name}"
    assert R.make_jobs is jobs.make_jobs and R.Manifest is manifest.Manifest and S.load_clip is clip_scores.load_clip


def test_client_errors_are_comfy_errors():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    c = C.ComfyClient(dead)
    assert c.alive() is False
    with pytest.raises(C.ServerDown, match="POST .*/prompt: ConnectionError"):
        c.submit({"1": {"class_type": "EmptyImage", "inputs": {}}})
    err = C.PromptRejected(400, '{"error": {"message": "Prompt outputs failed validation"}, '
                                '"node_errors": {"1": {"errors": [{"message": "Required input is missing"}]}}}')
    assert err.status == 400 and err.body["error"]["message"].startswith("Prompt outputs")
    assert str(err).startswith("rejected (400): Prompt outputs failed validation {\"1\"")
    assert str(C.PromptRejected(400, "<html>nope</html>")) == "rejected (400): <html>nope</html>"
    entry = {"status": {"status_str": "error", "messages": [
        ["execution_cached", {"nodes": ["4"]}],
        ["execution_error", {"node_id": "3", "node_type": "KSampler", "exception_message": "bad cfg\n"}]]},
        "outputs": {"10": {"images": [{"filename": "b.png", "type": "output"}]},
                    "9": {"images": [{"filename": "a.png", "type": "temp"}, {"filename": "c.png"}]}}}
    assert C.failure_message(entry) == "KSampler (node 3): bad cfg"
    assert C.cached_nodes(entry) == ["4"]
    assert [i["filename"] for i in C.history_images(entry)] == ["c.png", "b.png"]
    assert [i["filename"] for i in C.history_images(entry, prefer_saved=False)] == ["a.png", "c.png", "b.png"]
    assert [i["filename"] for i in C.history_images(entry, ["10"])] == ["b.png"]
    assert C.failure_message({"status": {"status_str": "success", "messages": []}}) is None
