"""Make the ComfyUI host importable in-process (CPU) and load the Faithful pack as the package ``faithful``."""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The test hosts scripts/setup.sh can build (README "Testing"): the main one, and the extra ones it builds from
# source tarballs on request (scripts/setup-host.sh VER) as .host/ComfyUI-VER with their own .host/venv-VER.
MAIN_HOST_VERSION = "0.3.75"
EXTRA_HOST_VERSIONS = ("0.33.0",)


def host_version() -> str:
    """The host the tests and tools target: $FAITHFUL_HOST_VERSION (one of the versions above), default 0.3.75."""
    v = os.environ.get("FAITHFUL_HOST_VERSION", "").strip() or MAIN_HOST_VERSION
    if v != MAIN_HOST_VERSION and v not in EXTRA_HOST_VERSIONS:
        raise RuntimeError(f"FAITHFUL_HOST_VERSION={v!r} is not a test host: use one of "
                           f"{', '.join((MAIN_HOST_VERSION,) + EXTRA_HOST_VERSIONS)}")
    return v


def _host_root() -> str:
    return os.environ.get("FAITHFUL_HOST", os.path.join(ROOT, ".host"))


def host_dir() -> str:
    """The ComfyUI tree: $FAITHFUL_COMFYUI, else the one scripts/setup.sh made for host_version()."""
    v = host_version()
    d = os.environ.get("FAITHFUL_COMFYUI") or os.path.join(
        _host_root(), "ComfyUI" if v == MAIN_HOST_VERSION else f"ComfyUI-{v}")
    if not os.path.isfile(os.path.join(d, "main.py")):
        hint = "" if v == MAIN_HOST_VERSION else f" --host {v}"
        raise RuntimeError(f"No ComfyUI at {d}: run bash scripts/setup.sh{hint}, or set FAITHFUL_COMFYUI to your "
                           "ComfyUI folder")
    return d


def host_python() -> str:
    """The Python that runs the selected host: $FAITHFUL_PYTHON, else an extra host's own venv, else this one."""
    if os.environ.get("FAITHFUL_PYTHON"):
        return os.environ["FAITHFUL_PYTHON"]
    v = host_version()
    if v != MAIN_HOST_VERSION and not os.environ.get("FAITHFUL_COMFYUI"):
        py = os.path.join(_host_root(), f"venv-{v}", "bin", "python")
        if os.path.exists(py):
            return py
    return sys.executable


def check_interpreter() -> None:
    """Refuse to run an extra host in-process under another host's venv (its imports would fail obscurely)."""
    v = host_version()
    if v == MAIN_HOST_VERSION or os.environ.get("FAITHFUL_PYTHON") or os.environ.get("FAITHFUL_COMFYUI"):
        return
    venv = os.path.join(_host_root(), f"venv-{v}")
    if os.path.isdir(venv) and os.path.realpath(sys.prefix) != os.path.realpath(venv):
        raise RuntimeError(f"FAITHFUL_HOST_VERSION={v} runs in its own venv: use bash scripts/test.sh --host {v}, "
                           f"or {venv}/bin/python -m pytest (this is {sys.executable})")


def tree_version(d: str) -> str | None:
    """The version a ComfyUI tree declares in its comfyui_version.py (None when it has none)."""
    try:
        with open(os.path.join(d, "comfyui_version.py")) as f:
            for line in f:
                if line.startswith("__version__"):
                    return line.split("=", 1)[1].strip().strip("'\"")
    except OSError:
        pass
    return None


def bootstrap_host(cpu: bool = True):
    """Put the host on sys.path and (unless ``cpu`` is False: GPU training) force CPU before
    comfy.model_management is imported."""
    d = host_dir()
    if d not in sys.path:
        sys.path.insert(0, d)
    import comfy.cli_args
    comfy.cli_args.args.cpu = cpu
    import comfy.model_management  # noqa: F401  (now safe)
    return d


def load_pack():
    """Import this checkout as the package ``faithful`` (relative imports as under custom_nodes/)."""
    if "faithful" in sys.modules:
        return sys.modules["faithful"]
    bootstrap_host()
    spec = importlib.util.spec_from_file_location("faithful", os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["faithful"] = mod
    spec.loader.exec_module(mod)
    return mod


def pack_nodes():
    """The node classes the pack registers through its V3 entrypoint."""
    mod = load_pack()
    ext = asyncio.run(mod.comfy_entrypoint())
    return asyncio.run(ext.get_node_list())

# The generated test checkpoint's file name under models/checkpoints (tests and the example runner).
TINY_CKPT_NAME = "faithful_tiny_sd1.safetensors"
