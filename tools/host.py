"""Make the ComfyUI host importable in-process (CPU) and load the Faithful pack as the package ``faithful``."""
from __future__ import annotations

import asyncio
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def host_dir() -> str:
    """The ComfyUI tree: $FAITHFUL_COMFYUI, else the one scripts/setup.sh extracted."""
    d = os.environ.get("FAITHFUL_COMFYUI") or os.path.join(os.environ.get("FAITHFUL_HOST", os.path.join(ROOT, ".host")), "ComfyUI")
    if not os.path.isfile(os.path.join(d, "main.py")):
        raise RuntimeError(f"No ComfyUI at {d}: run scripts/setup.sh, or set FAITHFUL_COMFYUI to your ComfyUI folder")
    return d


def bootstrap_host():
    """Put the host on sys.path and force CPU before comfy.model_management is imported."""
    d = host_dir()
    if d not in sys.path:
        sys.path.insert(0, d)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
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
