"""The CPU heap policy guidance sets (nodes/allocator.py): glibc's mmap threshold stays at 128 KiB, so freed
multi-MiB tensors go back to the system instead of fragmenting the heap; opt-out and non-CPU devices leave the
allocator alone. Each case runs in a fresh interpreter, since the policy is per process."""
import json
import os
import subprocess
import sys

import pytest

# Host-independent: run on the first test host only.
pytestmark = pytest.mark.once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = r"""
import importlib.util, json, os, sys, psutil, torch

spec = importlib.util.spec_from_file_location("allocator", os.path.join(sys.argv[1], "nodes", "allocator.py"))
allocator = importlib.util.module_from_spec(spec); spec.loader.exec_module(allocator)
device = sys.argv[2]
first = allocator.pin_mmap_threshold(torch.device(device))
again = allocator.pin_mmap_threshold(torch.device("cpu"))
proc = psutil.Process()
big = torch.ones(8 * 2**20 // 4); del big          # under glibc's default this raises the threshold to 8 MiB
mid = torch.ones(4 * 2**20 // 4)                    # then a 4 MiB tensor would come from the heap...
before = proc.memory_info().rss
del mid                                             # ...and stay resident after it is freed
after = proc.memory_info().rss
print(json.dumps(dict(first=first, again=again, released_mib=(before - after) / 2**20)))
"""


def _probe(device="cpu", **env):
    out = subprocess.run([sys.executable, "-c", PROBE, ROOT, device], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _is_glibc():
    try:
        return sys.platform.startswith("linux") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # confstr name unknown on this platform
        return False


IS_GLIBC = _is_glibc()
glibc = pytest.mark.skipif(not IS_GLIBC, reason="the policy applies to glibc only")


@glibc
def test_pinned_threshold_returns_freed_tensors_to_the_system():
    r = _probe(FAITHFUL_KEEP_MALLOC="")
    assert r["first"] is True and r["again"] is True
    assert r["released_mib"] >= 3.5, r


@glibc
def test_opt_out_keeps_glibc_default_where_freed_tensors_stay_resident():
    r = _probe(FAITHFUL_KEEP_MALLOC="1")
    assert r["first"] is False and r["again"] is False
    assert r["released_mib"] < 1, r  # the behaviour the pinned policy removes


def test_non_cpu_device_leaves_the_allocator_alone():
    r = _probe("meta", FAITHFUL_KEEP_MALLOC="")
    assert r["first"] is False
    # a later CPU run still sets it (or finds no glibc)
    assert r["again"] is IS_GLIBC
