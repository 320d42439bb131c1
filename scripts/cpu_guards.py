"""Make the pinned CPU torch stack importable where the PyPI wheels' compiled parts need CUDA libraries.

Usage: python scripts/cpu_guards.py torchvision|torchaudio   (idempotent; exits non-zero if the import fails)

- torchvision 0.28: its compiled ops need CUDA libraries ("operator torchvision::nms does not exist"); the
  Python side works once the op registrations that need them are imported only when the ops loaded.
- torchaudio (only the ComfyUI 0.33 host needs it: its comfy/sd.py imports the audio VAE unconditionally): no
  wheel matches torch 2.13, and the newest one's torchaudio/lib/*.so need CUDA libraries. With those moved
  aside into lib-faithful-disabled/ it imports in pure-Python mode, which is all the host needs to start.
"""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

MARKER = "# faithful-setup: op registrations guarded"


def guard_torchvision() -> None:
    p = pathlib.Path(importlib.util.find_spec("torchvision").origin)
    src = p.read_text()
    old = "from torchvision import (\n    _autograd_registrations,\n    _meta_registrations,\n"
    if MARKER in src or old not in src:
        return
    new = "from torchvision import (\n"
    guard = (f"\n{MARKER}\nif extension._has_ops():\n"
             "    from torchvision import _autograd_registrations, _meta_registrations  # noqa: F401\n")
    src = src.replace(old, new, 1)
    end = src.index(")  # usort:skip", src.index(new)) + len(")  # usort:skip")
    p.write_text(src[:end] + guard + src[end:])


def guard_torchaudio() -> None:
    spec = importlib.util.find_spec("torchaudio")
    if spec is None:
        return
    lib = pathlib.Path(spec.origin).parent / "lib"
    aside = lib.parent / "lib-faithful-disabled"
    for so in sorted(lib.glob("*.so")):
        aside.mkdir(exist_ok=True)
        so.replace(aside / so.name)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("torchvision", "torchaudio"):
        print(__doc__, file=sys.stderr)
        return 2
    name = argv[0]
    (guard_torchvision if name == "torchvision" else guard_torchaudio)()
    # Import in a fresh interpreter: this one may have cached a failed import.
    r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True)
    if r.returncode:
        print(f"[setup] {name} still fails to import:\n{r.stderr[-3000:]}", file=sys.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
