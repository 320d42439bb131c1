"""Helpers for the evaluation tests: bare headless ComfyUI servers on loopback, started and stopped by PID."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable


def host_dir() -> str:
    d = os.environ.get("FAITHFUL_COMFYUI") or os.path.join(ROOT, ".host", "ComfyUI")
    if not os.path.isfile(os.path.join(d, "main.py")):
        pytest.skip(f"no ComfyUI host at {d} (run scripts/setup.sh)")
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackServer:
    """One ComfyUI process on 127.0.0.1 with its own base directory (empty custom_nodes unless ``pack``)."""

    def __init__(self, base: str, pack: bool = False):
        self.base = base
        for d in ("custom_nodes", "input", "output", "user/default", "temp"):
            os.makedirs(os.path.join(base, d), exist_ok=True)
        with open(os.path.join(base, "user", "default", "comfy.settings.json"), "w") as f:
            json.dump({"Comfy.TutorialCompleted": True}, f)
        if pack:
            os.symlink(ROOT, os.path.join(base, "custom_nodes", "faithful"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(base, "server.log")

    def start(self):
        hd = host_dir()
        self._log = open(self.log_path, "w")
        cmd = [PY, os.path.join(hd, "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--base-directory", self.base, "--database-url", "sqlite:///:memory:"]
        self.proc = subprocess.Popen(cmd, cwd=hd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return self

    def wait_ready(self, timeout: float = 120):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if requests.get(self.url + "/system_stats", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"ComfyUI on {self.url} did not answer in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def kill(self):
        """Die abruptly (SIGKILL to this server's own PID), as a crashed machine would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None


@pytest.fixture(scope="module")
def loopback_servers(tmp_path_factory):
    """Three bare servers started together: 'a' and 'b' for a run, 'c' (with this pack) for the resume."""
    servers = {}
    try:
        for name in ("a", "b", "c"):
            servers[name] = LoopbackServer(str(tmp_path_factory.mktemp(f"comfy-{name}")), pack=(name == "c")).start()
        for s in servers.values():
            s.wait_ready()
        yield servers
    finally:
        for s in servers.values():
            s.stop()
