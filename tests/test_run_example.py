"""The main job's runner on a fresh clone pointed at an existing ComfyUI (README: run_example.sh --comfyui DIR)."""
import pytest
import os
import shutil
import subprocess
import sys

from tools.host import ROOT, host_dir

# Host-independent (or, for the fresh-clone example run, checked once): run on the first test host only.
pytestmark = pytest.mark.once



def _fresh_clone(dst):
    """This checkout's tracked files alone, as `git clone` leaves them: no .host/, no cached checkpoint."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel))
    return dst


def test_run_example_with_comfyui_on_a_fresh_clone(tmp_path):
    """--comfyui must select the host before anything imports ComfyUI: the generated checkpoint is built with
    the host's classes (before the fix: 'No ComfyUI at <clone>/.host/ComfyUI')."""
    clone = _fresh_clone(str(tmp_path / "clone"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAITHFUL_")}
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "tools.run_example", "--comfyui", host_dir(), "--out", str(out),
                        "--steps", "1", "--random-ckpt"], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "Faithful nodes:" in r.stdout
    assert os.path.getsize(os.path.join(clone, ".host", "cache", "faithful_tiny_sd1.safetensors")) > 10**8
    for name in ("plain.png", "guided.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
