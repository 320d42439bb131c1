"""Helpers for the evaluation tests: bare headless ComfyUI servers on loopback, started and stopped by PID."""
from __future__ import annotations

import os
import sys

import pytest

from tools.server import Server, make_base_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable


def host_dir() -> str:
    d = os.environ.get("FAITHFUL_COMFYUI") or os.path.join(ROOT, ".host", "ComfyUI")
    if not os.path.isfile(os.path.join(d, "main.py")):
        pytest.skip(f"no ComfyUI host at {d} (run scripts/setup.sh)")
    return d


def LoopbackServer(base: str, pack: bool = False) -> Server:
    """One ComfyUI process on 127.0.0.1 with its own base directory (empty custom_nodes unless ``pack``)."""
    return Server(make_base_dir(base, pack=pack), comfyui=host_dir(), python=PY, log_path=os.path.join(base, "server.log"))


@pytest.fixture(scope="module")
def loopback_servers(tmp_path_factory):
    """Three bare servers started together: 'a' and 'b' for a run, 'c' (with this pack) for the resume."""
    servers = {}
    try:
        for name in ("a", "b", "c"):
            servers[name] = LoopbackServer(str(tmp_path_factory.mktemp(f"comfy-{name}")), pack=(name == "c")).start(wait=False)
        for s in servers.values():
            s.wait_ready()
        yield servers
    finally:
        for s in servers.values():
            s.stop()
