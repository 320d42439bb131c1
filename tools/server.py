"""Start a headless ComfyUI server with this pack, queue API-format graphs, and collect their outputs.

Only loopback addresses are used. The server runs from the host tree with its own --base-directory (models,
custom_nodes -> this checkout, input, output, user), an in-memory database, and the CPU. Its HTTP calls go
through ``faithful_eval.client.ComfyClient`` (the batch runner's client), so every failure is a ``ComfyError``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import uuid

from faithful_eval.client import ComfyClient, ComfyError, PromptRejected, ServerDown, cached_nodes, execution_error

from .host import ROOT, host_dir, host_python

__all__ = ["Server", "make_base_dir", "free_port", "ComfyError", "PromptRejected", "execution_error", "cached_nodes"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base_dir(base: str | None = None, checkpoints: dict[str, str] | None = None, pack: bool = True) -> str:
    """A server base directory with custom_nodes/faithful linked to this checkout (unless ``pack`` is False)
    and the given checkpoints (name -> path) linked into models/checkpoints."""
    base = base or tempfile.mkdtemp(prefix="faithful-base-")
    for d in ("custom_nodes", "models/checkpoints", "input", "output", "user/default", "temp"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    link = os.path.join(base, "custom_nodes", "faithful")
    if pack and not os.path.islink(link) and not os.path.exists(link):
        os.symlink(ROOT, link)
    settings = os.path.join(base, "user", "default", "comfy.settings.json")
    if not os.path.exists(settings):
        with open(settings, "w") as f:
            json.dump({"Comfy.TutorialCompleted": True}, f)
    for name, path in (checkpoints or {}).items():
        dst = os.path.join(base, "models", "checkpoints", name)
        if not os.path.exists(dst):
            os.symlink(os.path.abspath(path), dst)
    return base


class Server:
    def __init__(self, base_dir: str, port: int | None = None, comfyui: str | None = None, python: str | None = None,
                 extra_args: list[str] | None = None, log_path: str | None = None):
        self.base_dir = base_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.comfyui = comfyui or host_dir()
        self.python = python or host_python()
        self.extra_args = extra_args or []
        self.log_path = log_path or os.path.join(base_dir, f"server-{self.port}.log")
        self.proc: subprocess.Popen | None = None
        self.client_id = uuid.uuid4().hex

    def start(self, timeout: float = 120, wait: bool = True) -> "Server":
        """Launch the server; with ``wait`` (default) return once it answers, else call wait_ready later
        (to start several servers in parallel)."""
        cmd = [self.python, os.path.join(self.comfyui, "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--disable-auto-launch", "--base-directory", self.base_dir,
               "--database-url", "sqlite:///:memory:"] + self.extra_args
        self._log = open(self.log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, cwd=self.comfyui, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        return self.wait_ready(timeout) if wait else self

    def wait_ready(self, timeout: float = 120) -> "Server":
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; log:\n{self.log()[-4000:]}")
            if self.client.alive(timeout=2):
                return self
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout}s; log:\n{self.log()[-4000:]}")

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def kill(self):
        """Die abruptly (SIGKILL to this server's own PID), as a crashed machine would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- API: the shared client ------------------------------------------------------------------------------
    @property
    def client(self) -> ComfyClient:
        """This server's ComfyClient (made on first use, so it follows ``url`` and ``client_id``)."""
        c = self.__dict__.get("_client")
        if c is None or c.url != self.url or c.client_id != self.client_id:
            c = self._client = ComfyClient(self.url, self.client_id)
        return c

    def _check_running(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerDown(f"ComfyUI died while running the prompt; log:\n{self.log()[-4000:]}")

    def object_info(self) -> dict:
        return self.client.object_info()

    def queue(self, graph: dict) -> str:
        return self.client.submit(graph)

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        """The history entry once the prompt finished, with or without an execution error."""
        return self.client.wait(prompt_id, timeout, poll=0.3, check=self._check_running)

    def run(self, graph: dict, timeout: float = 600) -> dict:
        return self.wait(self.queue(graph), timeout)

    def images(self, entry: dict) -> list[bytes]:
        """Every image of the entry (saved and previews), in node order."""
        return [data for _im, data in self.client.images(entry, prefer_saved=False)]
