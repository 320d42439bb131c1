"""CPU heap policy for guided sampling on Linux (glibc).

A guided step interleaves a forward with gradients (activations kept for the backward, ~0.9 GiB for SynGen on
an SD1.5 UNet at 512 px), one backward, and the sampler's plain batched forward. glibc's malloc raises its mmap
threshold each time a large mmapped block is freed (up to 32 MiB), after which tensors of those sizes come from
the heap, which only shrinks from its top: the plain forward that follows the backward then cannot reuse the
fragmented free space and the process grows. Measured with tools/benchmark.py (SD1.5, latent 64x64, CPU), the
peak RSS of a SynGen run went from 1.72x the plain sampler's to 1.01x once the threshold stays at glibc's own
starting value (128 KiB), which is what ``pin_mmap_threshold`` does, through glibc's documented ``mallopt``.

It acts once per process, only when guidance runs on a CPU device under glibc; set ``FAITHFUL_KEEP_MALLOC=1``
to leave the allocator alone. CUDA memory is managed by PyTorch's caching allocator and is not concerned.
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("faithful")

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
GLIBC_START_THRESHOLD = 128 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MIN, the value it starts from

_state = {"done": False, "pinned": False}


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # absent under musl: not glibc
        return libc
    except (OSError, AttributeError):
        return None


def pin_mmap_threshold(device) -> bool:
    """Fix glibc's mmap threshold at 128 KiB (no dynamic raising) when ``device`` is the CPU.

    Returns True when the policy is in force (set now or earlier in this process).
    """
    if _state["done"]:
        return _state["pinned"]
    if getattr(device, "type", str(device)) != "cpu":
        return False
    _state["done"] = True
    if os.environ.get("FAITHFUL_KEEP_MALLOC", "").strip() not in ("", "0"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    if libc.mallopt(M_MMAP_THRESHOLD, GLIBC_START_THRESHOLD) != 1:
        return False
    try:
        libc.malloc_trim(0)  # hand back what the earlier, dynamic policy left on the heap
    except AttributeError:
        pass
    _state["pinned"] = True
    log.info("faithful: guidance on CPU: glibc mmap threshold kept at 128 KiB (FAITHFUL_KEEP_MALLOC=1 to leave it)")
    return True
